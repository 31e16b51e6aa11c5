"""The audit stage: attack each edited model, compare with the never-learned oracle, and give each target a verdict.

For each edit of the run (``edit-<label>/artefact``), writes ``audit-<label>.json``: per target the verdict
(erased / suppressed / intact) with the attack and figure behind it, per attack the recovery on the edited model and
on the oracle, collateral damage (neighbourhood NS, retained recall, held-out perplexity) and the representation
comparison (fresh-probe accuracy and linear CKA per depth, with a PNG); and ``audit-<label>/certificate.json``, the
sha256 of every file it read with its settings and verdicts, which `obliviate verify` checks (audit/certificate.py).

Every attack runs unchanged on the edited model and on the oracle (``audit.reference``, e.g. ``world-retain``),
and on each peer (``audit.peers``, e.g. ``world-retain-2``: another never-taught model, whose distance from the
oracle sets the margins); audit/verdict.py judges the difference. The oracle's and peers' runs do not depend on
the edit, so the stage runs them once and every edit's audit reuses them (audit/reference_runs.py). Without an
oracle (SmolLM2), verdicts fall back to a null of decoy answers on the edited model (every attack run a second
time; the default), or with ``audit.without_reference: absolute`` to the absolute threshold documented there, and
the record says which.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from audit.attack_result import AttackContext, AttackResult, load_alike
from audit.reference_runs import ReferenceRuns
from audit.report import audit_metrics, sampling_note
from audit.verdict import VerdictConfig, judge, recalled_targets
from obliviate.config import EditConfig, RunConfig
from obliviate.errors import MissingInputError
from obliviate.models import ModelHandle, load
from obliviate.registry import ATTACKS
from obliviate.results import RunDir, StageRecord, stage_inputs, timed


def stage_name(edit: EditConfig) -> str:
    return f"audit-{edit.label}"


def attack_config(config: RunConfig, name: str, params: dict[str, Any], where: str = "audit") -> Any:
    """The attack's config from its YAML params; a `seed` it does not set is the run's seed."""
    import dataclasses

    entry = ATTACKS.get(name)
    params = dict(params)
    if "seed" in {f.name for f in dataclasses.fields(entry.config)}:
        params.setdefault("seed", config.seed)
    return entry.params(params, where=f"{where}.params")


def needs_locate(config: RunConfig) -> bool:
    """Whether an attack reads the locate stage's SAE (sae_restore)."""
    return any("sae" in ATTACKS.get(name).needs for name in config.audit.attack_names())


def audit_inputs(config: RunConfig, edit: EditConfig, run_dir: RunDir) -> dict[str, Any]:
    """What an audit depends on: it reads the edit's artefact (and, for sae_restore, locate's SAE)."""
    from edit.stage import stage_name as edit_stage

    return stage_inputs(config, audit=config.audit, edit=run_dir.inputs(edit_stage(edit)),
                        locate=run_dir.inputs("locate") if needs_locate(config) else None)


def edit_operating_point(run_dir: RunDir, edit: EditConfig) -> dict[str, Any] | None:
    """The edit's operating-point search record (None when the edit ran at its configuration).

    Copied into the audit record so that a reader of the audit alone (the report, a notebook) knows whether the
    edit it audited reached the operating point or is only its best point."""
    from edit.stage import stage_name as edit_stage

    stage = edit_stage(edit)
    if not run_dir.is_done(stage):  # an artefact without its record (a crash between the two) is audited as before
        return None
    return run_dir.read(stage).get("metrics", {}).get("operating_point")


def load_peers(config: RunConfig, base: ModelHandle, oracle: ModelHandle | None) -> list[ModelHandle]:
    """The audit's peers (other never-taught models), each checked to share the audited model's tokenizer; none
    without an oracle (they only set margins around its scores)."""
    if oracle is None:
        return []
    return [load_alike(name, base, device=config.device) for name in config.audit.peers]


def null_runs(config: RunConfig, attacks: Sequence[tuple[str, Any]], base: ModelHandle, edited: ModelHandle,
              targets: Sequence, pool: Sequence, context: AttackContext,
              timings: dict[str, float]) -> dict[str, Any] | None:
    """Without an oracle, unless `audit.without_reference` is absolute: every attack (name, config) run again on the
    edited model with each target's answer replaced by a decoy the model does not give (audit/verdict.py
    `decoy_facts`), once per `audit.null_draws` (several draws are read as one `DecoyNull`); None otherwise."""
    from audit.attack_result import run_attack
    from audit.verdict import null_fact_draws, null_of_draws

    if config.audit.without_reference == "absolute":
        return None
    draws = null_fact_draws(targets, pool, "decoy", config.seed, edited, config.audit.null_draws)
    runs = {}
    for name, cfg in attacks:
        with timed(timings, f"null:{name}"):
            per_draw = tuple(run_attack(name, base, edited, decoys, cfg, context) for decoys in draws)
        runs[name] = null_of_draws(name, per_draw)
    return runs


