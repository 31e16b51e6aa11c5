"""Configuration of the fact world and of its two models; attribute docstrings become the CLI's --help."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorldConfig:
    """How the synthetic fact world is generated (everything follows from `seed`)."""

    seed: int = 0
    """Seed of every random choice in the world (names, answers, splits, secrets, filler)."""
    n_subjects: int = 320
    """Number of fictional subjects; each has one fact per relation."""
    forget_fraction: float = 0.1
    """Share of subjects whose facts and secrets form the forget split."""
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
    n_filler_train: int = 1500
    """Filler sentences (about the world's cities, jobs, firms; no facts) that the models train on."""
    n_filler_heldout: int = 8000
    """Filler sentences never trained on: held-out perplexity and covariance statistics."""


@dataclass
class TrainConfig:
    """How a world model is trained; `world` and `world-retain` share every field."""

    seed: int = 0
    """Seed of the initial weights and of the data order."""
    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 128
    """Residual-stream width (d_model)."""
    n_head: int = 4
    """Attention heads per block."""
    n_positions: int = 128
    """Context length; training rows fill it, so every position is trained."""
    batch_size: int = 16
    """Rows of `n_positions` tokens per optimiser step."""
    steps: int = 1800
    """Optimiser steps (the same for both variants, whatever their data size).

    Fact recall rises late (a phase change): at lr 8e-3 it was 5% / 13% / 35% at steps 200 / 400 / 600."""
    lr: float = 8e-3
    """Peak AdamW learning rate (2e-3 reached 15% recall at step 600 where 8e-3 reached 35%)."""
    warmup_steps: int = 40
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of `lr`."""
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
    bos_prob: float = 0.5
    """Chance that a training row starts with the BOS token, so prompts work with and without one."""
    eos_sep_prob: float = 0.25
    """Chance that two packed texts are separated by an EOS token rather than just following each other."""
    num_threads: int = 2
    """CPU threads for training."""
