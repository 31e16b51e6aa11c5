"""The edit stage: make each configured edit, save it as an artefact, and measure it right away.

For each entry of `config.edits`, writes ``edit-<label>.json`` (a StageRecord) and ``edit-<label>/artefact/``
(changed tensors + interventions + manifest; obliviate/artefacts.py). The base weights are never written: edits
return tensors, and measurement runs on an in-memory copy (`obliviate.models.edited_copy`).

Every method is reached through `obliviate.registry.EDITS` with one `edit.result.EditRequest`; this module lists
no method. Measured right after the edit: CounterFact ES / PS / NS and magnitudes on the targets, recall on the
targets and on retained facts, held-out perplexity change. Layers come from the edit config (honoured or refused
by the method), else the method's own params, else the locate stage's proposal for that method; the record states
the layers the edit really acted on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from edit.result import EditRequest, EditResult, run_method
from edit.search import REACHED, Point
from obliviate.artefacts import save_artefact
from obliviate.config import EditConfig, RunConfig
from obliviate.facts import Fact
from obliviate.metrics import counterfact_scores, perplexity, recall
from obliviate.models import ModelHandle, edited_copy, load
from obliviate.registry import EDITS
from obliviate.results import RunDir, StageRecord, stage_inputs
from obliviate.targets import resolve_facts

PERPLEXITY_TEXTS = 200


def stage_name(edit: EditConfig) -> str:
    return f"edit-{edit.label}"


def _params(edit: EditConfig, where: str | None = None) -> Any:
    """The method's own config dataclass from `edit.params` (unknown keys are errors naming their key path)."""
    return EDITS.get(edit.method).params(edit.params, where=where or f"edits[{edit.label}].params")


def check_params(config: RunConfig) -> None:
    """Every edit's params, checked before any stage runs (the YAML loader checks them too; a config built in code
    may skip it): a typo must not cost a whole locate stage first."""
    for i, edit in enumerate(config.edits):
        _params(edit, f"edits[{i}].params")


