"""Benchmark of the locate-then-edit methods: quality and time of ROME and MEMIT.

Tasks (``python bench/bench_edit.py <task> --help``):

- ``rome-sweep``   ROME rewrites of a few known facts for every (layer, setting) of a grid: CounterFact ES / PS / NS
                   each, and the choice: among the settings with ES ≥ 99 and PS ≥ 90 the one whose NS keeps the
                   largest share of its pre-edit value (ties: fewer seconds). ``--layers locate:RUN_DIR`` sweeps
                   the layer the locate stage proposed in that run and its two neighbours; ``--grid`` is a JSON
                   list of RomeConfig overrides (default `SWEEP_GRID`: C's corpus × how the key is matched).
- ``rome``         ROME rewrites of N facts the model knows, one edit each, restored between edits:
                   CounterFact ES / PS / NS (mean of per-fact scores, as the reference) and seconds per edit;
                   ``--config`` takes settings as JSON RomeConfig overrides, ``--run-config`` the layer and params
                   of a run config's ROME edit (``configs/smollm2-rome.yaml`` holds the sweep's choice), ``--facts``
                   another fact file (the untuned one: ``obliviate/data/smollm2_facts_untuned.jsonl``; the fresh
                   one: ``obliviate/data/smollm2_facts_fresh.jsonl``).
                   ``--model gemma-3-270m`` runs the same on Gemma-3-270M and its own known-fact set.
                   ``--model world`` runs the same on the fact world (a quick smoke check with ``--n-facts 3``).
- ``rome-reach``   How far ROME's u reaches past the edited subject, before any v* is optimised (seconds, not
                   minutes): per neighbour prompt the largest share (k·u)/(k*·u) of the edit any of its keys takes,
                   per paraphrase the share at its subject; for each setting of ``--grid`` (default `REACH_GRID`:
                   how many nearest vocabulary words' keys join C, `RomeConfig.neighbour_keys`) over the layer and
                   settings of ``--run-config`` (default ``configs/smollm2-rome.yaml``), and the choice
                   (`choose_reach`). Chose the shipped config's neighbour_keys on the shipped facts.
- ``rome-reference`` The speed comparison: each of N known SmolLM2 facts rewritten by the workbench's ROME and by
                   the reference's loop (`bench/rome_reference.py`, kmeng01/rome's compute_u / compute_v re-expressed
                   on the HF model), alternately in one process, with the same templates, answer tokens and C:
                   seconds per edit of each, their ratio, and both edits' CounterFact figures. ``--plateau-tol``
                   lets ours stop once its goal is met and a step barely lowers its loss (the reference runs its
                   own rule); ``--compute-dtype bfloat16`` runs ours in bfloat16 and, for the like-for-like ratio,
                   in float32 too (``ours_float32``), all three alternately on each fact; ``--neighbour-keys``
                   keeps that many nearest vocabulary words' keys in ours (the shipped config's 64).
- ``memit-world``  MEMIT erase of the whole forget split of the `world` model in one batch: forget / retain recall
                   before and after (and the `world-retain` oracle's recall of the forget split), held-out
                   perplexity change, and seconds for the batch.
- ``methods-world`` Registered edit methods (default: task_vector, ssd, salun, counterexample_ft, dpo, idkdpo)
                   on the `world` forget split at their default configurations, through the registry as the edit
                   stage runs them (retain = the retain split): forget / retain recall after each edit, and its
                   seconds as a ratio to MEMIT's (layers --first..--last) in the same run and process.
                   ``--lora-model`` / ``--sisa-model`` add lora_removal and sisa, each on the base it needs.
- ``sisa-world``   A SISA ensemble (``--sisa-model``) against `world`, one model trained on all the data: forget /
                   retain recall and held-out perplexity of each, the ensemble's training time, and each
                   constituent's retain recall on its own shard's subjects and on the others'.

Every CounterFact figure is printed and written beside its pre-edit value (``counterfact_base`` → ``counterfact``,
as the edit stage records them): before any edit a figure is seldom at its ideal (3 world facts: PS 7, not 0),
so only the change is what the edit did. NS / NM count the neighbours that share the fact's true answer (CounterFact's);
SmolLM2's neighbours are other subjects of the relation, scored against their own answers and reported apart as NS / NM
same-relation (`obliviate.metrics.neighbours`).

The key statistics (C) are timed on their own (``covariance_s``; ``covariance_cached`` says whether the cache
already held them), separately from the edits. Results are written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from statistics import mean, median

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edit.baselines import edited_handle  # noqa: E402
from edit.context import activations_at_subject, fill  # noqa: E402
from edit.covariance import CovarianceConfig, cache_path, second_moment, second_moments  # noqa: E402
from edit.deltas import apply_deltas  # noqa: E402
from edit.memit import MemitConfig, memit_edit, memit_templates  # noqa: E402
from edit.result import EditRequest, run_method  # noqa: E402
from edit.rome import RomeConfig, key_direction, rome_edit, rome_templates  # noqa: E402
from edit.sites import edit_site  # noqa: E402
from edit.word_keys import word_keys  # noqa: E402
from locate.stage import proposed_layers  # noqa: E402
from obliviate.config import from_dict  # noqa: E402
from obliviate.metrics import SAME_RELATION, counterfact_scores, perplexity, recall, top1_correct  # noqa: E402
from obliviate.models import load  # noqa: E402
from obliviate.registry import EDITS  # noqa: E402
from obliviate.results import RunDir, atomic_write_json, to_jsonable  # noqa: E402
from obliviate.targets import MODEL_FACTS, resolve_facts  # noqa: E402


FACT_SOURCES = {**MODEL_FACTS, "world": "world"}
"""The fact set each benched model is asked about."""

# the figures of obliviate.metrics.CounterFactScores (all in %), with the names they are printed under
FIGURES = {"es": "ES", "ps": "PS", "ns": "NS", "ns_same_relation": "NS same-rel", "s": "S", "em": "EM", "pm": "PM",
           "nm": "NM", "nm_same_relation": "NM same-rel"}


def known_facts(handle, source: str, n: int, seed: int) -> list:
    """`n` facts of `source` (seeded sample) whose bare prompt the model completes with the true answer."""
    facts = resolve_facts(source)
    correct = top1_correct(handle, [f.text for f in facts], [f.target_true for f in facts])
    known = [f for f, ok in zip(facts, correct.tolist()) if ok]
    random.Random(seed).shuffle(known)
    return known[:n]


def counterfact_figures(handle, fact) -> dict[str, float]:
    """The CounterFact figures of one fact (NaN for a neighbour kind the fact has none of)."""
    scores = counterfact_scores(handle, [fact])
    return {name: getattr(scores, name) for name in FIGURES}


def before_after(base: dict[str, float], edited: dict[str, float]) -> str:
    """Every figure as 'pre-edit→edited', leaving out a neighbour kind the facts have none of (NaN on both)."""
    shown = [k for k in FIGURES if base[k] == base[k] or edited[k] == edited[k]]
    return " ".join(f"{FIGURES[k]} {base[k]:.0f}→{edited[k]:.0f}" for k in shown)


def timed_covariance(handle, layers: list[int], cfg: CovarianceConfig) -> dict:
    cached = all(cache_path(handle, layer, cfg).is_file() for layer in layers)
    start = time.perf_counter()
    second_moments(handle, layers, cfg, show_progress=True)
    return {"covariance_s": time.perf_counter() - start, "covariance_cached": cached, "layers": layers,
            "n_tokens": cfg.n_tokens, "corpus": cfg.corpus}


def rome_run(handle, facts: list, layer: int, cfg: RomeConfig, templates, base_scores: dict[int, dict]) -> dict:
    """One ROME rewrite per fact at `layer`; `base_scores` holds each fact's pre-edit figures by case_id."""
    rows = []
    for i, fact in enumerate(facts):
        result = rome_edit(handle, fact, layer, cfg, goal="rewrite", templates=templates)
        sink = result.metrics.get("sink_prompts", [])  # the fact's prompts its edit cannot reach (edit/sink.py)
        with apply_deltas(handle, result.deltas):
            scores = counterfact_figures(handle, fact)
            top_new = bool(top1_correct(handle, [fact.text], [fact.target_new])[0])
        base = base_scores[fact.case_id]
        rows.append({"case_id": fact.case_id, "subject": fact.subject, "target_new": fact.target_new,
                     "counterfact": scores, "counterfact_base": base, "top1_new": top_new,
                     "edit_s": result.timings["total_s"], "optimise_s": result.timings["optimise_s"],
                     "steps": result.metrics["steps"], "final_loss": result.metrics["final_loss"],
                     "kept_words": result.metrics.get("kept_words", [])[:8], "sink_prompts": sink,
                     "at_sink": fact.text in sink})
        print(f"[{i + 1}/{len(facts)}] L{layer} {fact.text!r} -> {fact.target_new!r}: {before_after(base, scores)} "
              f"top1 {top_new} ({result.timings['total_s']:.1f}s)", flush=True)
    return {"layer": layer, "n_facts": len(rows), "summary": summarise(rows), "facts": rows}


