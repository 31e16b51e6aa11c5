"""The edit stage: make each configured edit, save it as an artefact, and measure it right away.

For each entry of `config.edits`, writes ``edit-<label>.json`` (a StageRecord) and ``edit-<label>/artefact/``
(changed tensors + interventions + manifest; obliviate/artefacts.py). The base weights are never written: edits
return tensors, and measurement runs on an in-memory copy (`obliviate.models.edited_copy`).

Measured right after the edit: CounterFact ES / PS / NS and magnitudes on the targets, recall on the targets and
on retained facts, held-out perplexity change. Layers come from the edit config, else from the locate stage's
proposal in the same run folder, else the middle layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from edit.result import EditResult
from obliviate.artefacts import save_artefact
from obliviate.config import EditConfig, RunConfig, from_dict
from obliviate.facts import Fact
from obliviate.metrics import counterfact_scores, perplexity, recall
from obliviate.models import ModelHandle, edited_copy, load
from obliviate.results import RunDir, StageRecord, stage_inputs
from obliviate.targets import resolve_facts

PERPLEXITY_TEXTS = 200


def stage_name(edit: EditConfig) -> str:
    return f"edit-{edit.label}"


# each method's own config dataclass, "module:Class"; read by the methods and by check_params before any work
PARAMS = {
    "rome": "edit.rome:RomeConfig", "memit": "edit.memit:MemitConfig", "steering": "edit.steering:SteeringConfig",
    "pga": "edit.pga:PGAConfig", "leace": "edit.leace:LeaceConfig", "graddiff": "edit.baselines:GradDiffConfig",
    "rmu": "edit.baselines:RMUConfig", "suppress": "edit.suppress:SuppressConfig",
}


def _params(edit: EditConfig) -> Any:
    """The method's own config dataclass from `edit.params` (unknown keys are errors naming them)."""
    import importlib

    module, name = PARAMS[edit.method].split(":")
    return from_dict(getattr(importlib.import_module(module), name), dict(edit.params),
                     where=f"edits[{edit.label}].params")


def check_params(config: RunConfig) -> None:
    """Every edit's params, checked before locate runs: a typo must not cost a whole locate stage first."""
    for edit in config.edits:
        if edit.method in PARAMS:
            _params(edit)


def _rome(handle, targets, retain, edit, layers, seed) -> EditResult:
    """Sequential ROME: one rank-one edit per target, each on top of the previous ones (as users chain them)."""
    from edit.deltas import apply_deltas, changed_tensors
    from edit.rome import rome_edit, rome_templates

    cfg = _params(edit)
    templates = rome_templates(handle, cfg)
    total: dict[str, torch.Tensor] = {}
    losses = []
    start = time.perf_counter()
    for fact in targets:
        with apply_deltas(handle, total):
            result = rome_edit(handle, fact, layers[0], cfg, goal=edit.goal, templates=templates)
        for name, delta in result.deltas.items():
            total[name] = total.get(name, 0) + delta
        losses.append(result.losses[-1][-1] if result.losses and result.losses[-1] else float("nan"))
    return EditResult(method="rome", changed=changed_tensors(handle, total), targets=[f.case_id for f in targets],
                      layers=list(layers[:1]), timings={"edit": time.perf_counter() - start},
                      metrics={"final_losses": losses}, config=asdict(cfg))


def _memit(handle, targets, retain, edit, layers, seed) -> EditResult:
    from edit.deltas import changed_tensors
    from edit.memit import memit_edit

    cfg = _params(edit)
    # the edit's own layers, else MEMIT's params, else locate's proposal (one layer is a valid one-block range)
    chosen = edit.layers or cfg.layers or layers
    result = memit_edit(handle, targets, chosen, cfg, goal=edit.goal)
    if not result.changed:
        result.changed = changed_tensors(handle, result.deltas)
    return result


def _secrets_of(targets: Sequence[Fact], seed: int) -> list[Any]:
    """PGA acts on memorised texts: the world's secrets of the targets' split."""
    from locate.memorisation_probe import load_secrets
    from obliviate.world import ensure_world

    split = targets[0].split if targets else None
    return load_secrets(ensure_world(seed=seed) / "secrets.jsonl", split=split)


