"""Benchmark of world-model training: seconds per optimiser step with GPT-2's `gelu_new` against exact GELU
(`gelu`, `TrainConfig.activation`), in one process.

1. *The training loop.* Each recipe is trained for `--steps` steps with each activation, alternately (`--repeats`
   rounds, so drift in the machine's load falls on both), through `obliviate.world.train.train_world_model`
   itself: the time is the loop's own (`wall_time_s`: batches, name-knockout masks, early-exit loss, backward,
   AdamW), not the setup or the final evaluation. Recipes: `shipped` (the `TrainConfig` defaults) and `candidate`
   (d 64, MLP ratio 8, name knockout 0.75, 12 tag lines, early exit weight 1 at block 3: the world-v2 recipe (26)
   the README measures). These steps start from the initial weights.
2. *The activation on trained inputs.* A GELU's cost depends on its inputs: a trained model's MLP inputs reach
   about −70, where the tanh forms take slow paths. Forward and backward of each form (`gelu_new`'s ops, PyTorch's
   fused tanh kernel `gelu_pytorch_tanh`, exact `gelu`) on the MLP inputs of the trained `world` model (its middle
   block, 16 rows of 128 tokens) and on standard-normal values of the same shape. This is why a short run from
   the initial weights under-states the late steps' cost (the fused tanh kernel is faster than `gelu_new` there
   and slower on trained inputs).

Nothing here asserts a time; it prints the ratios measured in its own run.

    python bench/bench_train.py [--world DIR] [--steps 200] [--repeats 2] [--threads 2] [--out train.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import mean

import torch
from jaxtyping import Float
from transformers.activations import ACT2FN

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from obliviate.results import atomic_write_json  # noqa: E402
from obliviate.world.config import ACTIVATIONS, TrainConfig  # noqa: E402
from obliviate.world.train import TRAINING_INFO, train_world_model  # noqa: E402

RECIPES = {
    "shipped": TrainConfig(),
    "candidate": TrainConfig(n_embd=64, mlp_ratio=8, name_knockout=0.75, tag_lines=12, tag_exit_weight=1.0,
                             tag_exit_depth=3),
}
"""The recipes timed: the shipped one and the world-v2 candidate (docs/world-history.md, issue 11's recipe (26))."""


def step_seconds(world_dir: Path, cfg: TrainConfig, folder: Path) -> float:
    """Seconds per step of the training loop, from the run's own training_info.json."""
    train_world_model(world_dir, "world", cfg, folder)
    return json.loads((folder / TRAINING_INFO).read_text())["wall_time_s"] / cfg.steps


GELU_FORMS = {name: ACT2FN[name] for name in ("gelu_new", "gelu_pytorch_tanh", "gelu")}
"""The GELU forms timed on trained inputs, as transformers runs them: GPT-2's, PyTorch's fused kernel of the same
tanh form, and exact GELU."""


def trained_mlp_inputs(model: str = "world") -> Float[torch.Tensor, "rows pos d_mlp"]:
    """The MLP inputs (before the activation) of `model`'s middle block on 16 rows of 128 of its token ids."""
    from obliviate.models import load

    handle = load(model)
    ids = torch.randint(4, handle.tl.cfg.d_vocab - 4, (16, 128), generator=torch.Generator().manual_seed(0))
    _, cache = handle.tl.run_with_cache(ids, names_filter=lambda name: name.endswith("mlp.hook_pre"))
    return cache[f"blocks.{handle.tl.cfg.n_layers // 2}.mlp.hook_pre"].detach()


def forward_backward_ms(form, values: torch.Tensor, repeats: int = 20) -> float:
    """Milliseconds for one forward and backward of `form` on `values`."""
    x = values.clone().requires_grad_(True)
    for _ in range(3):
        form(x).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        form(x).sum().backward()
    return 1000 * (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=None, help="world folder (default: the cached world)")
    parser.add_argument("--steps", type=int, default=200, help="steps per timed training")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds per recipe")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args(argv)
    if args.world is None:
        from obliviate.world import ensure_world

        args.world = ensure_world()
    torch.set_num_threads(args.threads)
    result: dict = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "recipes": {}}
    trained = trained_mlp_inputs()
    inputs = {"trained world, middle block": trained, "standard normal": torch.randn(trained.shape)}
    result["activation_ms"] = {label: {name: forward_backward_ms(form, values) for name, form in GELU_FORMS.items()}
                               for label, values in inputs.items()}
    for label, row in result["activation_ms"].items():
        print(f"GELU forward+backward on {label} inputs (min {inputs[label].min():.1f}): "
              + ", ".join(f"{name} {ms:.2f} ms" for name, ms in row.items()), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in args.recipes:
            base = replace(RECIPES[recipe], steps=args.steps, eval_every=0, warmup_steps=min(40, args.steps - 1),
                           num_threads=args.threads)
            times: dict[str, list[float]] = {activation: [] for activation in ACTIVATIONS}
            for round_index in range(args.repeats):
                for activation in times:
                    folder = Path(scratch) / f"{recipe}-{activation}-{round_index}"
                    times[activation].append(step_seconds(args.world, replace(base, activation=activation), folder))
                    print(f"{recipe} {activation} round {round_index}: {1000 * times[activation][-1]:.1f} ms/step",
                          flush=True)
            ms = {activation: 1000 * mean(values) for activation, values in times.items()}
            row = {"ms_per_step": ms, "gelu_over_gelu_new": ms["gelu"] / ms["gelu_new"], "config": asdict(base)}
            result["recipes"][recipe] = row
            print(f"{recipe}, from the initial weights: gelu_new {ms['gelu_new']:.1f} ms/step, gelu {ms['gelu']:.1f} "
                  f"ms/step, ratio {row['gelu_over_gelu_new']:.2f}")
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
