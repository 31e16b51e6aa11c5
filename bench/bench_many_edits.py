"""Many edits: how MEMIT in one batch, sequential MEMIT and sequential AlphaEdit hold up as N world facts are
rewritten (the AlphaEdit paper's question, Fang et al. ICLR 2025, on the fact world).

For each N in ``--n`` (default 10, 100, 1000) the first N of a seeded shuffle of the facts the model knows (top-1;
`world`: both splits of its 1 200 facts; ``--model smollm2-135m``: the 391 packaged facts) are rewritten to their
target_new, at blocks ``--first``..``--last`` (default 0–2 on the world, 3–6 on SmolLM2, as bench_edit.py):

- ``memit``      one `edit.memit.memit_edit` batch of all N facts (a fresh edit for each N);
- ``memit-seq``  MEMIT in batches of ``--batch-size``, each on the model with the earlier batches applied, C read
                 once from the unedited model (as the references chain it);
- ``alphaedit``  the same batches through `edit.alphaedit.NullSpaceEditor`: P fixed from the unedited model's C,
                 the earlier batches' keys accumulated.
- ``alphaedit-kept``  the same, with the keys of the known facts that are neither edited at the largest N nor
                 measured taken out of P's range (``preserve_retain_keys``): a deployer's own list of facts to keep,
                 disjoint from the facts the retain recall is measured on; those about a subject edited at the
                 largest N are left out (`edit.alphaedit.keepable`: they share its key).

With ``--params '{"c_without_edited_subjects": true}'`` AlphaEdit's C is read without the subjects edited at the
largest N (`edit.alphaedit`); ``--measured-out-of-c F`` leaves that share of the measured unedited subjects out of
C as well, and the retain recall is then also split by whether C named the subject (``retain_recall_in_c`` /
``retain_recall_out_of_c``): protection of the knowledge C holds told from protection in general.

The sequential methods run once up to the largest N and are measured whenever the edit count reaches an N (so a
batch is cut short at a checkpoint: with 100 per batch and N = 10, 100, the first batches hold 10 and 90 facts).
The last ``--n-unedited`` facts of the shuffle are never edited at any N: their top-1 recall of target_true is the
"retain recall" (also split: unedited facts of a relation some edited fact has, of other relations, of an edited
subject). With ``--unedited-subjects`` they are instead every fact of whole subjects (the shuffle's last subjects,
until at least ``--n-unedited`` facts), and no fact of those subjects is edited: the MEMIT family writes at the
subject's key, so an unedited fact of an edited subject shares the key its edit moved — on the world (200
subjects x 6 facts) every unedited fact shares a subject with the edits at N = 1,000, and the retain recall measures
only that interference, not the damage to knowledge the edits never touched (AlphaEdit's claim). Measured per
(method, N), beside the unedited model's values: CounterFact ES / PS / NS (%, over the N edited facts;
`obliviate.metrics.counterfact_scores`), retain recall, held-out perplexity (the end of the world's
filler_heldout.txt; C is estimated from its beginning) and the edit's seconds (measurement excluded).

On world v2 the rewrite could not take: that model looked its facts up at the prompt's last token, not at the
subject's last token where the MEMIT family writes, so ES / PS stayed at the floor and only the collateral figures
(NS, retain recall, perplexity) said something. World v3 keeps its facts at the subject, written by block 0 (README,
"Where the world model keeps its facts (world v3)"), and there the edits land in part (README: the many-edits
figures on world v3, measured at this benchmark's defaults). SmolLM2 keeps its facts where these methods write.

With ``--params '{"neighbour_keys": 64}'`` MEMIT (both rows) keeps each fact's 64 nearest vocabulary words' keys
in its preservation term (`MemitConfig.neighbour_keys`, `edit.word_keys`), their banks read once from the unedited
model like C.

Writes JSON (``--out``) and a plot of every figure against N (``--plot``, `audit.edit_scaling`), both atomically;
``obliviate compare`` on the folder holding the JSON puts the plot and a table in the report. Nothing is asserted.

    python bench/bench_many_edits.py --n 10 --batch-size 5 --out many.json --plot many.png   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
for folder in (HERE.parent, HERE):  # the project, and bench_edit beside this file
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_edit import FACT_SOURCES, known_facts, timed_covariance  # noqa: E402
from audit.edit_scaling import MANY_EDITS_TASK, plot_edit_scaling  # noqa: E402
from edit.alphaedit import AlphaEditConfig, NullSpaceEditor, edited_subjects, keepable  # noqa: E402
from edit.covariance import CovarianceConfig, second_moments  # noqa: E402
from edit.deltas import apply_deltas, sequential_edits  # noqa: E402
from edit.memit import MemitConfig, memit_edit, memit_templates  # noqa: E402
from edit.word_keys import word_keys  # noqa: E402
from obliviate.metrics import counterfact_scores, perplexity, recall, top1_correct  # noqa: E402
from obliviate.models import load  # noqa: E402
from obliviate.results import atomic_write_json, to_jsonable  # noqa: E402

METHODS = ("memit", "memit-seq", "alphaedit", "alphaedit-kept")
DEFAULT_LAYERS = {"world": (0, 2), "smollm2-135m": (3, 6)}


def checkpoint_spans(n_max: int, size: int, checkpoints: Sequence[int]) -> list[tuple[int, int]]:
    """[lo, hi) batches of at most `size` facts up to `n_max`, cut at every checkpoint."""
    bounds = sorted(set(range(size, n_max, size)) | {c for c in checkpoints if 0 < c < n_max} | {n_max})
    return list(zip([0, *bounds[:-1]], bounds))


def split_unedited(facts: Sequence, n_unedited: int, whole_subjects: bool) -> tuple[list, list]:
    """(editable, unedited): the last `n_unedited` facts, or every fact of the last subjects of the order until at
    least `n_unedited` (then no editable fact shares a subject with an unedited one)."""
    if not whole_subjects:
        return list(facts[:len(facts) - n_unedited]), list(facts[len(facts) - n_unedited:])
    per_subject = Counter(f.subject for f in facts)
    held: set = set()
    for fact in reversed(facts):
        if sum(per_subject[s] for s in held) >= n_unedited:
            break
        held.add(fact.subject)
    return [f for f in facts if f.subject not in held], [f for f in facts if f.subject in held]


def retain_split(edited: Sequence, unedited: Sequence, correct: Sequence[bool],
                 out_of_c: frozenset[str] | None = None) -> dict:
    """Retain recall over all unedited facts, and split by whether an edited fact has the same relation or the same
    subject (whose key the edit moves): tells interference through a shared relation or subject from broad damage.
    With `out_of_c` (subjects AlphaEdit's C left out) also split by whether C named the fact's subject."""
    relations, subjects = {f.relation_id for f in edited}, {f.subject for f in edited}

    def share(keep) -> tuple[float | None, int]:
        picked = [ok for f, ok in zip(unedited, correct) if keep(f)]
        return (sum(picked) / len(picked) if picked else None), len(picked)

    out = {"retain_recall": share(lambda f: True)[0]}
    for name, keep in (("same_relation", lambda f: f.relation_id in relations),
                       ("other_relations", lambda f: f.relation_id not in relations),
                       ("same_subject", lambda f: f.subject in subjects)):
        out[f"retain_recall_{name}"], out[f"n_retain_{name}"] = share(keep)
    if out_of_c is not None:
        for name, keep in (("in_c", lambda f: f.subject not in out_of_c),
                           ("out_of_c", lambda f: f.subject in out_of_c)):
            out[f"retain_recall_{name}"], out[f"n_retain_{name}"] = share(keep)
    return out


def measure(handle, edited: Sequence, unedited: Sequence, texts: Sequence[str],
            out_of_c: frozenset[str] | None = None) -> dict:
    scores = counterfact_scores(handle, edited)
    correct = top1_correct(handle, [f.text for f in unedited], [f.target_true for f in unedited]).tolist()
    return {**asdict(scores), **retain_split(edited, unedited, correct, out_of_c),
            "heldout_ppl": perplexity(handle, texts)}


def measured_out_of_c(unedited: Sequence, share: float, seed: int) -> list[str]:
    """The seeded `share` of the unedited facts' subjects that C also leaves out (``--measured-out-of-c``)."""
    subjects = sorted({f.subject for f in unedited})
    random.Random(seed).shuffle(subjects)
    return sorted(subjects[:round(share * len(subjects))])


def run_sequential(name: str, handle, facts: Sequence, ns: Sequence[int], size: int,
                   edit_batch: Callable, evaluate: Callable[[int], dict]) -> list[dict]:
    """One sequential run up to max(ns), measured (with the summed deltas applied) whenever the count is an N."""
    spans = checkpoint_spans(max(ns), size, ns)
    rows, edit_s, tick = [], 0.0, time.perf_counter()
    parts = {"optimise_s": 0.0, "solve_s": 0.0}  # z optimisation vs the per-block solves, summed over batches
    edits = sequential_edits(handle, [facts[lo:hi] for lo, hi in spans], edit_batch)
    for i, ((_, hi), (total, result)) in enumerate(zip(spans, edits)):
        edit_s += time.perf_counter() - tick
        parts = {key: value + result.timings[key] for key, value in parts.items()}
        if hi in ns:
            with apply_deltas(handle, total):
                row = {"method": name, "n": hi, "n_batches": i + 1, "edit_s": edit_s, **parts, **evaluate(hi)}
            print(json.dumps(to_jsonable(row)), flush=True)
            rows.append(row)
        tick = time.perf_counter()
    return rows


def configured(params: dict, *configs):
    """`configs` with each of `params` set on those that have the field; a key none has is an error."""
    names = [{f.name for f in fields(c)} for c in configs]
    unknown = sorted(k for k in params if not any(k in n for n in names))
    if unknown:
        raise SystemExit(f"--params: unknown field(s) {unknown}; MEMIT / AlphaEdit config fields are "
                         f"{', '.join(sorted(set().union(*names)))}.")
    return [replace(c, **{k: v for k, v in params.items() if k in n}) for c, n in zip(configs, names)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="10,100,1000", help="numbers of edited facts, comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--batch-size", type=int, default=100, help="facts per sequential batch (the paper's 100)")
    parser.add_argument("--n-unedited", type=int, default=200, help="facts never edited (retain recall)")
    parser.add_argument("--unedited-subjects", action="store_true",
                        help="keep whole subjects unedited (at least --n-unedited facts) instead of the last facts")
    parser.add_argument("--model", default="world", choices=sorted(FACT_SOURCES))
    parser.add_argument("--first", type=int, default=None, help="first edited block (default: per model)")
    parser.add_argument("--last", type=int, default=None, help="last edited block (default: per model)")
    parser.add_argument("--nullspace-threshold", type=float, default=AlphaEditConfig.nullspace_threshold)
    parser.add_argument("--nullspace-energy", type=float, default=None,
                        help="AlphaEdit's scale-free null space: the share of C's energy it may hold (replaces "
                             "--nullspace-threshold), e.g. 0.005")
    parser.add_argument("--l2", type=float, default=AlphaEditConfig.l2, help="AlphaEdit's α")
    parser.add_argument("--measured-out-of-c", type=float, default=0.0,
                        help="with c_without_edited_subjects: the share of the measured unedited subjects also left "
                             "out of AlphaEdit's C (the retain recall is then split by in / out of C)")
    parser.add_argument("--ppl-texts", type=int, default=500)
    parser.add_argument("--n-tokens", type=int, default=50_000, help="corpus tokens for C")
    parser.add_argument("--corpus", default=CovarianceConfig.corpus,
                        help="C's corpus (edit.covariance: a named corpus or a text file)")
    parser.add_argument("--params", type=json.loads, default={},
                        help="JSON of MEMIT / AlphaEdit config fields, each given to the configs that have it, e.g. "
                             '\'{"one_z_per_subject": true, "steps": 60, "clamp_norm_factor": 5}\'')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if args.measured_out_of_c and not args.params.get("c_without_edited_subjects"):
        parser.error("--measured-out-of-c needs --params '{\"c_without_edited_subjects\": true}'")

    handle = load(args.model)
    facts = known_facts(handle, FACT_SOURCES[args.model], None, args.seed)  # seeded shuffle
    facts, unedited = split_unedited(facts, args.n_unedited, args.unedited_subjects)
    editable = len(facts)
    ns = sorted({min(int(x), editable) for x in args.n.split(",")})
    if any(int(x) > editable for x in args.n.split(",")):
        print(f"{args.model}: {len(facts) + len(unedited)} known facts, {len(unedited)} kept unedited: N capped at "
              f"{editable}")
    from obliviate.world import ensure_world

    lines = [t for t in (ensure_world() / "filler_heldout.txt").read_text().splitlines() if t.strip()]
    texts = lines[-args.ppl_texts:]
    first, last = DEFAULT_LAYERS[args.model]
    layers = list(range(first if args.first is None else args.first, (last if args.last is None else args.last) + 1))
    cov = CovarianceConfig(corpus=args.corpus, n_tokens=args.n_tokens)
    memit_cfg, alpha_cfg = configured(args.params, MemitConfig(covariance=cov, seed=args.seed), AlphaEditConfig(
        covariance=cov, seed=args.seed, nullspace_threshold=args.nullspace_threshold,
        nullspace_energy=args.nullspace_energy, l2=args.l2))
    out: dict = {"task": MANY_EDITS_TASK, "model": args.model, "n_known": len(facts) + len(unedited),
                 "params": args.params, "unedited_subjects": args.unedited_subjects,
                 "threads": torch.get_num_threads(), "layers": layers, "ns": ns, "batch_size": args.batch_size,
                 "n_unedited": len(unedited),
                 "covariance": timed_covariance(handle, layers, cov)}
    moments = second_moments(handle, layers, cov)  # of the unedited model, for every MEMIT batch
    banks = ({layer: word_keys(handle, layer) for layer in layers}  # likewise; built once per layer and cached
             if memit_cfg.neighbour_keys else None)
    templates = memit_templates(handle, memit_cfg)
    base_cf = {n: asdict(counterfact_scores(handle, facts[:n])) for n in ns}
    out["base"] = {"retain_recall": recall(handle, unedited), "heldout_ppl": perplexity(handle, texts),
                   "counterfact": base_cf}
    print(json.dumps(to_jsonable({k: v for k, v in out["base"].items() if k != "counterfact"})), flush=True)

    def evaluate(n: int, out_of_c: frozenset[str] | None = None) -> dict:
        return {**measure(handle, facts[:n], unedited, texts, out_of_c), "counterfact_base": base_cf[n]}

    out["runs"] = []
    if "memit" in methods:
        for n in ns:
            start = time.perf_counter()
            result = memit_edit(handle, facts[:n], layers, memit_cfg, goal="rewrite", templates=templates,
                                moments=moments, banks=banks)
            seconds = time.perf_counter() - start
            with apply_deltas(handle, result.deltas):
                row = {"method": "memit", "n": n, "n_batches": 1, "edit_s": seconds,
                       **{key: result.timings[key] for key in ("optimise_s", "solve_s")}, **evaluate(n)}
            print(json.dumps(to_jsonable(row)), flush=True)
            out["runs"].append(row)
    if "memit-seq" in methods:
        out["runs"] += run_sequential(
            "memit-seq", handle, facts, ns, args.batch_size, evaluate=evaluate,
            edit_batch=lambda batch: memit_edit(handle, batch, layers, memit_cfg, goal="rewrite",
                                                templates=templates, moments=moments, banks=banks))
    kept = keepable(facts[max(ns):editable], facts[:max(ns)])  # never edited at any N, never measured
    out_of_c, also_out = None, measured_out_of_c(unedited, args.measured_out_of_c, args.seed)
    if alpha_cfg.c_without_edited_subjects:  # every subject the run edits, all batches, and the chosen measured ones
        out_of_c = frozenset(edited_subjects(facts[:max(ns)])) | frozenset(also_out)
        out["measured_out_of_c"] = also_out
    for name in ("alphaedit", "alphaedit-kept"):
        if name not in methods:
            continue
        editor = NullSpaceEditor(handle, layers, alpha_cfg, templates=templates,
                                 preserved=kept if name == "alphaedit-kept" else (), exclude_subjects=out_of_c or ())
        out[f"{name}_null_space"] = {**editor.summary, "threshold": args.nullspace_threshold,
                                     "energy": args.nullspace_energy, "l2": args.l2}
        print(json.dumps(out[f"{name}_null_space"]), flush=True)
        out["runs"] += run_sequential(name, handle, facts, ns, args.batch_size,
                                      evaluate=lambda n: evaluate(n, out_of_c),
                                      edit_batch=lambda batch, editor=editor: editor(batch, "rewrite"))
    if args.out:
        atomic_write_json(args.out, out)
        print(f"wrote {args.out}")
    if args.plot:
        print(f"wrote {plot_edit_scaling(out, args.plot)}")
    return out


if __name__ == "__main__":
    main()