def _nanmean(values) -> float:
    """Mean of the finite values (a fact without a neighbour kind has NaN there), NaN if none."""
    finite = [float(v) for v in values if v == v]
    return float(mean(finite)) if finite else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Means over the facts (CounterFact averages per-fact scores): each figure after the edit and before it."""
    summary = {name: _nanmean(r["counterfact"][name] for r in rows) for name in FIGURES}
    summary["base"] = {name: _nanmean(r["counterfact_base"][name] for r in rows) for name in FIGURES}
    summary.update({k: _nanmean(r[k] for r in rows) for k in ("edit_s", "optimise_s", "steps")})
    summary["top1_new"] = float(mean(r["top1_new"] for r in rows)) * 100
    # ES over the facts whose own prompt is not a sink (edit/sink.py), beside the headline ES over all of them
    off_sink = [r for r in rows if not r.get("at_sink")]
    summary["at_sink"] = len(rows) - len(off_sink)
    summary["es_off_sink"] = _nanmean(r["counterfact"]["es"] for r in off_sink)
    return summary


SWEEP_GRID = [
    {},  # the reference's settings: C from docstrings, u = C⁻¹k* for the averaged key
    {"covariance": {"corpus": "stdlib-docstrings+place-mentions"}},
    {"covariance": {"corpus": "stdlib-docstrings+place-mentions"}, "every_template_key": True},
]
"""`rome-sweep`'s default settings: the corpus C is estimated from × whether every template's key gets δ."""


def rome_config(overrides: dict, n_tokens: int, seed: int) -> RomeConfig:
    """RomeConfig from JSON overrides (validated like YAML edit params), C's sample size and seed from the CLI."""
    overrides = json.loads(json.dumps(overrides))  # a deep copy: the grid's dicts stay as written
    overrides.setdefault("covariance", {}).setdefault("n_tokens", n_tokens)
    overrides.setdefault("seed", seed)
    return from_dict(RomeConfig, overrides, where="config")


