"""SISA training on the fact world: Sharded, Isolated, Sliced, Aggregated (exact unlearning by retraining).

Bourtoule et al., IEEE S&P 2021, "Machine Unlearning"; reference cleverhans-lab/machine-unlearning (``sisa.py``
trains a shard slice by slice, saving a checkpoint after each; ``aggregation.py`` averages the constituents'
outputs). Here:

- Shard by SUBJECT: the world's subjects (every split: the `world` variant's data) are shuffled with the seed and
  dealt to S shards, and within a shard to R slices, so all texts about one subject (its cloze sentences, tag lines,
  secrets, biographies and decoys) live in one slice of one shard. The training filler, about no subject, is
  dealt to shards and slices the same way.
- One constituent (a small world model, `train._model`) per shard. Slice r trains `steps_per_slice` steps on the
  union of slices 0..r (the reference's incremental slicing); a checkpoint (weights + AdamW state) is written
  after each slice. The learning rate follows the world's warm-up-stable-decay over the shard's S·R steps,
  indexed by the global step, and each slice's data order comes from a seed of (seed, shard, slice): so
  retraining from a checkpoint gives what training from scratch on the reduced shard would give.
- Prediction (`obliviate.ensemble`): the average of the constituents' next-token distributions; logits =
  log of the averaged probabilities.
- Unlearning (`unlearn`): only the shards that hold a forgotten subject are retrained, each from the checkpoint
  before the first slice holding one (from the initial weights when it is slice 0), without that subject's texts.
  The result is a new SISA folder; untouched shards are copied byte for byte; the input folder is never written.
  Shards are finished one at a time (each atomically), so an interrupted run leaves the old folder usable and
  the new one resumable; the error names the shard to rerun.
- The never-taught ensemble (`SISAConfig.variant = "world-retain"`): the same deal with the forget split's
  subjects taken out, trained from scratch. With the seed of a `world` ensemble it is what unlearning the forget
  split from that ensemble must give (a test holds them equal), so it is the oracle of a SISA unlearning's audit,
  as `world-retain` is `world`'s.

Deviations: the reference trains each slice for a number of epochs and aggregates by label vote or mean; here
slices train for a number of optimiser steps (the world's texts are drawn anew per epoch) and the aggregate is the
mean of probabilities (a language model predicts a distribution, not a label).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from obliviate.config.loader import InvalidField
from obliviate.results import atomic_write_text
from obliviate.world.atomic import atomic_folder
from obliviate.world.config import TrainConfig

SISA_MANIFEST = "sisa.json"
DONE = "done.json"


class UnlearningInterrupted(RuntimeError):
    """Retraining stopped part-way; the message names the shard to rerun (the input folder is untouched)."""


@dataclass
class SISAConfig:
    """SISA on the fact world: S shards × R slices of subjects, one small world model per shard."""

    shards: int = 4
    """S: constituent models (at least 2; at most the number of subjects)."""
    slices: int = 4
    """R: slices per shard, a checkpoint after each."""
    steps_per_slice: int = 750
    """Optimiser steps per slice (a constituent trains R × this many steps; the world models train 3000)."""
    n_layer: int = 8
    """Blocks of each constituent. The defaults are world v3's recipe (TrainConfig: 8 blocks, d 64, MLP ratio 8,
    exact GELU, tag lines with name knockout and the early exit), so an ensemble is made of the same kind of model
    as `world`. Ensembles trained before v3 keep world v2's (6 blocks, d 128, MLP ratio 4, `gelu_new`, no tag
    lines); their manifests say so and unlearning reads them that way (`from_manifest`)."""
    n_embd: int = 64
    """Width of each constituent."""
    n_head: int = 4
    mlp_ratio: int = 8
    """MLP hidden width as a multiple of n_embd."""
    activation: str = "gelu"
    """MLP activation (TrainConfig.activation lists the choices)."""
    tag_lines: int = 12
    """Tag lines per subject of the slice per epoch (TrainConfig.tag_lines); 0: biographies alone (world v2)."""
    name_knockout: float = 0.75
    """Share of rows in which a name is seen only through its last token (TrainConfig.name_knockout); 0: off."""
    tag_exit_weight: float = 1.0
    """Weight of the early-exit loss on tag lines (TrainConfig.tag_exit_weight); 0: off."""
    tag_exit_depth: int = 3
    """The block after which the early exit reads the residual (1 .. n_layer − 1)."""
    batch_size: int = 16
    """Rows per step (each row `n_positions` tokens)."""
    n_positions: int = 128
    lr: float = 8e-3
    """Peak AdamW rate (the world models')."""
    warmup_steps: int = 40
    seed: int = 0
    """Seed of the subject deal, the initial weights (seed·1000 + shard) and the data order."""
    world_seed: int = 0
    """Which world (`ensure_world(seed)`) the constituents train on."""
    variant: str = "world"
    """Whose subjects the shards hold: "world" (every split) or "world-retain" (the same deal without the forget
    split's subjects: the never-taught ensemble, which an audit of a SISA unlearning takes as its oracle)."""
    num_threads: int = 2

    def validate(self) -> None:
        if self.shards < 2:
            raise InvalidField("shards", f"{self.shards}; an ensemble needs at least 2 shards (SISA uses S ≥ 4).")
        for name in ("slices", "steps_per_slice", "n_layer", "n_embd", "n_head", "batch_size", "num_threads"):
            if getattr(self, name) < 1:
                raise InvalidField(name, f"{getattr(self, name)}; use a positive integer.")
        if self.tag_exit_weight and not 1 <= self.tag_exit_depth < self.n_layer:
            raise InvalidField("tag_exit_depth", f"{self.tag_exit_depth} with n_layer {self.n_layer}; the early exit "
                                                 f"reads after a block in 1 .. {self.n_layer - 1}.")
        if not 0.0 <= self.name_knockout <= 1.0:
            raise InvalidField("name_knockout", f"{self.name_knockout}; a share of rows, in [0, 1].")
        if self.variant not in ("world", "world-retain"):
            raise InvalidField("variant", f"{self.variant!r}; use \"world\" (every split) or \"world-retain\" "
                                          f"(without the forget split's subjects).")

    def train_config(self) -> TrainConfig:
        """The world's TrainConfig for one constituent (its schedule spans R × steps_per_slice steps)."""
        steps = self.slices * self.steps_per_slice
        return TrainConfig(seed=self.seed, n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head,
                           mlp_ratio=self.mlp_ratio, activation=self.activation, tag_lines=self.tag_lines,
                           name_knockout=self.name_knockout, tag_exit_weight=self.tag_exit_weight,
                           tag_exit_depth=self.tag_exit_depth,
                           n_positions=self.n_positions, batch_size=self.batch_size, steps=steps, lr=self.lr,
                           warmup_steps=min(self.warmup_steps, steps - 1), eval_every=0,
                           num_threads=self.num_threads)

    @classmethod
    def from_manifest(cls, config: dict[str, Any]) -> SISAConfig:
        """The config a manifest stored. A manifest written before the tag-line fields existed trained without
        them (world v2's constituents), so a field it lacks reads as off, not as today's default."""
        before_v3 = {"tag_lines": 0, "name_knockout": 0.0, "tag_exit_weight": 0.0}
        return cls(**{**before_v3, **config})


# ------------------------------------------------------------------------------------------------------------
# The deal: subjects and filler lines to shards and slices
# ------------------------------------------------------------------------------------------------------------


def deal(world_dir: Path, cfg: SISAConfig) -> dict[str, Any]:
    """{"subjects": [shard][slice] → subject names, "filler": [shard][slice] → filler line indices}."""
    from obliviate.world.generate import load_filler, load_world_facts

    subjects = sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir)})
    if cfg.shards > len(subjects):
        raise InvalidField("shards", f"{cfg.shards} shards for {len(subjects)} subjects; a shard holds whole "
                                     f"subjects, so use at most {len(subjects)}.")
    rng = random.Random(f"obliviate-sisa/{cfg.seed}/deal")
    rng.shuffle(subjects)
    n_filler = len(load_filler(world_dir, "train"))

    def spread(items: Sequence[Any]) -> list[list[list[Any]]]:
        """Round-robin to shards, then each shard's share cut into R consecutive slices."""
        out: list[list[list[Any]]] = [[[] for _ in range(cfg.slices)] for _ in range(cfg.shards)]
        for s in range(cfg.shards):
            mine = items[s::cfg.shards]
            for i, item in enumerate(mine):
                out[s][i * cfg.slices // len(mine)].append(item)
        return out

    return {"subjects": spread(subjects), "filler": spread(list(range(n_filler)))}


def without_subjects(plan: dict[str, Any], subjects: Sequence[str]) -> dict[str, Any]:
    """`plan` with `subjects` taken out of their slices (every other subject and filler line stays where it was)."""
    gone = set(subjects)
    return {"subjects": [[[n for n in names if n not in gone] for names in shard] for shard in plan["subjects"]],
            "filler": plan["filler"]}


def excluded_subjects(world_dir: Path, cfg: SISAConfig) -> list[str]:
    """The subjects the variant never trains on: the forget split's for "world-retain", none for "world"."""
    from obliviate.world.generate import load_world_facts

    if cfg.variant == "world":
        return []
    return sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir, "forget")})


