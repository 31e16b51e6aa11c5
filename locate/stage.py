"""The locate stage: run the configured locate methods on the targets and propose the edit layer(s).

Writes ``locate.json`` (one StageRecord) and ``locate/`` (PNG heatmaps, curves). The proposal is ROME's: the layer
of peak MLP indirect effect at the last subject token, averaged over the traced facts. Hase et al. (2023) found that
tracing peaks predict the best edit layer poorly, so the whole MLP layer profile is stored beside it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from obliviate.config import RunConfig
from obliviate.errors import MissingInputError
from obliviate.metrics import top1_correct
from obliviate.models import ModelHandle, load
from obliviate.results import RunDir, StageRecord, stage_inputs, timed
from obliviate.targets import resolve_facts

STAGE = "locate"


def _close(figure) -> None:
    """The plots return their figure (notebooks show it); a stage only keeps the PNG, so free the figure."""
    import matplotlib.pyplot as plt

    plt.close(figure)


def _trace(handle: ModelHandle, facts, all_facts, config: RunConfig, run_dir: RunDir, record: StageRecord,
           per_target: dict[int, dict[str, Any]]) -> Any:
    from locate.causal_trace import trace_facts
    from locate.plots import plot_trace

    cfg = config.locate
    chosen = facts if cfg.max_targets is None else facts[: cfg.max_targets]
    with timed(record.timings, "trace"):
        report = trace_facts(handle, chosen, kinds=cfg.trace_kinds, noise_multiplier=cfg.noise_multiplier,
                             n_noise_samples=cfg.n_noise_samples, window=cfg.window, seed=config.seed,
                             backend=cfg.backend, corruption=cfg.corruption, replacement_pool=all_facts,
                             show_progress=cfg.show_progress)
    out = run_dir.artefact_dir(STAGE)
    for traces in report.traces:
        for kind, result in traces.items():
            case_id = result.case_id
            layer, position = result.peak()
            entry = per_target.setdefault(case_id, {"case_id": case_id})
            entry.setdefault("trace", {})[kind] = {
                "peak_layer": layer, "peak_token": position, "peak_token_str": result.tokens[position],
                "last_subject": result.last_subject, "clean_p": result.high, "corrupted_p": result.low,
                "last_subject_profile": result.layer_profile(),
            }
            path = out / f"trace_{kind}_{case_id}.png"
            _close(plot_trace(result, path))
            record.artefacts.append(run_dir.relative(path))
    record.metrics["trace"] = {kind: report.summary(kind) for kind in cfg.trace_kinds}
    record.metrics["trace_noise_std"] = report.noise_std
    record.metrics["trace_corruption"] = report.corruption
    record.metrics["trace_skipped"] = report.skipped
    return report


def _propose_layers(report: Any, n_layers: int) -> dict[str, Any]:
    """Peak of the mean MLP indirect effect at the last subject token (ROME), with the profile it came from."""
    profiles = [traces["mlp"].layer_profile() - traces["mlp"].low for traces in report.traces if "mlp" in traces]
    if not profiles:
        return {"layers": [n_layers // 2], "basis": "no MLP trace; middle layer"}
    profile = torch.nan_to_num(torch.stack(profiles), nan=0.0).mean(0)
    peak = int(profile.argmax())
    return {"layers": [peak], "basis": "peak mean MLP indirect effect at the last subject token",
            "mlp_last_subject_profile": profile, "n_traced": len(profiles)}


def _atp(handle, traced_facts, config: RunConfig, record: StageRecord, report: Any,
         per_target: dict[int, dict[str, Any]]) -> None:
    """AtP on the traced facts, with its Spearman agreement with the exact trace per kind."""
    from locate.attribution import attribution_patch_fact, spearman_agreement
    facts_by_id = {f.case_id: f for f in traced_facts}
    agreements: dict[str, list[float]] = {}
    for traces in report.traces:
        case_id = next(iter(traces.values())).case_id
        with timed(record.timings, "atp"):
            estimate = attribution_patch_fact(handle, facts_by_id[case_id], noise_std=report.noise_std,
                                              kinds=config.locate.trace_kinds, n_samples=report.n_samples,
                                              window=report.window, seed=report.seed,
                                              replacements=report.replacements.get(case_id))
        rho = spearman_agreement(estimate, traces)
        for kind, value in rho.items():
            agreements.setdefault(kind, []).append(value)
        per_target[case_id]["atp"] = {kind: {"peak_layer": estimate.peak(kind)[0], "peak_token": estimate.peak(kind)[1],
                                             "spearman_vs_trace": rho.get(kind)} for kind in estimate.effects}
    record.metrics["atp_spearman_mean"] = {k: sum(v) / len(v) for k, v in agreements.items() if v}


def _logit_lens(handle, facts, config: RunConfig, run_dir: RunDir, record: StageRecord,
                per_target: dict[int, dict[str, Any]]) -> None:
    from locate.logit_lens import logit_lens_facts
    from locate.plots import plot_logit_lens

    chosen = facts if config.locate.max_targets is None else facts[: config.locate.max_targets]
    with timed(record.timings, "logit_lens"):
        results = logit_lens_facts(handle, chosen, show_progress=config.locate.show_progress)
    for result in results:
        per_target.setdefault(result.case_id, {"case_id": result.case_id})["logit_lens"] = {
            "prob": result.probs, "rank": result.ranks, "first_top1_depth": result.first_top1_depth()}
    if results:
        path = run_dir.artefact_dir(STAGE) / "logit_lens.png"
        _close(plot_logit_lens(results, path))
        record.artefacts.append(run_dir.relative(path))


def _probe(handle, all_facts, config: RunConfig, record: StageRecord) -> None:
    from locate.probes import attribute_probe

    relations = sorted({f.relation_id for f in all_facts})
    curves = {}
    with timed(record.timings, "probe"):
        for relation in relations:
            result = attribute_probe(handle, all_facts, relation, seed=config.seed,
                                     show_progress=config.locate.show_progress)
            curves[relation] = {"accuracy": result.curve.accuracy, "chance": result.curve.chance,
                                "uniform_chance": result.uniform_chance, "best_depth": result.curve.best_depth,
                                "best_accuracy": result.curve.best_accuracy, "n_facts": result.n_facts}
    record.metrics["probe"] = curves


def _memorisation(handle, config: RunConfig, record: StageRecord) -> None:
    from locate.memorisation_probe import MemorisationProbeConfig, load_secrets, memorisation_probe
    from obliviate.world import ensure_world

    if config.facts != "world":
        record.metrics["memorisation_probe"] = {"skipped": "secrets exist for the embedded world only"}
        return
    world_dir = ensure_world(seed=config.seed)
    secrets = load_secrets(world_dir / "secrets.jsonl")
    with timed(record.timings, "memorisation_probe"):
        # the world's own screening thresholds: Pythia's -2 / -3 would drop every key of the decoy-trained world
        result = memorisation_probe(handle, secrets, MemorisationProbeConfig.for_world(world_dir),
                                    show_progress=config.locate.show_progress)
    record.metrics["memorisation_probe"] = result.summary()


def _subject_ablation(handle, facts, all_facts, config: RunConfig, record: StageRecord, proposed: list[int]) -> None:
    """Recall of the known targets with their subjects' MLP writes made never-seen names' (up to the proposed block,
    and in every block), and a probe at the subject where each relation has every subject."""
    import random

    from locate.subject_ablation import ablate_subjects_per_block_set, subject_ablation_probes

    names = config.locate.unknown_names
    if names is None:
        if config.facts != "world":
            record.metrics["subject_ablation"] = {"skipped": "give locate.unknown_names (names the model has never "
                                                             "seen) for a fact set other than the world"}
            return
        from obliviate.world.names import unused_names

        names = unused_names([f.subject for f in all_facts], 150, random.Random(config.seed))
    if not facts:
        record.metrics["subject_ablation"] = {"skipped": "no target is known to the model"}
        return
    result: dict[str, Any] = {"n_facts": len(facts), "n_unknown_names": len(names)}
    with timed(record.timings, "subject_ablation"):
        up_to_proposed = list(range(max(proposed) + 1))
        ablations = ablate_subjects_per_block_set(handle, facts, names, [up_to_proposed, range(handle.n_layers)])
        result["ablations"] = [asdict(ablation) for ablation in ablations]
        try:
            held = {f.subject for f in facts}
            result["probe_blocks"] = up_to_proposed
            result["probe_ablated"], result["probe_as_written"] = subject_ablation_probes(
                handle, all_facts, held, names, [up_to_proposed, []])
        except ValueError as why:  # not every relation has every subject (SmolLM2's fact set)
            result["probe_skipped"] = str(why)
    record.metrics["subject_ablation"] = result


SAE_DIR = "sae"


def _sae(handle, facts, all_facts, config: RunConfig, run_dir: RunDir, record: StageRecord, layers: list[int],
         per_target: dict[int, dict[str, Any]]) -> None:
    """Train a small SAE (sae-lens) at the proposed layer's residual on local text; rank each target's features."""
    from locate.sae_features import SaeTrainConfig, fact_features, train_sae

    hook = config.locate.sae_hook or f"blocks.{layers[0]}.hook_resid_post"
    texts = [f.text + " " + f.target_true for f in all_facts] + _local_corpus(config)
    with timed(record.timings, "sae_train"):
        trained = train_sae(handle, texts, SaeTrainConfig(hook_name=hook, seed=config.seed),
                            output_path=run_dir.artefact_dir(STAGE) / SAE_DIR,
                            show_progress=config.locate.show_progress)
    from obliviate.integrity import seal

    for weights in sorted(trained.path.glob("*.safetensors")):
        seal(weights)  # the audit's sae_restore attack reads it back, checked against this digest
    record.metrics["sae"] = {"hook_name": hook, "quality": getattr(trained, "quality", None)}
    chosen = facts if config.locate.max_targets is None else facts[: config.locate.max_targets]
    with timed(record.timings, "sae_features"):
        for fact in chosen:
            others = [f for f in all_facts if f.relation_id == fact.relation_id and f.subject != fact.subject][:64]
            report = fact_features(handle, trained.sae, fact, others)
            per_target.setdefault(fact.case_id, {"case_id": fact.case_id})["sae_top_features"] = {
                "by_attribution": report.by_attribution, "by_selectivity": report.by_selectivity,
                "overlap": report.overlap}


def _local_corpus(config: RunConfig, limit: int = 2000) -> list[str]:
    from obliviate.world import ensure_world

    lines = (ensure_world(seed=config.seed) / "filler_heldout.txt").read_text().splitlines()
    return [line for line in lines if line.strip()][:limit]


def load_run_sae(run_dir: RunDir) -> Any:
    """The SAE the locate stage trained in this run folder (sae-lens format)."""
    from locate.sae_features import load_sae

    from obliviate.integrity import verify

    path = run_dir.root / STAGE / SAE_DIR
    if not path.exists():
        raise MissingInputError(f"no SAE in {path}; add 'sae' to locate.methods and run `obliviate locate` first.")
    for weights in sorted(path.glob("*.safetensors")):
        verify(weights, rebuild="`obliviate locate --force` on this run's config")
    return load_sae(path)


def run(config: RunConfig, run_dir: RunDir, *, force: bool = False) -> dict[str, Any]:
    """Run the locate stage into `run_dir` (skipped when already finished, unless `force`)."""
    inputs = stage_inputs(config, locate=config.locate)
    if run_dir.should_skip(STAGE, inputs, force=force):
        return run_dir.read(STAGE)
    torch.manual_seed(config.seed)
    record = StageRecord(stage=STAGE, config={"model": config.model, "facts": config.facts, "split": config.split,
                                              "limit": config.limit, "locate": config.locate},
                         seeds={"seed": config.seed}, inputs=inputs)
    with timed(record.timings, "load"):
        # facts first: a bad fact file fails in a second instead of after the model has loaded
        all_facts = resolve_facts(config.facts, seed=config.seed)
        targets = resolve_facts(config.facts, split=config.split, limit=config.limit, seed=config.seed)
        handle = load(config.model, device=config.device, show_progress=config.locate.show_progress)
    known = top1_correct(handle, [f.text for f in targets], [f.target_true for f in targets])
    record.metrics["n_targets"] = len(targets)
    record.metrics["n_known"] = int(known.sum())
    known_facts = [f for f, k in zip(targets, known.tolist()) if k]
    per_target: dict[int, dict[str, Any]] = {f.case_id: {"case_id": f.case_id, "subject": f.subject,
                                                         "known": bool(k)} for f, k in zip(targets, known.tolist())}
    methods = config.locate.methods
    report = _trace(handle, known_facts, all_facts, config, run_dir, record, per_target) if "trace" in methods else None
    proposal = _propose_layers(report, handle.n_layers) if report is not None else \
        {"layers": [handle.n_layers // 2], "basis": "no trace run; middle layer"}
    record.metrics["proposed_edit_layers"] = proposal
    if "atp" in methods and report is not None:
        _atp(handle, known_facts, config, record, report, per_target)
    if "logit_lens" in methods:
        _logit_lens(handle, known_facts, config, run_dir, record, per_target)
    if "probe" in methods:
        _probe(handle, all_facts, config, record)
    if "memorisation_probe" in methods:
        _memorisation(handle, config, record)
    if "subject_ablation" in methods:
        _subject_ablation(handle, known_facts, all_facts, config, record, proposal["layers"])
    if "sae" in methods:
        _sae(handle, known_facts, all_facts, config, run_dir, record, proposal["layers"], per_target)
    record.targets = list(per_target.values())
    run_dir.write(record)
    return run_dir.read(STAGE)


def signature_depths(run_dir: RunDir) -> list[int] | None:
    """The depths where this run's locate stage found the memorisation signature (None: the probe did not run)."""
    if not run_dir.is_done(STAGE):
        return None
    probe = run_dir.read(STAGE)["metrics"].get("memorisation_probe", {})
    return [int(d) for d in probe["signature_depths"]] if "signature_depths" in probe else None


def proposed_layers(run_dir: RunDir) -> list[int] | None:
    """The edit layers the locate stage proposed in this run folder, if it ran."""
    if not run_dir.is_done(STAGE):
        return None
    layers = run_dir.read(STAGE)["metrics"].get("proposed_edit_layers", {}).get("layers")
    return [int(layer) for layer in layers] if layers else None