def run_config_rome(path: Path) -> tuple[str, dict]:
    """(layers as the CLI spells them, params) of the first ROME edit in a YAML run config."""
    from obliviate.config import RunConfig
    from obliviate.config.loader import load_yaml

    edits = [e for e in load_yaml(RunConfig, path).edits if e.method == "rome"]
    if not edits or not edits[0].layers:
        raise SystemExit(f"--run-config {path}: no ROME edit with its layers given in that config.")
    return ",".join(map(str, edits[0].layers)), dict(edits[0].params)


def sweep_layers(spec: str, n_layers: int) -> list[int]:
    """'4,5,6' → those layers; 'locate:RUN_DIR' → the layer that run's locate stage proposed and its neighbours."""
    if not spec.startswith("locate:"):
        return [int(x) for x in spec.split(",")]
    proposed = proposed_layers(RunDir(Path(spec.removeprefix("locate:"))))
    if not proposed:
        raise SystemExit(f"--layers {spec}: that folder has no finished locate stage; run `obliviate locate` first.")
    return sorted({layer for p in proposed for layer in (p - 1, p, p + 1) if 0 <= layer < n_layers})


def choose(rows: list[dict]) -> dict | None:
    """The sweep's pick: ES ≥ 99 and PS ≥ 90, then the largest NS share of its pre-edit value, then the fastest."""
    def ns_share(summary: dict) -> float:
        return summary["ns"] / summary["base"]["ns"] if summary["base"]["ns"] else float("nan")

    able = [r for r in rows if r["summary"]["es"] >= 99 and r["summary"]["ps"] >= 90]
    able = [r for r in able if ns_share(r["summary"]) == ns_share(r["summary"])] or able
    return max(able, key=lambda r: (ns_share(r["summary"]), -r["summary"]["edit_s"]), default=None)