def resolve_layers(edit: EditConfig, run_dir: RunDir, handle: ModelHandle) -> list[int]:
    """The edit's own layers, else what locate proposed for the method (`Spec.proposal`): the signature's depths,
    or the MLP peak (else the middle block); [] for a method that takes no proposal."""
    if edit.layers:
        return list(edit.layers)
    from locate.stage import proposed_layers, signature_depths

    proposal = EDITS.get(edit.method).spec.proposal
    if proposal == "signature":
        # block L's output is depth L + 1; [] (no probe ran, or no signature) leaves PGA at every depth
        return [d - 1 for d in signature_depths(run_dir) or []]
    if proposal == "mlp_peak":
        return proposed_layers(run_dir) or [handle.n_layers // 2]
    return []


def edit_request(config: RunConfig, edit: EditConfig, targets: Sequence[Fact], retain: Sequence[Fact],
                 layers: Sequence[int]) -> EditRequest:
    """The one request every method takes: explicit layers are honoured, locate's are a proposal."""
    return EditRequest(targets=list(targets), retain=list(retain), goal=edit.goal,
                       layers=list(edit.layers) if edit.layers else None,
                       proposed=None if edit.layers else list(layers) or None, seed=config.seed)


def split_targets(config: RunConfig) -> tuple[list[Fact], list[Fact]]:
    """Targets (the configured split / limit) and the retained facts (every other fact)."""
    targets = resolve_facts(config.facts, split=config.split, limit=config.limit, seed=config.seed)
    target_ids = {f.case_id for f in targets}
    target_subjects = {f.subject for f in targets}
    everything = resolve_facts(config.facts, seed=config.seed)
    retain = [f for f in everything if f.case_id not in target_ids and f.subject not in target_subjects
              and f.split != "forget"]
    return targets, retain


def heldout_texts(config: RunConfig, limit: int = PERPLEXITY_TEXTS) -> list[str]:
    """Held-out text for perplexity: the world's never-trained filler (also used for SmolLM2: it is local text)."""
    from obliviate.world import ensure_world

    lines = (ensure_world(seed=config.seed) / "filler_heldout.txt").read_text().splitlines()
    return [line for line in lines if line.strip()][:limit]


def measure(base: ModelHandle, edited: ModelHandle, targets: Sequence[Fact], retain: Sequence[Fact],
            texts: Sequence[str]) -> dict[str, Any]:
    """The after-edit figures, each beside its pre-edit value: CounterFact scores, recall, perplexity change."""
    scores = counterfact_scores(edited, targets)
    ppl_base, ppl_edited = perplexity(base, texts), perplexity(edited, texts)
    return {
        # the base model's ES / PS / NS are the floor an edit moves from (NS on same-relation neighbours is not 100)
        "counterfact": scores, "counterfact_base": counterfact_scores(base, targets),
        "target_recall_base": recall(base, targets), "target_recall_edited": recall(edited, targets),
        "retain_recall_base": recall(base, retain), "retain_recall_edited": recall(edited, retain),
        "heldout_perplexity_base": ppl_base, "heldout_perplexity_edited": ppl_edited,
        "heldout_perplexity_change": (ppl_edited - ppl_base) / ppl_base,
    }


def edit_inputs(config: RunConfig, edit: EditConfig, run_dir: RunDir) -> dict[str, Any]:
    """What an edit depends on; layers taken from locate's proposal make it depend on locate's inputs too, and a
    searched operating point on its settings (and the reference model whose recall it is relative to)."""
    extra: dict[str, Any] = {}
    if config.operating_point is not None and edit.search:
        extra["operating_point"] = config.operating_point
        if config.operating_point.parsed()[0]:
            extra["reference"] = config.audit.reference
    # `search` joined EditConfig later: left out at its default, so run folders made before it are not re-run
    edit_fields = {k: v for k, v in asdict(edit).items() if not (k == "search" and v)}
    return stage_inputs(config, edit=edit_fields, locate=None if edit.layers else run_dir.inputs("locate"), **extra)


def oracle_forget_recall(config: RunConfig, targets: Sequence[Fact]) -> float | None:
    """The never-learned reference's recall of the targets (None when the operating point does not need it)."""
    if config.operating_point is None or not config.operating_point.parsed()[0]:
        return None
    return recall(load(config.audit.reference, device=config.device), targets)


def search_operating_point(config: RunConfig, edit: EditConfig, base: ModelHandle, request: EditRequest,
                           cfg: Any, texts: Sequence[str], oracle_recall: float | None
                           ) -> tuple[EditResult, dict[str, Any]]:
    """Turn the method's knob to the weakest setting that reaches the operating point (edit/search.py); returns
    the chosen (or best) point's result and the search record with every point tried."""
    # the trajectory attacks are the audit's (lazily: the edit stage imports no audit module otherwise)
    from audit.attack_result import AttackContext, run_attack
    from edit.search import search_knob

    op = config.operating_point
    entry = EDITS.get(edit.method)
    knob = entry.spec.knob
    target = op.target(oracle_recall)
    retain_base = recall(base, request.retain)
    ppl_base = perplexity(base, texts)
    results: dict[Any, EditResult] = {}
    context = AttackContext(pool_facts=resolve_facts(config.facts, seed=config.seed))

    def evaluate(value: Any) -> Point:
        point_cfg = cfg if value is None else knob.apply(cfg, value)
        result = run_method(edit.method, base, request, point_cfg)
        results[value] = result
        edited = edited_copy(base, result.changed, result.interventions)
        forget_now, retain_now = recall(edited, request.targets), recall(edited, request.retain)
        extra = {f"recovery_{name}": run_attack(name, base, edited, request.targets, context=context)
                 .metrics.get("mean_attacked") for name in op.attacks}
        print(f"edit: {edit.label}: {knob.field if knob else 'config'}={value} → forget recall {forget_now:.3f} "
              f"(target {target:.3f}), retain drop {retain_base - retain_now:.3f}")
        return Point(value, forget_now, retain_now, retain_base - retain_now, perplexity(edited, texts) / ppl_base,
                     extra)

    low, high = (edit.knob_range or [None, None])
    found = search_knob(knob, evaluate, target=target, max_retain_drop=op.max_retain_drop, low=low, high=high,
                        budget=op.max_evaluations)
    if found.status != REACHED:
        print(f"edit: {edit.label} does not reach the operating point ({found.reason}); kept its best point, "
              f"{knob.field if knob else 'config'}={found.chosen.value}")
    record = {**found.to_dict(), "oracle_forget_recall": oracle_recall, "retain_recall_base": retain_base,
              "perplexity_base": ppl_base}
    return results[found.chosen.value], record


def run_edit(config: RunConfig, edit: EditConfig, run_dir: RunDir, *, base: ModelHandle | None = None,
             force: bool = False, oracle_recall: float | None = None) -> dict[str, Any]:
    stage = stage_name(edit)
    inputs = edit_inputs(config, edit, run_dir)
    if run_dir.should_skip(stage, inputs, force=force):
        return run_dir.read(stage)
    torch.manual_seed(config.seed)
    base = base or load(config.model, device=config.device)
    targets, retain = split_targets(config)
    layers = resolve_layers(edit, run_dir, base)
    request = edit_request(config, edit, targets, retain, layers)
    start = time.perf_counter()
    search = None
    if config.operating_point is None or not edit.search:
        result = run_method(edit.method, base, request, _params(edit))
    else:
        if oracle_recall is None:
            oracle_recall = oracle_forget_recall(config, targets)
        result, search = search_operating_point(config, edit, base, request, _params(edit), heldout_texts(config),
                                                oracle_recall)
    wall = time.perf_counter() - start
    artefact = save_artefact(run_dir.artefact_dir(stage) / "artefact", method=edit.method, base_model=config.model,
                             base_model_hash=base.weights_hash, changed=result.changed,
                             interventions=result.interventions, config={"edit": asdict(edit), **result.config},
                             targets=[int(t) if isinstance(t, int) else t for t in result.targets], wall_time_s=wall,
                             extra={"goal": edit.goal, "layers": result.layers})
    edited = edited_copy(base, result.changed, result.interventions, name=f"{config.model}+{edit.label}")
    record = StageRecord(stage=stage, config={"model": config.model, "facts": config.facts, "split": config.split,
                                              "edit": asdict(edit), "layers": result.layers,
                                              "layers_requested": request.layers,
                                              "layers_proposed": request.proposed},
                         seeds={"seed": config.seed}, timings={"edit": wall, **result.timings}, inputs=inputs)
    record.metrics = {"method": edit.method, "goal": edit.goal, **measure(base, edited, targets, retain,
                                                                         heldout_texts(config)),
                      "method_metrics": result.metrics, "n_targets": len(targets), "n_retain": len(retain)}
    if search is not None:
        record.metrics["operating_point"] = search
    record.artefacts = [run_dir.relative(artefact)]
    run_dir.write(record)
    return run_dir.read(stage)


def run(config: RunConfig, run_dir: RunDir, *, force: bool = False) -> list[dict[str, Any]]:
    """Make every configured edit (the base model is loaded once and never modified)."""
    check_params(config)
    base = load(config.model, device=config.device)
    oracle_recall = oracle_forget_recall(config, split_targets(config)[0])  # measured once for every edit
    return [run_edit(config, edit, run_dir, base=base, force=force, oracle_recall=oracle_recall)
            for edit in config.edits]
