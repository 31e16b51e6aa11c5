"""Run every benchmark with the issues' sizes and write its JSON beside the printed ratios (`make bench`).

- bench_trace.py: full causal trace of 10 known SmolLM2 facts, batched vs the one-cell-per-forward reference
  (timed on sampled cells, extrapolated), and AtP vs the exact trace (speed, Spearman);
- bench_edit.py rome: ROME rewrites of 50 known SmolLM2 facts with the layer and settings of
  configs/smollm2-rome.yaml (the rome-sweep's choice; every CounterFact figure beside its pre-edit value, NS
  same-relation apart; seconds per edit), and the same on every fact of the untuned set (rome-untuned) and of the
  fresh set (rome-fresh, written after the plateau rule was frozen);
- bench_edit.py rome-reach: how far ROME's u reaches past the edited subject (the share of the edit each neighbour
  prompt's keys take) on the 50, for 0 / 16 / 64 / 256 nearest vocabulary words' keys kept (the choice of
  configs/smollm2-rome.yaml's neighbour_keys);
- bench_edit.py rome-reference: ROME per edit against the reference's loop in the same process, on the same 5
  facts (the speed ratio and both edits' CounterFact figures); again with ours stopping once its goal is met and
  a v* step barely lowers its loss (`--plateau-tol 0.01`; the reference keeps its own rule; not in
  configs/smollm2-rome.yaml: at its layer the rule saves few steps and cost paraphrases on the fresh set, README);
  and with ours as configs/smollm2-rome.yaml runs it: v* loop in bfloat16 (`--compute-dtype bfloat16`, the
  reference in float32) and the subject's 64 nearest vocabulary words' keys kept (`--neighbour-keys 64`);
- bench_edit.py memit-world: MEMIT erase of the world's whole forget split in one batch, with the key statistics
  timed apart from the edit;
- bench_edit.py methods-world: task vector, SSD, SalUn, counter-example fine-tuning, DPO and Idk-DPO on the world's
  whole forget split at their defaults, each edit's seconds as a ratio to MEMIT's in the same run (lora_removal and
  sisa need their own bases, built beforehand: `--lora-model` / `--sisa-model`, by hand);
- bench_train.py: seconds per world-training step with GPT-2's gelu_new against exact GELU, on the shipped recipe
  and the world-v2 candidate, and each GELU form's cost on a trained model's MLP inputs.

Each benchmark prints ratios measured in its own run; nothing here asserts a time.

    python bench/run_all.py [--out bench-results]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for the JSON results")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {
        "trace": [HERE / "bench_trace.py", "--facts", "10", "--ref-facts", "2", "--ref-cells", "30"],
        "rome": [HERE / "bench_edit.py", "rome", "--n-facts", "50", "--run-config", ROOT / "configs/smollm2-rome.yaml"],
        "rome-untuned": [HERE / "bench_edit.py", "rome", "--n-facts", "100", "--run-config",
                         ROOT / "configs/smollm2-rome.yaml", "--facts",
                         ROOT / "obliviate/data/smollm2_facts_untuned.jsonl"],
        "rome-fresh": [HERE / "bench_edit.py", "rome", "--n-facts", "104", "--run-config",
                       ROOT / "configs/smollm2-rome.yaml", "--facts",
                       ROOT / "obliviate/data/smollm2_facts_fresh.jsonl"],
        "rome-reach": [HERE / "bench_edit.py", "rome-reach", "--n-facts", "50"],
        "rome-reference": [HERE / "bench_edit.py", "rome-reference", "--n-facts", "5"],
        "rome-reference-plateau": [HERE / "bench_edit.py", "rome-reference", "--n-facts", "5", "--plateau-tol", "0.01"],
        "rome-reference-bf16": [HERE / "bench_edit.py", "rome-reference", "--n-facts", "5", "--compute-dtype",
                                "bfloat16", "--neighbour-keys", "64"],
        "memit-world": [HERE / "bench_edit.py", "memit-world"],
        "methods-world": [HERE / "bench_edit.py", "methods-world"],
        "train": [HERE / "bench_train.py"],
    }
    failed = []
    for name, command in runs.items():
        print(f"\n#### {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, *map(str, command), "--threads", str(args.threads),
                                "--out", str(args.out / f"{name}.json")])
        print(f"#### {name}: exit {code}, {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