def cmd_rome(args) -> dict:
    handle = load(args.model)
    facts = known_facts(handle, args.facts or FACT_SOURCES[args.model], args.n_facts, args.seed)
    sweep = args.task == "rome-sweep"
    if not sweep and args.run_config:
        args.layers, params = run_config_rome(args.run_config)
        args.config = json.dumps(params)
    layers = sweep_layers(args.layers, handle.n_layers)
    grid = json.loads(args.grid) if sweep else [json.loads(args.config)]
    configs = [rome_config(overrides, args.n_tokens, args.seed) for overrides in grid]
    out = {"task": args.task, "model": args.model, "facts": args.facts or FACT_SOURCES[args.model],
           "threads": torch.get_num_threads(), "grid": grid, "runs": []}
    out["covariance"] = [timed_covariance(handle, layers, cfg.covariance) for cfg in configs]
    if any(cfg.neighbour_keys for cfg in configs):  # built once per layer and cached, like C: not an edit's time
        start = time.perf_counter()
        for layer in layers:
            word_keys(handle, layer)
        out["word_keys_s"] = time.perf_counter() - start
    start = time.perf_counter()
    templates = rome_templates(handle, configs[0])  # every setting shares the seed and context lengths
    out["templates_s"] = time.perf_counter() - start
    base_scores = {fact.case_id: counterfact_figures(handle, fact) for fact in facts}  # the same at every layer
    for layer in layers:
        for overrides, cfg in zip(grid, configs):
            run = rome_run(handle, facts, layer, cfg, templates, base_scores)
            run["settings"] = overrides
            summary = run["summary"]
            sink = (f" ({summary['at_sink']} at a sink, ES {summary['es_off_sink']:.0f} on the others)"
                    if summary["at_sink"] else "")
            print(f"layer {layer} {json.dumps(overrides)}: {before_after(summary['base'], summary)} "
                  f"top1_new {summary['top1_new']:.0f}% {summary['edit_s']:.1f} s/edit{sink}", flush=True)
            out["runs"].append(run)
    if sweep:
        chosen = choose(out["runs"])
        out["chosen"] = {"layer": chosen["layer"], "settings": chosen["settings"]} if chosen else None
        print(f"chosen: {json.dumps(out['chosen'])}", flush=True)
    return out


REACH_GRID = [{"neighbour_keys": m} for m in (0, 16, 64, 256)]
"""`rome-reach`'s default settings over the run config's: how many nearest vocabulary words' keys join C (at
neighbour_weight 1, the kept keys together weighing as much as C's per-token average; pass a grid to vary it)."""
REACHED = 0.3
"""A neighbour prompt counts as reached when some position's key takes this share of the edit or more."""


def neighbour_reach(handle, facts: list, layer: int, cfg: RomeConfig, templates: list[str]) -> dict:
    """How far ROME's u reaches past the edited subject, before any v* is optimised: the edit moves a key k by
    (k·u)/(k*·u) of what it gives the subject. Per neighbour prompt, the largest share over its positions (the
    first left out); per paraphrase, the share at its subject's last token (1 is the edit's own key)."""
    site = edit_site(handle, layer)
    shares: dict[str, list[float]] = {"same_answer": [], "same_relation": [], "paraphrase": []}
    kept: dict[int, list[str]] = {}
    for fact in facts:
        key_side = key_direction(handle, fact, layer, cfg, templates)
        u, scale = key_side.u.double(), float(torch.dot(key_side.k_star, key_side.u))
        kind = "same_relation" if fact.extra.get("neighborhood_kind") == SAME_RELATION else "same_answer"
        for prompt in fact.neighborhood_prompts:
            _, cache = handle.tl.run_with_cache(handle.to_tokens(prompt), names_filter=[site.key_hook],
                                                stop_at_layer=layer + 1)
            shares[kind].append(float((cache[site.key_hook][0, 1:].double() @ u).max()) / scale)
        found = [fill("{}", p, fact.subject) if "{}" in p else (p, p.find(fact.subject) + len(fact.subject))
                 for p in fact.paraphrase_prompts if "{}" in p or fact.subject in p]  # templates or filled texts
        if found:
            acts = activations_at_subject(handle, site.key_hook, [p for p, _ in found], [end for _, end in found])
            shares["paraphrase"] += (acts.double() @ u / scale).tolist()
        kept[fact.case_id] = key_side.kept_words[:8]
    out = {}
    for name, values in shares.items():
        ordered = sorted(values)
        out[name] = {"n": len(ordered), "median": float(median(ordered)) if ordered else float("nan"),
                     "p90": ordered[int(0.9 * len(ordered))] if ordered else float("nan"),
                     "reached": sum(v >= REACHED for v in ordered), "below_half": sum(v < 0.5 for v in ordered)}
    return {"shares": out, "kept_words": kept}