def _generic(module: str, function: str) -> Callable:
    def run(handle, targets, retain, edit, layers, seed) -> EditResult:
        import importlib

        mod = importlib.import_module(module)
        cfg = _params(edit)
        kwargs = {"layers": edit.layers} if edit.layers is not None else {}
        return getattr(mod, function)(handle, targets, retain, cfg, **kwargs)

    return run


def _pga(handle, targets, retain, edit, layers, seed) -> EditResult:
    """PGA on the targets' secrets, at the depths locate found the signature unless the config names depths."""
    from edit.pga import pga_edit

    cfg = _params(edit)
    chosen = layers if cfg.depths is None or edit.layers else None
    if cfg.depths is None and not chosen:
        print("edit: pga: the locate stage found no memorisation signature (add memorisation_probe to "
              "locate.methods); projecting at every depth")
    return pga_edit(handle, _secrets_of(targets, seed), retain, cfg, layers=chosen or None)


METHODS: dict[str, Callable[..., EditResult]] = {
    "rome": _rome,
    "memit": _memit,
    "steering": _generic("edit.steering", "steering_edit"),
    "pga": _pga,
    "leace": _generic("edit.leace", "leace_edit"),
    "graddiff": _generic("edit.baselines", "graddiff_edit"),
    "rmu": _generic("edit.baselines", "rmu_edit"),
    "suppress": _generic("edit.suppress", "suppress_edit"),
    "none": lambda handle, targets, retain, edit, layers, seed: EditResult(method="none"),
}


def resolve_layers(edit: EditConfig, run_dir: RunDir, handle: ModelHandle) -> list[int]:
    """The edit's own layers, else what locate proposed: the signature's depths for PGA, the MLP peak otherwise."""
    if edit.layers:
        return list(edit.layers)
    from locate.stage import proposed_layers, signature_depths

    if edit.method == "pga":
        # block L's output is depth L + 1; [] (no probe ran, or no signature) leaves PGA at every depth
        return [d - 1 for d in signature_depths(run_dir) or []]
    return proposed_layers(run_dir) or [handle.n_layers // 2]


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
    """What an edit depends on; layers taken from locate's proposal make it depend on locate's inputs too."""
    return stage_inputs(config, edit=edit, locate=None if edit.layers else run_dir.inputs("locate"))


def run_edit(config: RunConfig, edit: EditConfig, run_dir: RunDir, *, base: ModelHandle | None = None,
             force: bool = False) -> dict[str, Any]:
    stage = stage_name(edit)
    inputs = edit_inputs(config, edit, run_dir)
    if run_dir.should_skip(stage, inputs, force=force):
        return run_dir.read(stage)
    torch.manual_seed(config.seed)
    base = base or load(config.model, device=config.device)
    targets, retain = split_targets(config)
    layers = resolve_layers(edit, run_dir, base)
    start = time.perf_counter()
    result = METHODS[edit.method](base, targets, retain, edit, layers, config.seed)
    wall = time.perf_counter() - start
    artefact = save_artefact(run_dir.artefact_dir(stage) / "artefact", method=edit.method, base_model=config.model,
                             base_model_hash=base.weights_hash, changed=result.changed,
                             interventions=result.interventions, config={"edit": asdict(edit), **result.config},
                             targets=[int(t) if isinstance(t, int) else t for t in result.targets], wall_time_s=wall,
                             extra={"goal": edit.goal, "layers": result.layers or layers})
    edited = edited_copy(base, result.changed, result.interventions, name=f"{config.model}+{edit.label}")
    record = StageRecord(stage=stage, config={"model": config.model, "facts": config.facts, "split": config.split,
                                              "edit": asdict(edit), "layers": layers},
                         seeds={"seed": config.seed}, timings={"edit": wall, **result.timings}, inputs=inputs)
    record.metrics = {"method": edit.method, "goal": edit.goal, **measure(base, edited, targets, retain,
                                                                         heldout_texts(config)),
                      "method_metrics": result.metrics, "n_targets": len(targets), "n_retain": len(retain)}
    record.artefacts = [run_dir.relative(artefact)]
    run_dir.write(record)
    return run_dir.read(stage)


def run(config: RunConfig, run_dir: RunDir, *, force: bool = False) -> list[dict[str, Any]]:
    """Make every configured edit (the base model is loaded once and never modified)."""
    check_params(config)
    base = load(config.model, device=config.device)
    return [run_edit(config, edit, run_dir, base=base, force=force) for edit in config.edits]