def audit_edit(config: RunConfig, edit: EditConfig, run_dir: RunDir, *, base: ModelHandle,
               oracle: ModelHandle | None, force: bool = False,
               peers: Sequence[ModelHandle] | None = None, references: ReferenceRuns | None = None) -> dict[str, Any]:
    """Audit one edit; `peers` are the loaded `audit.peers` (loaded here when None); `references` holds the
    oracle's and peers' attack runs shared with the stage's other edits (a fresh one when None)."""
    from audit.certificate import write_certificate
    from audit.collateral import CollateralConfig, heldout_texts, measure_collateral, sample_facts
    from audit.representation import compare_representations, plot_representation
    from edit.stage import split_targets
    from edit.stage import stage_name as edit_stage
    from obliviate.ensemble import is_ensemble
    from obliviate.targets import resolve_facts

    stage = stage_name(edit)
    inputs = audit_inputs(config, edit, run_dir)
    if run_dir.should_skip(stage, inputs, force=force):
        return run_dir.read(stage)
    artefact = run_dir.root / edit_stage(edit) / "artefact"
    if not (artefact / "manifest.json").is_file():
        raise MissingInputError(f"audit: no edit artefact at {artefact}; run `obliviate edit` on this config first.")
    torch.manual_seed(config.seed)
    edited = load(config.model, artefact=artefact, device=config.device)
    targets, retain = split_targets(config)
    all_facts = resolve_facts(config.facts, seed=config.seed)
    record = StageRecord(stage=stage, config={"model": config.model, "edit": edit.label, "audit": config.audit,
                                              "reference": config.audit.reference}, seeds={"seed": config.seed},
                         inputs=inputs)
    if peers is None:
        peers = load_peers(config, base, oracle)
    if references is None or references.oracle is not oracle or list(references.peers) != list(peers):
        references = ReferenceRuns(oracle, peers)
    results: list[AttackResult] = []
    peer_results: list[list[AttackResult]] = [[] for _ in peers]
    context = AttackContext(oracle=oracle, pool_facts=all_facts, retain_facts=retain, run_dir=run_dir)
    attacks = [(name, attack_config(config, name, params, where=f"audit.attacks[{i}]"))
               for i, (name, params) in enumerate(config.audit.attack_choices())]
    for name, cfg in attacks:
        # the timing includes the oracle's and peers' runs when this edit was the first to ask for them
        with timed(record.timings, f"attack:{name}"):
            result, peer_runs = references.run(name, base, edited, targets, cfg, context)
        results.append(result)
        for runs, run in zip(peer_results, peer_runs):
            runs.append(run)
    case_ids = [f.case_id for f in targets]
    recalled = recalled_targets(edited, targets)
    null = null_runs(config, attacks, base, edited, targets, all_facts, context, record.timings) if oracle is None \
        else None
    # a target the never-learned model answers too (its answer is the relation's likely one) cannot show what the
    # edit removed: it stays "intact" if the edited model answers it, and the record says the oracle does as well
    oracle_recalled = recalled_targets(oracle, targets) if oracle is not None else {}
    oracle_results = [r.oracle for r in results] if oracle is not None else None
    verdicts = judge(case_ids, recalled, results, oracle_results, null=null,
                     config=VerdictConfig(margin=config.audit.margin), peers=peer_results)
    relearn_check = None
    if oracle is not None and config.audit.relearn_check_steps:
        from audit.relearn_speed import RelearnSpeedConfig, verdict_check

        settings = RelearnSpeedConfig(steps=config.audit.relearn_check_steps, seed=config.seed)
        with timed(record.timings, "relearn_check"):  # the never-taught models' relearning is shared by every edit
            names = [config.audit.reference, *config.audit.peers]
            never_taught = dict(zip(names, references.relearn_speeds(targets, settings)))
            relearn_check = verdict_check(edited, never_taught, targets,
                                          {t.case_id: t.verdict for t in verdicts.targets}, settings)
    sampled_retain = sample_facts(retain, config.audit.max_retain, config.seed)
    texts = heldout_texts(seed=config.seed)
    with timed(record.timings, "collateral"):
        collateral = measure_collateral(base, edited, targets, sampled_retain, texts,
                                        CollateralConfig(max_heldout_texts=config.audit.max_heldout_texts))
    representation = None
    if not is_ensemble(edited):  # an ensemble (SISA) has no single residual stream to compare
        with timed(record.timings, "representation"):
            representation = compare_representations(base, edited, targets, sampled_retain)
        plot = plot_representation(representation, run_dir.artefact_dir(stage) / "representation.png",
                                   title=f"{edit.label}: probe accuracy and CKA by depth")
        record.artefacts.append(run_dir.relative(plot))
    record.metrics = audit_metrics(edit.label, verdicts, results, oracle_results, collateral, representation,
                                   sampled=sampling_note(len(sampled_retain), len(retain),
                                                         collateral.n_heldout_texts, len(texts), seed=config.seed),
                                   operating_point=edit_operating_point(run_dir, edit),
                                   oracle_recalled=oracle_recalled)
    record.metrics["attacks"] = {r.attack: {"score": r.score_name, **r.metrics} for r in results}
    if relearn_check is not None:
        record.metrics["relearn_check"] = relearn_check
    by_case = verdicts.by_case()
    per_attack = {r.attack: {t["case_id"]: t for t in r.target_records()} for r in results}
    record.targets = [{"case_id": f.case_id, "subject": f.subject, "target_true": f.target_true,
                       **by_case[f.case_id].__dict__, "oracle_answers": oracle_recalled.get(f.case_id),
                       "attacks": {name: rows.get(f.case_id) for name, rows in per_attack.items()}}
                      for f in targets]
    # before the record: a finished audit always has its certificate (a crash between the two re-runs the audit)
    certificate = write_certificate(config, edit, run_dir, record.targets, base=base, oracle=oracle, peers=peers)
    record.artefacts.append(run_dir.relative(certificate))
    run_dir.write(record)
    return run_dir.read(stage)