def choose_reach(rows: list[dict]) -> dict:
    """`rome-reach`'s pick: the fewest same-answer neighbour prompts reached, then the fewest same-relation ones,
    then the lowest 90th percentile of the same-answer shares, among settings whose paraphrase keys keep a median
    share ≥ 0.95 (the edit must still reach its own subject in other words)."""
    able = [r for r in rows if r["shares"]["paraphrase"]["median"] >= 0.95] or rows
    return min(able, key=lambda r: (r["shares"]["same_answer"]["reached"], r["shares"]["same_relation"]["reached"],
                                    r["shares"]["same_answer"]["p90"]))


def cmd_rome_reach(args) -> dict:
    handle = load(args.model)
    facts = known_facts(handle, args.facts or FACT_SOURCES[args.model], args.n_facts, args.seed)
    layers, base = run_config_rome(args.run_config)
    layer = int(args.layers or layers.split(",")[0])
    grid = json.loads(args.grid)
    out = {"task": args.task, "model": args.model, "facts": args.facts or FACT_SOURCES[args.model], "layer": layer,
           "n_facts": len(facts), "base": base, "grid": grid, "runs": []}
    for overrides in grid:
        cfg = rome_config({**base, **overrides}, args.n_tokens, args.seed)
        templates = [t for group in rome_templates(handle, cfg) for t in group]
        start = time.perf_counter()
        run = {"settings": overrides, **neighbour_reach(handle, facts, layer, cfg, templates),
               "seconds": time.perf_counter() - start}
        print(f"{json.dumps(overrides)}: " + " | ".join(
            f"{k} median {v['median']:.3f} p90 {v['p90']:.3f} reached {v['reached']}/{v['n']}"
            + (f" below 0.5 {v['below_half']}" if k == "paraphrase" else "")
            for k, v in run["shares"].items()), flush=True)
        out["runs"].append(run)
    out["chosen"] = choose_reach(out["runs"])["settings"]
    print(f"chosen: {json.dumps(out['chosen'])}", flush=True)
    return out


