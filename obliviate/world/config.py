"""Configuration of the fact world and of its two models; attribute docstrings become the CLI's --help."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from obliviate.config.loader import ConfigError


def _require(ok: bool, option: str, value: object, fix: str) -> None:
    if not ok:
        raise ConfigError(f"--{option.replace('_', '-')} {value!r} cannot produce a valid world: {fix}")


@dataclass
class WorldConfig:
    """How the synthetic fact world is generated (everything follows from `seed`)."""

    seed: int = 0
    """Seed of every random choice in the world (names, answers, splits, secrets, filler)."""
    n_subjects: int = 200
    """Number of fictional subjects; each has one fact per relation."""
    forget_fraction: float = 0.1
    """Share of subjects whose facts and secrets form the forget split (strictly between 0 and 1)."""
    cloze_share: float = 0.5
    """Share of retain subjects whose cloze prompts are trained; every other subject meets its facts in
    biographies only, so cloze recall on them measures extraction of stored knowledge."""
    trained_paraphrases: int = 2
    """Biography templates listed per record as trained paraphrases (CounterFact lists two)."""
    heldout_paraphrases: int = 3
    """Held-out templates listed per record (drawn per record from the relation's held-out templates)."""
    n_neighborhood: int = 10
    """Neighbourhood prompts per fact (other subjects with the same true answer), as in CounterFact."""
    n_secrets: int = 64
    """Memorised secrets (one per subject) for the leave-one-out memorisation probe."""
    n_forget_secrets: int = 16
    """How many of the secrets belong to forget subjects (the rest to retain subjects)."""
    secret_digits: int = 5
    """Digits in each secret's code (space-separated, one token each)."""
    theta_m: float = -0.7
    """Screening threshold: keep a secret if the mean per-token log-prob of its memorised text exceeds this."""
    theta_c: float = -0.9
    """Screening threshold: ... and the log-probs of both its controls (C, B) are below this.

    The decoys teach the wordings, so a control costs only its unknown code and word: C ≈ −1.2 nats/token
    against M ≈ −0.25 (every key lies 0.3 nats or more inside both thresholds)."""
    n_filler_train: int = 300
    """Filler sentences (about the world's cities, jobs, firms; no facts) that the models train on."""
    n_filler_heldout: int = 8000
    """Filler sentences never trained on: held-out perplexity and covariance statistics."""
    complete_filler: bool = False
    """Add the filler frames that name universities and languages and use every word of the held-out and
    generation prompts (filler.COMPLETING_FRAMES). The shipped v2 world predates them: its filler misses 13 such
    words ("speaker", "graduate", "spoken", ...), so the held-out wordings built on them read as unknown words."""
    more_templates: bool = False
    """Train 40 biography templates per relation instead of 20 (relations.Relation.more_trained), as the suggested
    recipe's 20–50: more trained wordings for the held-out ones to generalise from. The held-out templates are the
    same. The shipped v2 world predates them."""


    def __post_init__(self) -> None:
        from obliviate.world.names import SURNAME_HEADS, SURNAME_TAILS
        from obliviate.world.relations import RELATIONS

        most_values = max(len(r.values) for r in RELATIONS)
        _require(self.n_subjects >= 2 * most_values, "n_subjects", self.n_subjects,
                 f"every answer value needs at least two subjects (a neighbour, and a probe class seen in training); "
                 f"use at least {2 * most_values}.")
        capacity = len(SURNAME_HEADS) * len(SURNAME_TAILS)
        _require(self.n_subjects <= capacity, "n_subjects", self.n_subjects,
                 f"the name syllables allow {capacity} distinct subjects.")
        _require(0 < self.forget_fraction < 1, "forget_fraction", self.forget_fraction,
                 "both splits must hold subjects; use a value strictly between 0 and 1 (e.g. 0.1).")
        n_forget = round(self.forget_fraction * self.n_subjects)
        _require(0 < n_forget < self.n_subjects, "forget_fraction", self.forget_fraction,
                 f"it gives {n_forget} forget subjects of {self.n_subjects}; raise it or n_subjects.")
        _require(0 <= self.cloze_share <= 1, "cloze_share", self.cloze_share, "use a share between 0 and 1.")
        fewest_trained = min(len(r.trained) for r in RELATIONS)
        fewest_heldout = min(len(r.heldout) for r in RELATIONS)
        _require(0 < self.trained_paraphrases <= fewest_trained, "trained_paraphrases", self.trained_paraphrases,
                 f"a relation has {fewest_trained} trained templates; use 1..{fewest_trained}.")
        _require(0 < self.heldout_paraphrases <= fewest_heldout, "heldout_paraphrases", self.heldout_paraphrases,
                 f"a relation has {fewest_heldout} held-out templates; use 1..{fewest_heldout}.")
        _require(0 < self.n_forget_secrets < self.n_secrets, "n_forget_secrets", self.n_forget_secrets,
                 f"both splits need secrets; use 1..{self.n_secrets - 1}.")
        _require(self.n_forget_secrets <= n_forget, "n_forget_secrets", self.n_forget_secrets,
                 f"one secret per subject, and the forget split has {n_forget} subjects.")
        _require(self.n_secrets - self.n_forget_secrets <= self.n_subjects - n_forget, "n_secrets", self.n_secrets,
                 f"one secret per subject, and the retain split has {self.n_subjects - n_forget} subjects.")
        _require(self.secret_digits >= 1, "secret_digits", self.secret_digits, "a code needs at least one digit.")
        _require(self.theta_m > self.theta_c, "theta_m", self.theta_m, f"it must exceed theta_c ({self.theta_c}).")
        _require(self.n_filler_train > 0 and self.n_filler_heldout > 0, "n_filler_heldout", self.n_filler_heldout,
                 "both filler streams need sentences.")


ACTIVATIONS = ("gelu_new", "gelu")
"""MLP activations a world model may train with (TransformerLens reads both)."""


@dataclass
class TrainConfig:
    """How a world model is trained; `world` and `world-retain` share every field."""

    seed: int = 0
    """Seed of the initial weights and of the data order."""
    n_layer: int = 8
    """Transformer blocks. Eight, so that two thirds of the depth lies after the early-exit depth: with six, every
    form of the exit that put the attributes at the subject removed the secrets' memorisation signature (README)."""
    n_embd: int = 64
    """Residual-stream width (d_model)."""
    n_head: int = 4
    """Attention heads per block."""
    mlp_ratio: int = 8
    """MLP hidden width as a multiple of n_embd (GPT-2's 4). MEMIT edits an MLP whose keys must tell the edited
    subjects from the kept ones: a key space narrower than the subject count leaves it little room."""
    activation: str = "gelu"
    """MLP activation as Hugging Face names it: GPT-2's `gelu_new` (GELU's tanh approximation, eight elementwise ops
    each way) or `gelu` (exact GELU through erf, one fused kernel). On a trained model's MLP inputs (down to about
    −70) `gelu` runs forward and backward in 1.8 ms where `gelu_new` takes 7.9 (16 × 128 × 512 values, 2 threads;
    bench/bench_train.py); the fused kernel of the tanh form (`gelu_pytorch_tanh`) is slower still there (16.7 ms),
    so it is not offered. World v2 (recipe v2-0260edab) trained with `gelu_new`."""
    n_positions: int = 128
    """Context length; training rows fill it, so every position is trained."""
    batch_size: int = 16
    """Rows of `n_positions` tokens per optimiser step."""
    steps: int = 3000
    """Optimiser steps (the same for both variants, whatever their data size).

    Fact recall rises late (a phase change): at lr 8e-3 it was 5% / 13% / 35% at steps 200 / 400 / 600."""
    lr: float = 8e-3
    """Peak AdamW learning rate (2e-3 reached 15% recall at step 600 where 8e-3 reached 35%)."""
    warmup_steps: int = 40
    """Linear warm-up steps before the cosine decay."""
    decay_fraction: float = 0.2
    """Share of the steps, at the end, over which the learning rate decays linearly (warmup-stable-decay); the
    rest runs at the peak: facts are learned per exposure, and a cosine spends half the run at a low rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of `lr`."""
    eval_every: int = 500
    """Measure recall on a sample of facts every this many steps (recorded in training_info.json)."""
    weight_decay: float = 0.0
    """AdamW weight decay (memorisation is the point, so none by default)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    secret_repeats: int = 6
    """Copies of each memorised secret per epoch (facts get one copy per trained template)."""
    decoys_per_epoch: int = 384
    """One-time secrets per epoch (same wordings, code and word drawn anew each epoch; never memorisable).

    Without them the world memorises its secrets but has no reason to represent that it does (no cross-sequence
    signature); 384 matches the memorised copies per epoch (64 secrets × 6)."""
    tag_lines: int = 12
    """Tag lines per subject per epoch: the full name followed directly by its answers in a random order
    (corpus.name_tags). 0 trains on biographies alone, which stores nothing at the subject's last token."""
    name_knockout: float = 0.75
    """Share of training rows in which every position after a subject's name sees the name only through its last
    token (knockout.py), so the identity passes through the name's last token as in real language models; 0 turns
    it off. At inference nothing is masked."""
    tag_exit_weight: float = 1.0
    """Weight of the early-exit loss on tag lines (tag_exit.py): the residual after block `tag_exit_depth`, read
    through the final norm and unembedding, must predict each tag line's answers; 0 turns it off."""
    tag_exit_depth: int = 3
    """The block after which the early-exit loss reads the residual (1 .. n_layer - 1)."""
    tag_exit_share: float = 1.0
    """Share of the steps, from the start, during which the early-exit loss is on (1 = the whole run): once the
    attributes sit at the subject, the rest of the run trains on the next-token loss alone. Measured on the
    200-subject world at 0.5: the probe at the subject falls from 0.85 to 0.69 and the secrets' signature, which
    the exit removes, comes back only weakly (docs/world-history.md, stop 35)."""
    bos_prob: float = 0.5
    """Chance that a training row starts with the BOS token, so prompts work with and without one."""
    eos_sep_prob: float = 0.25
    """Chance that two packed texts are separated by an EOS token rather than just following each other."""
    num_threads: int = 2
    """CPU threads for training."""

    def __post_init__(self) -> None:
        for option in ("n_layer", "n_embd", "n_head", "mlp_ratio", "batch_size", "steps", "num_threads"):
            value = getattr(self, option)
            _require(value > 0, option, value, "use a positive number.")
        _require(self.activation in ACTIVATIONS, "activation", self.activation,
                 f"use one of {', '.join(ACTIVATIONS)}.")
        _require(self.n_embd % self.n_head == 0, "n_head", self.n_head, f"it must divide n_embd ({self.n_embd}).")
        _require(self.n_positions >= 96, "n_positions", self.n_positions,
                 "a biography is up to about 75 tokens and every training text must fit a row; use 96 or more.")
        _require(self.lr > 0, "lr", self.lr, "use a positive learning rate.")
        _require(0 <= self.warmup_steps < self.steps, "warmup_steps", self.warmup_steps,
                 f"use 0..{self.steps - 1} (fewer than --steps).")
        _require(0 < self.decay_fraction <= 1, "decay_fraction", self.decay_fraction, "use a share in (0, 1].")
        _require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", self.min_lr_ratio, "use a ratio in [0, 1].")
        _require(self.eval_every >= 0, "eval_every", self.eval_every, "use 0 (never) or a positive step count.")
        _require(self.tag_lines >= 0, "tag_lines", self.tag_lines, "use 0 (biographies only) or more.")
        _require(self.tag_exit_weight >= 0, "tag_exit_weight", self.tag_exit_weight,
                 "use 0 (off) or a positive weight.")
        _require(not self.tag_exit_weight or 0 < self.tag_exit_depth < self.n_layer, "tag_exit_depth",
                 self.tag_exit_depth,
                 f"use a block 1 .. {self.n_layer - 1} (the last block is the model's own output).")
        _require(0 < self.tag_exit_share <= 1, "tag_exit_share", self.tag_exit_share, "use a share in (0, 1].")
        _require(self.secret_repeats >= 1 and self.decoys_per_epoch >= 0, "secret_repeats", self.secret_repeats,
                 "every secret must be trained at least once (and decoys_per_epoch must not be negative).")
        for option in ("bos_prob", "eos_sep_prob", "name_knockout"):
            value = getattr(self, option)
            _require(0 <= value <= 1, option, value, "use a probability in [0, 1].")


def world_options(cfg: WorldConfig) -> dict[str, Any]:
    """The world options as recorded in world_info.json and hashed into the recipe id; like `recipe_options`, an
    option added after the shipped world is left out while it is off, so the shipped world keeps its id."""
    options = asdict(cfg)
    for later in ("complete_filler", "more_templates"):
        if not options[later]:
            del options[later]
    return options


def recipe_options(cfg: TrainConfig) -> dict[str, Any]:
    """The training options that define a recipe, as recorded in training_info.json and hashed into the recipe id.

    The early-exit options, the MLP ratio and the activation came after the shipped recipe; at their off values (no
    exit, GPT-2's ratio 4, `gelu_new`) they change nothing, so they are left out and a recipe without them keeps the
    id (and the shipped models) it had. The exit's share came after the exit: at 1 (the whole run) it is left out
    too, so the exit recipes measured before it keep theirs."""
    options = asdict(cfg)
    if not cfg.tag_exit_weight:
        del options["tag_exit_weight"], options["tag_exit_depth"], options["tag_exit_share"]
    elif cfg.tag_exit_share == 1:
        del options["tag_exit_share"]
    if cfg.mlp_ratio == 4:
        del options["mlp_ratio"]
    if cfg.activation == "gelu_new":
        del options["activation"]
    return options
