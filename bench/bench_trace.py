"""Benchmark: batched causal tracing vs ROME's one-cell-per-forward reference, and AtP vs the exact trace.

Full trace = 3 kinds (hidden state, MLP, attention; window 10) × all layers × all tokens, 10 noise samples, on
SmolLM2-135M (or ``--model gemma-3-270m``) for known facts of the model's packaged fact set
(obliviate/data/smollm2_facts.jsonl, gemma3_facts.jsonl; taken round-robin over relations).

The reference costs one full forward per cell, so it is timed on a random sample of cells of `--ref-facts` facts and
its full-trace time is extrapolated as (mean seconds per cell) × (number of cells) + its clean and corrupted
baseline runs; the output says so. The batched trace is always run in full. Both run on the same thread count;
wall-clock and process CPU times are both reported (the machine is shared, and CPU time is what a stall or a
neighbour cannot inflate).

What limits AtP's agreement: the exact trace is itself an estimate from `--samples` noise draws. For the first
`--retest` facts the exact trace is run again with the next seed (other noise draws) and the Spearman correlation
of the two exact traces is reported beside AtP's (the exact trace's test-retest agreement): no estimator of the
trace can be expected to agree with one draw of it much better than another draw of the trace itself does.

    python bench/bench_trace.py --facts 10 --ref-facts 2 --ref-cells 30 --out bench_trace.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch


def pick_facts(handle, facts, n):
    """The first known facts, round-robin over relations (so the set is not ten capitals)."""
    from locate.causal_trace import known_facts

    known, _ = known_facts(handle, facts)
    by_relation: dict[str, list] = {}
    for fact in known:
        by_relation.setdefault(fact.relation_id, []).append(fact)
    picked, queues = [], list(by_relation.values())
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked, len(known)


def _print_reference(ref_rows, batched_s, batched_cpu, max_diff) -> None:
    """The reference's extrapolated time against the batched trace on the same facts."""
    mean = statistics.mean
    print(f"  batched on the {len(ref_rows)} reference facts: {mean(batched_s):.1f} s / {mean(batched_cpu):.1f} s")
    print(f"  reference : {mean(r['extrapolated_s'] for r in ref_rows):.1f} s wall / "
          f"{mean(r['extrapolated_cpu_s'] for r in ref_rows):.1f} s CPU per fact (EXTRAPOLATED from sampled cells)")
    wall_ratio = mean(r["extrapolated_s"] for r in ref_rows) / mean(batched_s)
    cpu_ratio = mean(r["extrapolated_cpu_s"] for r in ref_rows) / mean(batched_cpu)
    print(f"  speed-up  : {wall_ratio:.1f}× wall, {cpu_ratio:.1f}× CPU (same facts); max |batched − reference| "
          f"over timed cells: {max_diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--facts", type=int, default=10, help="facts traced in full by the batched trace")
    parser.add_argument("--ref-facts", type=int, default=2, help="facts the reference is timed on")
    parser.add_argument("--ref-cells", type=int, default=30, help="random cells per reference fact (0 = all)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--retest", type=int, default=3,
                        help="facts whose exact trace is re-run with the next seed (test-retest agreement)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers (and traces) as JSON here")
    parser.add_argument("--plots", type=Path, default=None, help="write ROME-style heatmaps here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from scipy.stats import spearmanr

    from locate.attribution import attribution_patch_fact, spearman_agreement
    from locate.causal_trace import KINDS, TraceReport, subject_embedding_std, trace_fact, window_layers
    from locate.causal_trace_reference import reference_restored_prob
    from locate.tokens import fact_subject_tokens
    from obliviate.models import load
    from obliviate.results import to_jsonable
    from obliviate.targets import MODEL_FACTS, resolve_facts

    handle = load(args.model)
    all_facts = resolve_facts(MODEL_FACTS[args.model])
    facts, n_known = pick_facts(handle, all_facts, args.facts)
    std = 3.0 * subject_embedding_std(handle, all_facts)
    n_layers = handle.n_layers
    print(f"model {args.model}: {n_known}/{len(all_facts)} facts known (top-1); tracing {len(facts)}; "
          f"noise std {std:.4f} (3 × subject-embedding std over all {len(all_facts)} facts); "
          f"{args.samples} samples; {torch.get_num_threads()} thread(s)")

    # ---- batched exact trace, in full
    report = TraceReport(noise_std=std, noise_multiplier=3.0, n_samples=args.samples, window=10, seed=args.seed,
                         backend="transformer_lens")
    batched_s, batched_cpu = [], []
    for fact in facts:
        start, cpu = time.perf_counter(), time.process_time()
        report.traces.append(trace_fact(handle, fact, noise_std=std, n_samples=args.samples, seed=args.seed,
                                        show_progress=args.progress))
        batched_s.append(time.perf_counter() - start)
        batched_cpu.append(time.process_time() - cpu)
        n_pos = len(report.traces[-1]["mlp"].tokens)
        print(f"  batched  fact {fact.case_id:>3} ({fact.subject!r}, {n_pos} tokens, {3 * n_pos * n_layers} cells): "
              f"{batched_s[-1]:.1f} s wall, {batched_cpu[-1]:.1f} s CPU", flush=True)

    # ---- reference: timed on sampled cells, extrapolated
    rng = random.Random(args.seed)
    ref_rows, max_diff = [], 0.0
    for fact, traces in list(zip(facts, report.traces))[:args.ref_facts]:
        subject = fact_subject_tokens(handle, fact)
        tokens = torch.tensor(subject.token_ids)
        from locate.causal_trace import corruption_noise

        noise = corruption_noise(args.samples, subject.end - subject.start, handle.tl.cfg.d_model, std,
                                 seed=args.seed, case_id=fact.case_id)
        answer = handle.answer_token(fact.target_true)
        cells = [(k, t, layer) for k in KINDS for t in range(len(tokens)) for layer in range(n_layers)]
        sample = cells if args.ref_cells <= 0 else rng.sample(cells, min(args.ref_cells, len(cells)))
        start, cpu = time.perf_counter(), time.process_time()
        for kind, t, layer in sample:
            restored = [layer] if kind == "resid" else list(window_layers(layer, n_layers, 10))
            site = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}[kind]
            p = reference_restored_prob(handle, tokens, noise, (subject.start, subject.end), answer,
                                        [(f"blocks.{l}.{site}", t) for l in restored])
            max_diff = max(max_diff, abs(p - traces[kind].scores[t, layer].item()))
        per_cell = (time.perf_counter() - start) / len(sample)
        per_cell_cpu = (time.process_time() - cpu) / len(sample)
        # + the clean and the corrupted baseline forwards the reference also runs
        full, full_cpu = per_cell * (len(cells) + 2), per_cell_cpu * (len(cells) + 2)
        ref_rows.append({"case_id": fact.case_id, "cells": len(cells), "timed_cells": len(sample),
                         "s_per_cell": per_cell, "extrapolated_s": full, "cpu_s_per_cell": per_cell_cpu,
                         "extrapolated_cpu_s": full_cpu})
        print(f"  reference fact {fact.case_id:>3}: {per_cell:.2f} s/cell ({per_cell_cpu:.2f} s CPU) × "
              f"{len(cells) + 2} forwards ≈ {full:.0f} s wall, {full_cpu:.0f} s CPU "
              f"(timed on {len(sample)} random cells, extrapolated)", flush=True)

    # ---- AtP: all three maps from one forward + one backward
    atp_s, atp_cpu, rho = [], [], {k: [] for k in KINDS}
    rho_subject = {k: [] for k in KINDS}
    for fact, traces in zip(facts, report.traces):
        start, cpu = time.perf_counter(), time.process_time()
        atp = attribution_patch_fact(handle, fact, noise_std=std, n_samples=args.samples, seed=args.seed)
        atp_s.append(time.perf_counter() - start)
        atp_cpu.append(time.process_time() - cpu)
        for kind, value in spearman_agreement(atp, traces).items():
            rho[kind].append(value)
        for kind, value in spearman_agreement(atp, traces, from_subject=True).items():
            rho_subject[kind].append(value)

    # ---- the exact trace against itself under other noise draws: the ceiling AtP's agreement is read against
    retest: dict[str, list[float]] = {k: [] for k in KINDS}
    for fact, traces in list(zip(facts, report.traces))[:args.retest]:
        again = trace_fact(handle, fact, noise_std=std, n_samples=args.samples, seed=args.seed + 1)
        for kind in KINDS:
            first, second = traces[kind].indirect_effect, again[kind].indirect_effect
            mask = ~torch.isnan(first)
            retest[kind].append(float(spearmanr(first[mask].numpy(), second[mask].numpy()).statistic))

    n_ref = len(ref_rows)
    mean = statistics.mean
    print("\n== batched vs reference (full trace, 3 kinds, per fact; wall clock on a shared machine, and CPU time)")
    print(f"  batched   : {mean(batched_s):.1f} s wall / {mean(batched_cpu):.1f} s CPU per fact "
          f"over {len(facts)} facts")
    if n_ref:
        _print_reference(ref_rows, batched_s[:n_ref], batched_cpu[:n_ref], max_diff)
    print("== AtP vs exact trace")
    print(f"  AtP       : {mean(atp_s):.2f} s wall / {mean(atp_cpu):.2f} s CPU per fact; speed-up vs batched exact "
          f"{mean(batched_s) / mean(atp_s):.0f}× wall, {mean(batched_cpu) / mean(atp_cpu):.0f}× CPU")
    if n_ref:
        print(f"  AtP vs reference: {mean(r['extrapolated_cpu_s'] for r in ref_rows) / mean(atp_cpu):.0f}× CPU")
    for kind in KINDS:
        print(f"  Spearman {kind:5s}: mean {statistics.mean(rho[kind]):.3f} (min {min(rho[kind]):.3f}); "
              f"from the subject on: mean {statistics.mean(rho_subject[kind]):.3f}")
    if args.retest:
        print(f"== the exact trace against itself (seed {args.seed} vs {args.seed + 1}, first {args.retest} facts)")
        for kind in KINDS:
            print(f"  Spearman {kind:5s}: exact vs exact {statistics.mean(retest[kind]):.3f} "
                  f"(min {min(retest[kind]):.3f}); AtP vs exact on the same facts "
                  f"{statistics.mean(rho[kind][:len(retest[kind])]):.3f}")
    print("== where the peaks sit")
    for kind in KINDS:
        s = report.summary(kind)
        print(f"  {kind:5s}: peak at last subject token {s.frac_peak_at_last_subject:.0%}, in subject "
              f"{s.frac_peak_in_subject:.0%}; mean peak layer {s.mean_peak_layer:.1f}/{n_layers} "
              f"(depth {s.mean_peak_depth:.2f}); last-subject-token profile peaks at layer "
              f"{s.mean_last_subject_peak_layer:.1f} on average; mean max effect {s.mean_max_effect:.3f}")

    if args.plots:
        from locate.plots import plot_fact_traces

        for traces in report.traces:
            case = traces["mlp"].case_id
            plot_fact_traces(traces, args.plots / f"trace_{case}.png", suptitle=f"fact {case}")
    if args.out:
        from obliviate.results import atomic_write_json

        atomic_write_json(args.out, {
            "model": args.model, "threads": torch.get_num_threads(), "noise_std": std, "n_known": n_known,
            "batched_s": batched_s, "batched_cpu_s": batched_cpu, "reference": ref_rows, "max_abs_diff": max_diff,
            "atp_s": atp_s, "atp_cpu_s": atp_cpu,
            "spearman": rho, "spearman_from_subject": rho_subject, "spearman_exact_retest": retest,
            "summary": {k: to_jsonable(report.summary(k)) for k in KINDS}, "report": to_jsonable(report),
        })


if __name__ == "__main__":
    main()