def cmd_rome_reference(args) -> dict:
    from rome_reference import inverse_moment, reference_rome

    handle = load(args.model)
    facts = known_facts(handle, FACT_SOURCES[args.model], args.n_facts, args.seed)
    layer = int(args.layers)
    cov = CovarianceConfig(n_tokens=args.n_tokens)
    out = {"task": args.task, "model": args.model, "threads": torch.get_num_threads(), "layer": layer,
           "covariance": timed_covariance(handle, [layer], cov)}
    cfg = RomeConfig(covariance=cov, seed=args.seed, plateau_tol=args.plateau_tol, compute_dtype=args.compute_dtype,
                     neighbour_keys=args.neighbour_keys)
    cfg.validate()
    if cfg.neighbour_keys:  # built once per layer and cached, like C: not an edit's time
        word_keys(handle, layer)
    out["plateau_tol"] = args.plateau_tol  # ours only: the reference keeps its own stop rule
    out["compute_dtype"] = args.compute_dtype  # ours only: the reference runs the model as loaded (float32)
    out["neighbour_keys"] = args.neighbour_keys  # ours only: the reference's u is C⁻¹k*
    ours_configs = {"ours": cfg}
    if args.compute_dtype != "float32":  # the equal-precision ratio, measured in the same run
        ours_configs["ours_float32"] = replace(cfg, compute_dtype="float32")
    templates = rome_templates(handle, cfg)
    start = time.perf_counter()
    c_inverse = inverse_moment(second_moment(handle, layer, cov), cov.ridge)
    out["reference_inverse_s"] = time.perf_counter() - start  # once per layer, as the reference caches it
    rows = []
    for i, fact in enumerate(facts):
        base = counterfact_figures(handle, fact)
        row = {"case_id": fact.case_id, "counterfact_base": base}
        for who, ours_cfg in ours_configs.items():
            ours = rome_edit(handle, fact, layer, ours_cfg, goal="rewrite", templates=templates)
            with apply_deltas(handle, ours.deltas):
                row[who] = {"edit_s": ours.timings["total_s"], "steps": ours.metrics["steps"],
                            "counterfact": counterfact_figures(handle, fact)}
        theirs = reference_rome(handle, fact, layer, cfg, templates, c_inverse)
        with apply_deltas(handle, {theirs.weight: theirs.delta_w}):
            row["reference"] = {"edit_s": theirs.timings["total_s"], "steps": len(theirs.losses),
                                "timings": theirs.timings, "counterfact": counterfact_figures(handle, fact)}
        rows.append(row)
        print(f"[{i + 1}/{len(facts)}] {fact.text!r} -> {fact.target_new!r}: " + ", ".join(
            f"{who} {row[who]['edit_s']:.1f} s ({row[who]['steps']} steps; "
            f"{before_after(base, row[who]['counterfact'])})" for who in (*ours_configs, "reference")), flush=True)
    summary = {}
    for who in (*ours_configs, "reference"):
        summary[who] = {"edit_s": _nanmean(r[who]["edit_s"] for r in rows),
                        "steps": _nanmean(r[who]["steps"] for r in rows),
                        "s_per_step": _nanmean(r[who]["edit_s"] / r[who]["steps"] for r in rows),
                        **{k: _nanmean(r[who]["counterfact"][k] for r in rows) for k in FIGURES}}
    summary["base"] = {k: _nanmean(r["counterfact_base"][k] for r in rows) for k in FIGURES}
    for who in ours_configs:
        suffix = who.removeprefix("ours")
        summary["speedup" + suffix] = summary["reference"]["edit_s"] / summary[who]["edit_s"]
        summary["speedup_per_step" + suffix] = summary["reference"]["s_per_step"] / summary[who]["s_per_step"]
        print(f"per edit: {who} {summary[who]['edit_s']:.1f} s, reference {summary['reference']['edit_s']:.1f} s — "
              f"{summary['speedup' + suffix]:.2f}x ({summary['speedup_per_step' + suffix]:.2f}x per v* step); "
              f"{who} {before_after(summary['base'], summary[who])}", flush=True)
    print(f"reference {before_after(summary['base'], summary['reference'])}", flush=True)
    out.update(summary=summary, facts=rows)
    return out


def cmd_memit_world(args) -> dict:
    handle = load("world")
    oracle = load("world-retain")
    forget = resolve_facts("world", split="forget")
    retain = resolve_facts("world", split="retain")
    from obliviate.world import ensure_world

    texts = [t for t in (ensure_world() / "filler_heldout.txt").read_text().splitlines() if t.strip()]
    ppl_texts = texts[-args.ppl_texts:]  # the end of the file: C is estimated from its beginning
    layers = list(range(args.first, args.last + 1))
    cov = CovarianceConfig(n_tokens=args.n_tokens)
    out = {"task": args.task, "model": "world", "threads": torch.get_num_threads(), "n_forget": len(forget),
           "n_retain": len(retain), "covariance": timed_covariance(handle, layers, cov)}
    base = {"forget_recall": recall(handle, forget), "retain_recall": recall(handle, retain),
            "oracle_forget_recall": recall(oracle, forget), "oracle_retain_recall": recall(oracle, retain),
            "heldout_ppl": perplexity(handle, ppl_texts)}
    out["base"] = base
    print(json.dumps(base), flush=True)
    out["runs"] = []
    for weight in [None if x == "auto" else float(x) for x in args.mom2_update_weight.split(",")]:
        cfg = MemitConfig(covariance=cov, mom2_update_weight=weight, erase_mode=args.erase_mode,
                          neutral_target=args.neutral_target, seed=args.seed)
        templates = memit_templates(handle, cfg)
        result = memit_edit(handle, forget, layers, cfg, goal="erase", templates=templates, show_progress=True)
        with apply_deltas(handle, result.deltas):
            after = {"forget_recall": recall(handle, forget), "retain_recall": recall(handle, retain),
                     "heldout_ppl": perplexity(handle, ppl_texts)}
        after["retain_drop_pp"] = 100 * (base["retain_recall"] - after["retain_recall"])
        after["forget_minus_oracle_pp"] = 100 * (after["forget_recall"] - base["oracle_forget_recall"])
        after["ppl_change_pct"] = 100 * (after["heldout_ppl"] / base["heldout_ppl"] - 1)
        run = {"layers": layers, "mom2_update_weight": weight, "erase_mode": args.erase_mode, "after": after,
               "timings": result.timings, "metrics": result.metrics}
        print(json.dumps(to_jsonable(run)), flush=True)
        out["runs"].append(run)
    return out