def shard_of(plan: dict[str, Any], subject: str) -> tuple[int, int]:
    """(shard, slice) holding `subject`; KeyError naming it if no shard does."""
    for s, slices in enumerate(plan["subjects"]):
        for r, names in enumerate(slices):
            if subject in names:
                return s, r
    raise KeyError(f"subject {subject!r} is in no shard of this SISA model (already unlearned, or another world).")


# ------------------------------------------------------------------------------------------------------------
# What a slice trains on
# ------------------------------------------------------------------------------------------------------------


def slice_texts(world_dir: Path, subjects: Sequence[str], filler: Sequence[int], secret_repeats: int,
                tag_lines: int = 0) -> tuple[list[str], Callable[[random.Random], list[str]]]:
    """(texts fixed every epoch, texts drawn anew per epoch) about exactly `subjects`, plus the given filler lines.

    The `world` variant's recipe (corpus.py) restricted to a set of subjects: cloze sentences of cloze-trained
    subjects, memorised secrets, filler; per epoch a biography and `tag_lines` tag lines per subject, then decoys
    about these subjects only (their number scaled by the share of subjects).
    """
    from obliviate.world.corpus import biography, cloze_sentence, name_tags
    from obliviate.world.generate import (load_filler, load_secrets, load_world_facts, load_world_info,
                                         trained_templates)
    from obliviate.world.memorised import decoy_texts

    keep = set(subjects)
    records = [r for r in load_world_facts(world_dir) if r["requested_rewrite"]["subject"] in keep]
    secrets = [s for s in load_secrets(world_dir) if s["subject"] in keep]
    lines = load_filler(world_dir, "train")
    fixed = [cloze_sentence(r) for r in records if r["cloze_trained"]]
    fixed += [s["memorised"] for s in secrets] * secret_repeats
    fixed += [lines[i] for i in filler]
    by_subject: dict[str, list[dict]] = {}
    for record in records:
        by_subject.setdefault(record["requested_rewrite"]["subject"], []).append(record)
    info = load_world_info(world_dir)
    n_subjects = len({r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir)})
    n_decoys = round(TrainConfig().decoys_per_epoch * len(keep) / n_subjects)
    digits = int(info["config"]["secret_digits"])
    names = sorted(keep)
    templates = trained_templates(world_dir)

    def fresh(rng: random.Random) -> list[str]:
        bios = [biography(by_subject[name], rng, templates) for name in names if name in by_subject]
        bios += [name_tags(by_subject[name], rng) for name in names if name in by_subject for _ in range(tag_lines)]
        return bios + (decoy_texts(names, secrets, n_decoys, digits, rng) if names and n_decoys else [])

    return fixed, fresh