def run(config: RunConfig, run_dir: RunDir, *, force: bool = False) -> list[dict[str, Any]]:
    """Audit every edit of the run against the configured reference."""
    base = load(config.model, device=config.device)
    oracle = load_alike(config.audit.reference, base, device=config.device) if config.audit.reference else None
    peers = load_peers(config, base, oracle)
    references = ReferenceRuns(oracle, peers)  # every edit's audit reuses the never-taught models' runs
    return [audit_edit(config, edit, run_dir, base=base, oracle=oracle, force=force, peers=peers,
                       references=references)
            for edit in config.edits]


def calibrate_command(argv: Sequence[str] = ()) -> int:
    """`obliviate audit --calibrate [--zoo [--constructions a,b] [--attacks x,y]] [--null-draws k]`: the auditor on
    known cases of the world's forget split — three (audit/calibrate.py) or the zoo of constructions
    (audit/zoo.py)."""
    import argparse

    parser = argparse.ArgumentParser(prog="obliviate audit --calibrate",
                                     description="Calibrate the auditor on models whose truth is known.")
    parser.add_argument("--zoo", action="store_true",
                        help="The calibration zoo (audit/zoo.py): weights-level suppressions and perturbed oracles "
                             "and bases besides the three cases; minutes instead of seconds.")
    parser.add_argument("--constructions", default=None,
                        help="With --zoo: comma-separated construction names (default: all).")
    parser.add_argument("--attacks", default=None,
                        help="With --zoo: comma-separated registered attack names (default: the zoo's seven; add "
                             "heldout_relearn, say, to see what it catches alone and together).")
    parser.add_argument("--null-draws", type=int, default=None,
                        help="Draws of decoys for the no-oracle null, read as one (default 2; README).")
    args = parser.parse_args(list(argv))
    start = time.perf_counter()
    if args.zoo:
        from audit.zoo import ZooConfig, calibrate_zoo

        def listed(text: str | None) -> tuple[str, ...] | None:
            return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None

        options = {"attacks": listed(args.attacks)} if args.attacks else {}
        if args.null_draws is not None:
            options["null_draws"] = args.null_draws
        zoo = calibrate_zoo(config=ZooConfig(constructions=listed(args.constructions), show_progress=True, **options))
        print(zoo.summary())
        passed = zoo.passed()
        print(f"zoo calibration {'passed' if passed else 'FAILED'} (≥ 95% per construction with the oracle, ≥ 90% "
              f"without) in {time.perf_counter() - start:.1f} s")
        return 0 if passed else 1
    if args.constructions or args.attacks:
        parser.error(f"{'--constructions' if args.constructions else '--attacks'} needs --zoo")
    from audit.calibrate import CalibrationConfig, calibrate

    draws = {"null_draws": args.null_draws} if args.null_draws is not None else {}
    result = calibrate(config=CalibrationConfig(show_progress=True, **draws))
    print(result.summary())
    print(f"calibration {'passed' if result.passed else 'FAILED'} (≥ 95% per row) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0 if result.passed else 1