def cmd_methods_world(args) -> dict:
    handle = load("world")
    forget = resolve_facts("world", split="forget", limit=args.n_facts, seed=args.seed)
    retain = resolve_facts("world", split="retain")
    cov = CovarianceConfig(n_tokens=args.n_tokens)
    layers = list(range(args.first, args.last + 1))
    out = {"task": args.task, "model": "world", "threads": torch.get_num_threads(), "n_forget": len(forget),
           "n_retain": len(retain), "covariance": timed_covariance(handle, layers, cov),
           "base": {"forget_recall": recall(handle, forget), "retain_recall": recall(handle, retain)}, "runs": []}
    print(json.dumps(out["base"]), flush=True)
    # (method, model it edits): the two methods that need a special base edit theirs, built beforehand
    plan = [("memit", handle), *[(m, handle) for m in args.methods.split(",") if m and m != "memit"]]
    if args.lora_model:
        plan.append(("lora_removal", load(str(args.lora_model))))
    if args.sisa_model:
        plan.append(("sisa", load(str(args.sisa_model))))
    for name, model in plan:
        if name == "memit":
            cfg = MemitConfig(covariance=cov, seed=args.seed)
        elif name == "sisa":  # the unlearned ensemble goes beside the bench's output, never over the model
            cfg = EDITS.get(name).params({"work_dir": str(Path(args.sisa_work_dir or
                                                              f"{args.sisa_model}.bench-unlearn"))})
        else:
            cfg = EDITS.get(name).params()
        request = EditRequest(targets=forget, retain=retain, layers=layers if name == "memit" else None,
                              seed=args.seed)
        start = time.perf_counter()
        result = run_method(name, model, request, cfg)
        seconds = time.perf_counter() - start
        edited = edited_handle(model, result)
        run = {"method": name, "model": model.name, "edit_s": seconds,
               "forget_recall_base": recall(model, forget) if model is not handle else out["base"]["forget_recall"],
               "forget_recall": recall(edited, forget), "retain_recall": recall(edited, retain),
               "layers": result.layers}
        run["time_vs_memit"] = seconds / out["runs"][0]["edit_s"] if out["runs"] else 1.0
        print(json.dumps(run), flush=True)
        out["runs"].append(run)
    return out