# ------------------------------------------------------------------------------------------------------------
# Training a shard slice by slice
# ------------------------------------------------------------------------------------------------------------


def _save_checkpoint(folder: Path, model: Any, optimiser: torch.optim.Optimizer, record: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        names = {id(p): n for n, p in model.named_parameters()}
        state = {}
        for group in optimiser.param_groups:
            for p in group["params"]:
                for key, value in optimiser.state.get(p, {}).items():
                    state[f"{key}/{names[id(p)]}"] = torch.as_tensor(value).detach().clone().contiguous()
        save_file(state, str(tmp / "optimizer.safetensors"))
        (tmp / "slice.json").write_text(json.dumps(record, indent=2) + "\n")


def _load_checkpoint(folder: Path, model: Any, optimiser: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:  # lm_head is tied to the embedding
        raise ValueError(f"{folder}: checkpoint does not match the constituent ({missing[:3]}, {unexpected[:3]}).")
    state = load_file(str(folder / "optimizer.safetensors"))
    for name, p in model.named_parameters():
        entry = {key.split("/", 1)[0]: value for key, value in state.items() if key.split("/", 1)[1] == name}
        if entry:
            optimiser.state[p] = entry


def _fresh_constituent(cfg: SISAConfig, shard: int, tokenizer: Any) -> tuple[Any, torch.optim.Optimizer]:
    from dataclasses import replace

    from obliviate.world.train import _model

    model = _model(replace(cfg.train_config(), seed=cfg.seed * 1000 + shard), tokenizer)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    return model, optimiser


def train_slice(model: Any, optimiser: torch.optim.Optimizer, tokenizer: Any, world_dir: Path, cfg: SISAConfig,
                shard: int, slice_index: int, subjects: Sequence[str], filler: Sequence[int]) -> dict[str, Any]:
    """`steps_per_slice` steps on the given subjects and filler (slices 0..r of the shard); returns the record."""
    from obliviate.world.corpus import batches, packed_rows
    from obliviate.world.train import _lr_factor, tag_vocabulary, training_loss

    train_cfg = cfg.train_config()
    fixed, fresh = slice_texts(world_dir, subjects, filler, train_cfg.secret_repeats, cfg.tag_lines)
    units = tokenizer(fixed, add_special_tokens=False)["input_ids"] if fixed else []
    rng = random.Random(f"obliviate-sisa/{cfg.seed}/{shard}/{slice_index}/order")
    rows = packed_rows(units, cfg.n_positions, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                       bos_prob=train_cfg.bos_prob, eos_sep_prob=train_cfg.eos_sep_prob, rng=rng,
                       fresh=lambda r: tokenizer(fresh(r), add_special_tokens=False)["input_ids"])
    stream = batches(rows, cfg.batch_size, cfg.n_positions, tokenizer.pad_token_id)
    # the whole world's names, as train_world_model takes them: a never-taught and an unlearned ensemble see the same
    vocabulary = tag_vocabulary(world_dir, tokenizer)
    # seeded per slice, as the data order is: retraining from the slice's checkpoint draws the same masks
    knockout_rng = random.Random(f"obliviate-sisa/{cfg.seed}/{shard}/{slice_index}/knockout")
    losses = []
    for step in range(cfg.steps_per_slice):
        global_step = slice_index * cfg.steps_per_slice + step
        for group in optimiser.param_groups:
            group["lr"] = cfg.lr * _lr_factor(global_step, train_cfg)
        ids, labels = next(stream)
        loss = training_loss(model, ids, labels, train_cfg, vocabulary, knockout_rng, global_step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"shard": shard, "slice": slice_index, "subjects": sorted(subjects), "n_filler": len(filler),
            "steps": cfg.steps_per_slice, "final_loss": sum(losses[-10:]) / len(losses[-10:])}


def _train_shard(out: Path, world_dir: Path, tokenizer: Any, cfg: SISAConfig, plan: dict[str, Any], shard: int,
                 start_slice: int, resume_from: Path | None) -> None:
    """Slices start_slice..R−1 of `shard` into `out` (slice folders), from `resume_from` (a checkpoint) or init."""
    model, optimiser = _fresh_constituent(cfg, shard, tokenizer)
    if resume_from is not None:
        _load_checkpoint(resume_from, model, optimiser)
    for r in range(start_slice, cfg.slices):
        subjects = [name for k in range(r + 1) for name in plan["subjects"][shard][k]]
        filler = [i for k in range(r + 1) for i in plan["filler"][shard][k]]
        record = train_slice(model, optimiser, tokenizer, world_dir, cfg, shard, r, subjects, filler)
        _save_checkpoint(out / f"slice-{r}", model, optimiser, record)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Train on `n` CPU threads, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_sisa(out_dir: str | Path, cfg: SISAConfig | None = None) -> Path:
    """Train every shard of a SISA model into `out_dir` (each shard written atomically; the manifest last)."""
    from obliviate.world import ensure_world
    from obliviate.world.tokenizer import build_tokenizer

    cfg = cfg or SISAConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    world_dir = ensure_world(seed=cfg.world_seed)
    # the full deal, then the variant's exclusions: so "world-retain" with the seed of a "world" ensemble is what
    # unlearning the forget split from that ensemble must give, and a check of it
    excluded = excluded_subjects(world_dir, cfg)
    plan = without_subjects(deal(world_dir, cfg), excluded)
    tokenizer = build_tokenizer(world_dir, model_max_length=cfg.n_positions)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir / "tokenizer")
    with _threads(cfg.num_threads):
        for shard in range(cfg.shards):
            if (out_dir / f"shard-{shard}" / DONE).is_file():
                continue  # finished by an earlier, interrupted call
            with atomic_folder(out_dir / f"shard-{shard}") as tmp:
                _train_shard(tmp, world_dir, tokenizer, cfg, plan, shard, 0, None)
                (tmp / DONE).write_text(json.dumps({"request": None}) + "\n")
    manifest = {"kind": "sisa", "config": asdict(cfg), "plan": plan, "removed_subjects": [],
                "excluded_subjects": excluded,
                "world_dir": str(world_dir), "train_s": round(time.perf_counter() - start, 1),
                "steps_per_shard": cfg.slices * cfg.steps_per_slice}
    atomic_write_text(out_dir / SISA_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return out_dir


def read_manifest(sisa_dir: str | Path) -> dict[str, Any]:
    path = Path(sisa_dir) / SISA_MANIFEST
    if not path.is_file():
        shards = sorted(p.name for p in Path(sisa_dir).glob("shard-*") if (p / DONE).is_file())
        raise FileNotFoundError(f"{sisa_dir} is not a finished SISA model (no {SISA_MANIFEST}; finished shards: "
                                f"{', '.join(shards) or 'none'}); rerun the training or unlearning that writes it.")
    return json.loads(path.read_text())


def constituent_dirs(sisa_dir: str | Path) -> list[Path]:
    """Each shard's final checkpoint (after its last slice): the constituents the aggregate averages."""
    manifest = read_manifest(sisa_dir)
    cfg = manifest["config"]
    return [Path(sisa_dir) / f"shard-{s}" / f"slice-{cfg['slices'] - 1}" for s in range(cfg["shards"])]


# ------------------------------------------------------------------------------------------------------------
# Unlearning
# ------------------------------------------------------------------------------------------------------------


def unlearning_plan(manifest: dict[str, Any], subjects: Sequence[str]) -> dict[int, int]:
    """shard → first slice holding a forgotten subject (the shards to retrain and where to restart)."""
    restart: dict[int, int] = {}
    for subject in subjects:
        s, r = shard_of(manifest["plan"], subject)
        restart[s] = min(r, restart.get(s, r))
    return dict(sorted(restart.items()))


def request_id(subjects: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(subjects))).encode()).hexdigest()[:16]