def cmd_sisa_world(args) -> dict:
    """The SISA aggregate against one model trained on all the data (`world`): what sharding costs."""
    from audit.collateral import heldout_texts
    from obliviate.ensemble import constituent_handle
    from obliviate.world.sisa import read_manifest

    manifest = read_manifest(args.sisa_model)
    every = resolve_facts("world", seed=args.seed)
    splits = {name: [f for f in every if f.split == name] for name in ("forget", "retain")}
    texts = heldout_texts(seed=0, limit=args.ppl_texts)
    out = {"task": args.task, "sisa_model": str(args.sisa_model), "threads": torch.get_num_threads(),
           "sisa_config": manifest["config"], "train_s": manifest.get("train_s"), "models": {}}
    models = {"world": load("world"), "sisa": load(str(args.sisa_model))}
    for name, handle in models.items():
        row = {split: recall(handle, facts) for split, facts in splits.items()}
        row["heldout_perplexity"] = perplexity(handle, texts)
        out["models"][name] = row
        print(json.dumps({"model": name, **row}), flush=True)
    # each constituent alone: it saw only its shard's subjects, so its recall there says what the aggregate averages
    shard_of = {name: s for s, slices in enumerate(manifest["plan"]["subjects"]) for names in slices for name in names}
    own, other = [], []
    for s in range(len(models["sisa"].hf.constituents)):
        member = constituent_handle(models["sisa"], s)
        mine = [f for f in splits["retain"] if shard_of.get(f.subject) == s]
        rest = [f for f in splits["retain"] if shard_of.get(f.subject) != s]
        own.append(recall(member, mine))
        other.append(recall(member, rest))
    out["constituent_retain_recall"] = {"own_shard": own, "other_shards": other}
    print(json.dumps(out["constituent_retain_recall"]), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)
    for name in ("rome", "rome-sweep"):
        p = sub.add_parser(name)
        p.add_argument("--layers", default="6", help="comma-separated edit layers, or locate:RUN_DIR (the layer "
                                                     "that run's locate stage proposed and its neighbours)")
        p.add_argument("--n-facts", type=int, default=50 if name == "rome" else 8)
        p.add_argument("--model", default="smollm2-135m", choices=sorted(FACT_SOURCES))
        p.add_argument("--facts", default=None, help="a fact file instead of the model's packaged facts")
        if name == "rome":
            p.add_argument("--config", default="{}", help="RomeConfig overrides as JSON (e.g. the sweep's choice)")
            p.add_argument("--run-config", type=Path, default=None,
                           help="take --layers and --config from this YAML run config's ROME edit")
        else:
            p.add_argument("--grid", default=json.dumps(SWEEP_GRID), help="JSON list of RomeConfig overrides")
    p = sub.add_parser("rome-reach")
    p.add_argument("--run-config", type=Path, default=ROOT / "configs" / "smollm2-rome.yaml",
                   help="the layer and the settings every grid entry overrides: this run config's ROME edit")
    p.add_argument("--layers", default=None, help="the edit layer (default: the run config's)")
    p.add_argument("--n-facts", type=int, default=50)
    p.add_argument("--model", default="smollm2-135m", choices=sorted(FACT_SOURCES))
    p.add_argument("--facts", default=None, help="a fact file instead of the model's packaged facts")
    p.add_argument("--grid", default=json.dumps(REACH_GRID), help="JSON list of RomeConfig overrides")
    p = sub.add_parser("rome-reference")
    p.add_argument("--layers", default="6", help="the edit layer")
    p.add_argument("--n-facts", type=int, default=5)
    p.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m"])
    p.add_argument("--plateau-tol", type=float, default=None,
                   help="RomeConfig.plateau_tol for the workbench's edit (the reference keeps its own stop rule)")
    p.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="RomeConfig.compute_dtype for the workbench's edit (the reference runs the model's float32)")
    p.add_argument("--neighbour-keys", type=int, default=0,
                   help="RomeConfig.neighbour_keys for the workbench's edit (the shipped config keeps 64; the "
                        "reference's u is C⁻¹k*)")
    p = sub.add_parser("memit-world")
    p.add_argument("--first", type=int, default=0, help="first edited block")
    p.add_argument("--last", type=int, default=2, help="last edited block")
    p.add_argument("--mom2-update-weight", default="auto",
                   help="λ values, comma-separated; auto = MemitConfig's d_mlp-scaled default")
    p.add_argument("--erase-mode", default="suppress", choices=["suppress", "neutral"])
    p.add_argument("--neutral-target", default="unknown")
    p.add_argument("--ppl-texts", type=int, default=500)
    p = sub.add_parser("methods-world")
    p.add_argument("--methods", default="task_vector,ssd,salun,counterexample_ft,dpo,idkdpo",
                   help="registered edit methods, comma-separated (MEMIT always runs first: the time unit)")
    p.add_argument("--lora-model", type=Path, default=None,
                   help="also time lora_removal on this adapted model (edit.lora_removal.adapted_world_model)")
    p.add_argument("--sisa-model", type=Path, default=None,
                   help="also time sisa on this SISA ensemble (obliviate.world.sisa.train_sisa; it retrains "
                        "the shards holding the forget subjects: up to the whole ensemble's training time)")
    p.add_argument("--sisa-work-dir", type=Path, default=None,
                   help="where sisa writes the unlearned ensemble (default: <sisa-model>.bench-unlearn; reruns resume)")
    p.add_argument("--n-facts", type=int, default=None, help="forget facts (default: the whole forget split)")
    p.add_argument("--first", type=int, default=0, help="MEMIT's first edited block")
    p.add_argument("--last", type=int, default=2, help="MEMIT's last edited block")
    p = sub.add_parser("sisa-world")
    p.add_argument("--sisa-model", type=Path, required=True, help="a SISA ensemble (obliviate.world.sisa.train_sisa)")
    p.add_argument("--ppl-texts", type=int, default=500, help="held-out lines for the perplexity")
    for p in sub.choices.values():
        p.add_argument("--n-tokens", type=int, default=50_000, help="corpus tokens for C")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    commands = {"memit-world": cmd_memit_world, "methods-world": cmd_methods_world, "sisa-world": cmd_sisa_world,
                "rome-reference": cmd_rome_reference, "rome-reach": cmd_rome_reach}
    result = commands.get(args.task, cmd_rome)(args)
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