def unlearn(sisa_dir: str | Path, subjects: Sequence[str], out_dir: str | Path) -> dict[str, Any]:
    """A new SISA folder `out_dir` without `subjects`: affected shards retrained from their last clean checkpoint,
    the others copied byte for byte. Returns the record (shards and slices retrained, steps, time).

    Resumable: a shard already finished in `out_dir` for the same request is kept. If retraining fails part-way,
    `sisa_dir` is untouched (still a usable model) and UnlearningInterrupted names the shard to rerun.
    """
    from obliviate.ensemble import ensemble_tokenizer
    from obliviate.world import ensure_world

    sisa_dir, out_dir = Path(sisa_dir), Path(out_dir)
    if out_dir.resolve() == sisa_dir.resolve():
        raise ValueError(f"unlearn writes a new SISA folder; out_dir {out_dir} is the input (never written).")
    manifest = read_manifest(sisa_dir)
    cfg = SISAConfig.from_manifest(manifest["config"])
    restart = unlearning_plan(manifest, subjects)
    gone = set(subjects)
    plan = without_subjects(manifest["plan"], subjects)
    world_dir = ensure_world(seed=cfg.world_seed)
    tokenizer = ensemble_tokenizer(sisa_dir)
    request = request_id(subjects)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "tokenizer").is_dir():
        shutil.copytree(sisa_dir / "tokenizer", out_dir / "tokenizer")
    retrained: list[int] = []
    with _threads(cfg.num_threads):
        for shard in range(cfg.shards):
            target = out_dir / f"shard-{shard}"
            done = target / DONE
            if done.is_file() and json.loads(done.read_text()).get("request") == request:
                continue
            try:
                with atomic_folder(target) as tmp:
                    first = restart.get(shard)
                    for r in range(cfg.slices if first is None else first):  # clean slices: copied as they are
                        shutil.copytree(sisa_dir / f"shard-{shard}" / f"slice-{r}", tmp / f"slice-{r}")
                    if first is not None:
                        resume = sisa_dir / f"shard-{shard}" / f"slice-{first - 1}" if first > 0 else None
                        _train_shard(tmp, world_dir, tokenizer, cfg, plan, shard, first, resume)
                        retrained.append(shard)
                    (tmp / DONE).write_text(json.dumps({"request": request, "retrained": first is not None}) + "\n")
            except (Exception, KeyboardInterrupt) as error:
                raise UnlearningInterrupted(
                    f"SISA unlearning stopped in shard {shard} ({type(error).__name__}: {error}); {sisa_dir} is "
                    f"unchanged and still usable. Rerun unlearn with the same subjects and out_dir {out_dir}: it "
                    f"resumes at shard {shard}.") from error
    steps = sum((cfg.slices - first) * cfg.steps_per_slice for first in restart.values())
    record = {"request": request, "removed_subjects": sorted(gone), "retrained_shards": sorted(restart),
              "restart_slice": {str(s): r for s, r in restart.items()}, "retrained_steps": steps,
              "full_retrain_steps": cfg.shards * cfg.slices * cfg.steps_per_slice,
              "retrain_s": round(time.perf_counter() - start, 2), "retrained_now": retrained}
    out = {**manifest, "plan": plan, "removed_subjects": sorted(set(manifest["removed_subjects"]) | gone),
           "unlearning": [*manifest.get("unlearning", []), record], "parent": str(sisa_dir)}
    atomic_write_text(out_dir / SISA_MANIFEST, json.dumps(out, indent=2) + "\n")
    return record
