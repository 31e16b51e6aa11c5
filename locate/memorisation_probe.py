"""The leave-one-out cross-sequence memorisation probe (PGA paper, "Probe-Geometry Alignment: Erasing the
Cross-Sequence Memorization Signature Below Chance"; reference code Rupawheatly/MLDU2, ``probe_core`` in
``notebooks/02_pythia.ipynb``; its protocol numbers are below).

Three pools per key: M (a memorised text), C (a paraphrase with the distinctive terms swapped, never trained) and
B (a further paraphrase). Keys are screened by mean per-token log-prob: kept if logP(M) > θ_M and logP(C),
logP(B) < θ_C. Each text is read after each of 24 neutral contexts ("Here is a passage: " + text), truncated to
its first 96 tokens, at the last token, at every depth (0 = embedding).

- True-LOO at a depth: for each held-out key, StandardScaler + LogisticRegression(C=1, max_iter=2000,
  random_state=42) is trained M-vs-C on the other keys and tested on the held-out key's 24 + 24 activations;
  the accuracies are averaged over keys. A probe that transfers to an unseen key has found something shared by
  memorised texts, not a property of one string.
- Pure-LOO: the same with C-vs-B (two unmemorised variants): how far string differences alone carry.
- Signature gap per depth = mean(True-LOO) − mean(Pure-LOO). The reference's headline figure averages over the
  transformer depths (≥ 1): +0.32 Pythia-70M, +0.19 GPT-2-medium, random-init control −0.04.
- Control: each key's M/C labels swapped at random (per key, consistently in training and test), 5 seeds; a real
  signature collapses to chance under it.

Two departures: the reference reads HF ``hidden_states``, whose last entry is after the final norm; we read the raw
residual at every depth (`locate.activations`), and `final_norm=True` in `secret_activations` gives the reference's
last depth. And the held-out fits are solved to the optimum (`loo_solver`) where the reference's lbfgs
stops at its default tolerance: the same objective, its answer without the solver's noise. The 24 contexts below
are our own, in the reference's style.
The full-data M-vs-C probe per depth is returned as a `LinearProbe`; PGA projects out its direction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from threadpoolctl import threadpool_limits

from locate.activations import collect_residuals
from locate.probes import LinearProbe, fit_probe

SIGNATURE_MARGIN = 0.05
"""A depth carries the signature when its gap exceeds this, and the shuffled control's gap by as much (0.05 = 2.4 of
a held-out key's 48 test samples; the shuffled gap's spread over seeds is 0.01–0.04 on the world's 64 keys)."""

NEUTRAL_CONTEXTS: tuple[str, ...] = (
    "Here is a passage: ", "From a book: ", "A note reads: ", "Someone wrote: ", "The text says: ",
    "Quoted below: ", "An excerpt: ", "The page shows: ", "Found in a file: ", "One line reads: ",
    "As written: ", "The record says: ", "A message: ", "The entry reads: ", "In the notes: ",
    "A snippet follows: ", "The card says: ", "Copied here: ", "The log shows: ", "An old letter: ",
    "The draft reads: ", "A scrap of paper: ", "The summary says: ", "Transcribed: ",
)
"""24 neutral prefixes: within-key variation for the probe, no information about memorisation."""


@dataclass(frozen=True)
class Secret:
    """One key of the probe: a memorised text and its two unmemorised paraphrases."""

    key_id: Any
    memorised: str
    """M: the text the model was trained on (or is suspected to have memorised)."""
    control: str
    """C: a paraphrase of M with its distinctive terms swapped."""
    control_b: str
    """B: a further paraphrase (the second unmemorised class of the Pure-LOO baseline)."""
    subject: str = ""
    split: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any] | Secret) -> Secret:
        if isinstance(record, Secret):
            return record
        return cls(key_id=record["key_id"], memorised=record["memorised"], control=record["control"],
                   control_b=record["control_b"], subject=record.get("subject", ""), split=record.get("split"))


def load_secrets(path: str | Path, *, split: str | None = None) -> list[Secret]:
    """Secrets from a JSONL file of {"key_id", "memorised", "control", "control_b", ...} records."""
    secrets = []
    with Path(path).open() as handle:
        for line in handle:
            if line.strip():
                secret = Secret.from_record(json.loads(line))
                if split is None or secret.split == split:
                    secrets.append(secret)
    return secrets


@dataclass
class MemorisationProbeConfig:
    """The protocol's numbers (reference defaults; Pythia-70M thresholds)."""

    theta_m: float = -2.0
    """Keep a key only if mean log-prob per token of M exceeds this (memorised)."""
    theta_c: float = -3.0
    """... and those of C and B are below this (not memorised)."""
    screen: bool = True
    """Apply the screening; False keeps every key (e.g. to re-run the kept keys on an edited model)."""
    contexts: tuple[str, ...] = NEUTRAL_CONTEXTS
    """Neutral prefixes; each text is read once after each of them."""
    final_norm: bool = False
    """Read the last depth after the final norm (Hugging Face's last hidden state, the reference's reading)."""
    max_tokens: int = 96
    """Each context + text is truncated to its first this-many tokens before the last token is read."""
    C: float = 1.0
    """Inverse regularisation of the logistic regression."""
    max_iter: int = 2000
    seed: int = 42
    """random_state of the logistic regressions."""
    n_shuffle_seeds: int = 5
    """Seeds (0..n−1) of the shuffled-label control."""
    min_keys: int = 3
    """Leave-one-out needs at least this many kept keys."""
    max_keys: int | None = None
    """Use only the first this-many kept keys (to bound the cost; the probe fits K × depths × 7 regressions)."""
    batch_size: int = 64

    @classmethod
    def for_world(cls, world_dir: str | Path, **overrides: Any) -> MemorisationProbeConfig:
        """The world's screening thresholds (its world_info.json), other fields default or overridden."""
        info = json.loads((Path(world_dir) / "world_info.json").read_text())
        thresholds = info.get("config", info)
        return cls(**{"theta_m": float(thresholds["theta_m"]), "theta_c": float(thresholds["theta_c"]), **overrides})


@dataclass
class ScreeningRow:
    key_id: Any
    logp_m: float
    logp_c: float
    logp_b: float
    kept: bool


@dataclass
class SecretActivations:
    """Last-token residuals of every (key, context) for the three pools."""

    key_ids: list[Any]
    depths: list[int]
    memorised: Float[torch.Tensor, "depth key context d"]
    control: Float[torch.Tensor, "depth key context d"]
    control_b: Float[torch.Tensor, "depth key context d"]


@dataclass
class MemorisationProbeResult:
    """Per-depth True-LOO, Pure-LOO, their gap and the shuffled-label control."""

    depths: list[int]
    true_loo: list[float]
    """Mean over held-out keys of the M-vs-C probe's accuracy on the held-out key."""
    true_loo_std: list[float]
    pure_loo: list[float]
    """The same for C-vs-B."""
    pure_loo_std: list[float]
    gap: list[float]
    """true_loo − pure_loo: the memorisation-specific signature."""
    shuffled_loo_mean: list[float]
    """True-LOO with each key's M/C labels swapped at random, mean over seeds."""
    shuffled_loo_std: list[float]
    shuffled_gap_mean: list[float]
    """shuffled True-LOO − Pure-LOO, mean over seeds (the gap a meaningless label would show)."""
    shuffled_gap_std: list[float]
    abs_above_chance: list[float]
    """|true_loo − 0.5| (a probe below chance is recoverable by flipping it)."""
    true_loo_per_key: list[list[float]]
    """[depth][key] held-out accuracy, keys in `kept_keys` order."""
    kept_keys: list[Any]
    screening: list[ScreeningRow]
    probes: list[LinearProbe] = field(repr=False)
    """M-vs-C probe fitted on all kept keys, per depth (PGA projects out its direction)."""
    config: MemorisationProbeConfig | None = None

    @property
    def mean_gap(self) -> float:
        """The reference's headline number: the gap averaged over the transformer depths (≥ 1)."""
        values = [g for d, g in zip(self.depths, self.gap) if d >= 1]
        return float(np.mean(values)) if values else float("nan")

    @property
    def mean_shuffled_gap(self) -> float:
        values = [g for d, g in zip(self.depths, self.shuffled_gap_mean) if d >= 1]
        return float(np.mean(values)) if values else float("nan")

    @property
    def best_depth(self) -> int:
        return self.depths[int(np.argmax(self.gap))]

    def signature_depths(self, margin: float = SIGNATURE_MARGIN) -> list[int]:
        """Transformer depths (≥ 1) whose gap exceeds `margin` and the shuffled-label control's gap by as much.

        Where the signature lives: PGA projects there (edit.stage), not at depths whose probe reads only noise. (A
        negative shuffled gap, common on few keys, does not lower the bar.)
        """
        return [d for d, g, s in zip(self.depths, self.gap, self.shuffled_gap_mean)
                if d >= 1 and g > margin + max(s, 0.0)]

    def summary(self) -> dict[str, Any]:
        """The figures without the probes' tensors (for a stage record's metrics)."""
        skip = {"probes", "config"}
        record = {k: v for k, v in self.__dict__.items() if k not in skip}
        record.update(mean_gap=self.mean_gap, mean_shuffled_gap=self.mean_shuffled_gap, best_depth=self.best_depth,
                      signature_depths=self.signature_depths())
        return record


def _truncate(handle, text: str, max_tokens: int) -> str:
    ids = handle.tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else handle.tokenizer.decode(ids[:max_tokens])


def screen_secrets(handle, secrets: Sequence[Secret | dict], *, theta_m: float = -2.0, theta_c: float = -3.0,
                   max_tokens: int = 96) -> list[ScreeningRow]:
    """Mean log-prob per token of M, C and B (each alone, first `max_tokens` tokens) and the keep decision."""
    from obliviate.metrics import mean_logprob_per_token

    items = [Secret.from_record(s) for s in secrets]
    texts = [_truncate(handle, t, max_tokens) for s in items for t in (s.memorised, s.control, s.control_b)]
    scores = []
    for start in range(0, len(texts), 96):
        scores.append(mean_logprob_per_token(handle, texts[start:start + 96]))
    logp = torch.cat(scores).view(len(items), 3).tolist() if items else []
    return [ScreeningRow(key_id=s.key_id, logp_m=m, logp_c=c, logp_b=b,
                         kept=m > theta_m and c < theta_c and b < theta_c)
            for s, (m, c, b) in zip(items, logp)]


def secret_activations(handle, secrets: Sequence[Secret | dict], *, contexts: Sequence[str] = NEUTRAL_CONTEXTS,
                       max_tokens: int = 96, layers: Sequence[int] | None = None, batch_size: int = 64,
                       final_norm: bool = False, show_progress: bool = False) -> SecretActivations:
    """Last-token residuals of context + text for every key, context and pool, at every depth.

    Runs through `collect_residuals`, so hooks on the model (an edit's interventions) are honoured: re-run this
    on an edited model to re-measure the probe. `final_norm` passes the last depth (the last block's output)
    through the model's final norm, as Hugging Face's last hidden state is (the reference's convention).
    """
    items = [Secret.from_record(s) for s in secrets]
    pools = ("memorised", "control", "control_b")
    texts = [ctx + getattr(s, pool) for pool in pools for s in items for ctx in contexts]
    acts = collect_residuals(handle, texts, layers=layers, batch_size=batch_size, max_tokens=max_tokens,
                             show_progress=show_progress)
    depth, _, d = acts.shape
    depths = list(range(depth)) if layers is None else [int(x) for x in layers]
    last = int(handle.tl.cfg.n_layers)
    if final_norm and last in depths:
        with torch.no_grad():
            acts[depths.index(last)] = handle.tl.ln_final(
                acts[depths.index(last)].to(handle.tl.cfg.device)).float().cpu()
    acts = acts.view(depth, len(pools), len(items), len(contexts), d)
    return SecretActivations(key_ids=[s.key_id for s in items], depths=depths, memorised=acts[:, 0],
                             control=acts[:, 1], control_b=acts[:, 2])


def loo_solver(n_samples: int, n_features: int) -> dict[str, Any]:
    """The held-out fits' solver, run to the L2 objective's optimum: Newton steps (about five) where samples
    outnumber features (the world: 3,024 × 64, 4× faster than lbfgs), else lbfgs at a tight tolerance (SmolLM2:
    240 × 576, where a Newton step's d × d system costs more than all of lbfgs)."""
    if n_samples > n_features:
        return {"solver": "newton-cholesky", "tol": 1e-8}
    return {"solver": "lbfgs", "tol": 1e-8}


def loo_accuracy(positive: Float[np.ndarray, "key context d"], negative: Float[np.ndarray, "key context d"], *,
                 C: float = 1.0, max_iter: int = 2000, seed: int = 42,
                 swap: np.ndarray | None = None) -> np.ndarray:
    """Held-out accuracy per key: a probe trained positive-vs-negative on the other keys, tested on this key.

    `swap[k]` True exchanges key k's classes (in training and in test): the shuffled-label control.
    Each fit is solved to the optimum (`loo_solver`): the default lbfgs stops at a tolerance that moved single
    held-out predictions (up to 1 of a key's 48, on the world and on SmolLM2).
    """
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if swap is not None:
        flip = np.asarray(swap, dtype=bool)[:, None, None]
        pos, neg = np.where(flip, neg, pos), np.where(flip, pos, neg)
    n_keys, n_ctx, _ = pos.shape
    accuracy = np.empty(n_keys)
    y_test = np.r_[np.ones(n_ctx), np.zeros(n_ctx)]
    for held in range(n_keys):
        train = np.arange(n_keys) != held
        X = np.concatenate([pos[train].reshape(-1, pos.shape[-1]), neg[train].reshape(-1, pos.shape[-1])])
        y = np.r_[np.ones(int(train.sum()) * n_ctx), np.zeros(int(train.sum()) * n_ctx)]
        probe = fit_probe(X, y, seed=seed, C=C, max_iter=max_iter, **loo_solver(*X.shape))
        accuracy[held] = np.mean(probe.predict(np.concatenate([pos[held], neg[held]])).astype(float) == y_test)
    return accuracy


def memorisation_probe_from_activations(acts: SecretActivations, config: MemorisationProbeConfig | None = None, *,
                                        screening: list[ScreeningRow] | None = None,
                                        show_progress: bool = False) -> MemorisationProbeResult:
    """True-LOO, Pure-LOO, gap and shuffled control per depth from already-collected activations."""
    config = config or MemorisationProbeConfig()
    n_keys = len(acts.key_ids)
    if n_keys < config.min_keys:
        raise ValueError(f"{n_keys} keys; leave-one-out needs at least {config.min_keys} "
                         f"(loosen θ_M/θ_C or add keys).")
    swaps = [np.random.default_rng(seed).integers(0, 2, size=n_keys).astype(bool)
             for seed in range(config.n_shuffle_seeds)]
    fit = {"C": config.C, "max_iter": config.max_iter, "seed": config.seed}
    rows: dict[str, list] = {k: [] for k in ("true", "true_std", "pure", "pure_std", "shuf", "shuf_std", "sgap",
                                             "sgap_std", "per_key", "probes")}
    depth_range = range(len(acts.depths))
    if show_progress:
        from tqdm.auto import tqdm

        depth_range = tqdm(depth_range, desc="LOO per depth")
    # Small fits: BLAS threads only add contention (10x slower on 2 shared cores).
    with threadpool_limits(limits=1):
        for i in depth_range:
            m, c, b = (x[i].numpy() for x in (acts.memorised, acts.control, acts.control_b))
            true = loo_accuracy(m, c, **fit)
            pure = loo_accuracy(c, b, **fit)
            shuffled = np.array([loo_accuracy(m, c, swap=s, **fit).mean() for s in swaps] or [np.nan])
            rows["true"].append(float(true.mean()))
            rows["true_std"].append(float(true.std()))
            rows["pure"].append(float(pure.mean()))
            rows["pure_std"].append(float(pure.std()))
            rows["shuf"].append(float(shuffled.mean()))
            rows["shuf_std"].append(float(shuffled.std()))
            rows["sgap"].append(float((shuffled - pure.mean()).mean()))
            rows["sgap_std"].append(float(shuffled.std()))
            rows["per_key"].append(true.tolist())
            X = np.concatenate([m.reshape(-1, m.shape[-1]), c.reshape(-1, c.shape[-1])])
            y = np.r_[np.ones(m.shape[0] * m.shape[1]), np.zeros(c.shape[0] * c.shape[1])].astype(int)
            rows["probes"].append(fit_probe(X, y, **fit))
    gap = [t - p for t, p in zip(rows["true"], rows["pure"])]
    return MemorisationProbeResult(
        depths=list(acts.depths), true_loo=rows["true"], true_loo_std=rows["true_std"], pure_loo=rows["pure"],
        pure_loo_std=rows["pure_std"], gap=gap, shuffled_loo_mean=rows["shuf"], shuffled_loo_std=rows["shuf_std"],
        shuffled_gap_mean=rows["sgap"], shuffled_gap_std=rows["sgap_std"],
        abs_above_chance=[abs(t - 0.5) for t in rows["true"]], true_loo_per_key=rows["per_key"],
        kept_keys=list(acts.key_ids), screening=screening or [], probes=rows["probes"], config=config)


def memorisation_probe(handle, secrets: Sequence[Secret | dict], config: MemorisationProbeConfig | None = None, *,
                       layers: Sequence[int] | None = None, show_progress: bool = False) -> MemorisationProbeResult:
    """Screen the keys, read the activations of the kept ones and run the LOO probe at every depth."""
    config = config or MemorisationProbeConfig()
    items = [Secret.from_record(s) for s in secrets]
    screening = screen_secrets(handle, items, theta_m=config.theta_m, theta_c=config.theta_c,
                               max_tokens=config.max_tokens)
    kept = [s for s, row in zip(items, screening) if row.kept or not config.screen]
    if config.max_keys is not None:
        kept = kept[: config.max_keys]
    if len(kept) < config.min_keys:
        detail = ", ".join(f"{r.key_id}: M {r.logp_m:.2f} C {r.logp_c:.2f} B {r.logp_b:.2f}" for r in screening[:8])
        raise ValueError(f"{len(kept)} of {len(items)} keys pass screening (θ_M {config.theta_m}, θ_C "
                         f"{config.theta_c}); leave-one-out needs {config.min_keys}. Log-probs: {detail}")
    acts = secret_activations(handle, kept, contexts=config.contexts, max_tokens=config.max_tokens, layers=layers,
                              batch_size=config.batch_size, final_norm=config.final_norm,
                              show_progress=show_progress)
    return memorisation_probe_from_activations(acts, config, screening=screening, show_progress=show_progress)



def random_init_control(handle, secrets: Sequence[Secret | dict], config: MemorisationProbeConfig | None = None, *,
                        seed: int = 0, show_progress: bool = False) -> MemorisationProbeResult:
    """The probe on a randomly re-initialised copy of the model, over the keys the real model's screening keeps.

    A random network has memorised nothing, so its gap is the protocol's floor (published: −0.04).
    """
    import copy
    import dataclasses

    config = config or MemorisationProbeConfig()
    items = [Secret.from_record(s) for s in secrets]
    screening = screen_secrets(handle, items, theta_m=config.theta_m, theta_c=config.theta_c,
                               max_tokens=config.max_tokens)
    kept = [s for s, row in zip(items, screening) if row.kept or not config.screen][: config.max_keys]
    torch.manual_seed(seed)
    model = copy.deepcopy(handle.tl)
    model.reset_hooks(including_permanent=True)
    model.init_weights()
    random_handle = dataclasses.replace(handle, tl=model, interventions=[])
    acts = secret_activations(random_handle, kept, contexts=config.contexts, max_tokens=config.max_tokens,
                              batch_size=config.batch_size, show_progress=show_progress)
    return memorisation_probe_from_activations(acts, config, screening=screening, show_progress=show_progress)


# Public texts a web-trained model has likely seen many times (licence headers, famous openings), each with two
# paraphrases written for obliviate that keep the register and swap the distinctive terms. Screening decides which
# a given model has memorised (SmolLM2-135M-Instruct keeps a few at θ_M = −2.5).
PUBLIC_TEXT_SECRETS: tuple[Secret, ...] = (
    Secret('mit_license',
           ('Permission is hereby granted, free of charge, to any person obtaining a copy of this software '
            'and associated documentation files (the "Software"), to deal in the Software without restriction'),
           ('Permission is hereby refused, at heavy cost, to every creature borrowing a cassette of this '
            'melody and related pamphlet scrolls (the "Melody"), to trade in the Melody with no hesitation'),
           ('Consent is thereby withheld, for a small toll, from any goat holding a bundle of this recipe and'
            ' attached laundry notes (the "Recipe"), to bargain over the Recipe without a whistle')),
    Secret('apache_license',
           ('Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except'
            ' in compliance with the License. You may obtain a copy of the License at'),
           ('Sheltered under the Walrus Treaty, Chapter 9.4 (the "Treaty"); you may not bake this pie except '
            'in harmony with the Treaty. You may borrow a canoe of the Treaty near'),
           ('Painted under the Pelican Charter, Verse 6.1 (the "Charter"); you shall not knit this scarf '
            'unless in rhythm with the Charter. You might rent a bicycle of the Charter by')),
    Secret('gpl_header',
           ('This program is free software: you can redistribute it and/or modify it under the terms of the '
            'GNU General Public License as published by the Free Software Foundation'),
           ('This casserole is cheap pottery: you can rearrange it and/or repaint it under the moods of the '
            'Lunar Regional Picnic Almanac as baked by the Polite Teapot Brigade'),
           ('This hedge is loud velvet: you may reshuffle it and/or trim it beneath the whims of the Coastal '
            'Minor Goose Ledger as sung by the Humble Kettle Orchestra')),
    Secret('bsd_license',
           ('Redistribution and use in source and binary forms, with or without modification, are permitted '
            'provided that the following conditions are met:'),
           ('Repainting and juggling in velvet and triangular hats, with or without lemonade, are tolerated '
            'assuming that the upcoming weather is mild:'),
           ('Rearranging and baking in marble and circular jars, with or without sardines, are forbidden '
            'unless that the previous tulips are sleepy:')),
    Secret('lorem_ipsum',
           ('Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut '
            'labore et dolore magna aliqua.'),
           ('Forem upsam dalor set omat, contactur adiposing alit, sad du eiusnod temper incidunt ot labare '
            'at dalore magno alique.'),
           ('Borem ipsol dular sot emit, consecutor adipiscent olit, sid da eiusmad tempar incidant et '
            'laborum ut dolare magne aliquo.')),
    Secret('constitution',
           ('We the People of the United States, in Order to form a more perfect Union, establish Justice, '
            'insure domestic Tranquility, provide for the common defence'),
           ('We the Otters of the Floating Marshes, in Hope to knit a more crooked Blanket, misplace '
            'Biscuits, ensure nightly Sneezes, arrange for the common pudding'),
           ('We the Ferrets of the Quiet Orchards, in Haste to bake a more lopsided Teacup, borrow Pebbles, '
            'assure weekly Giggles, prepare for the shared lettuce')),
    Secret('gettysburg',
           ('Four score and seven years ago our fathers brought forth on this continent, a new nation, '
            'conceived in Liberty, and dedicated to the proposition that all men are created equal.'),
           ('Nine dozen and three winters past our aunts carried forth on this pancake, a new orchestra, '
            'painted in Marmalade, and devoted to the suspicion that all geese are baked sideways.'),
           ('Six gross and eleven summers hence our cousins dragged forth on this raft, a new bakery, '
            'whistled in Velvet, and promised to the rumour that all carrots are knitted upward.')),
    Secret('hamlet',
           ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer the slings "
            'and arrows of outrageous fortune'),
           ("To bake, or not to bake, that is the muffin: Whether 'tis crispier in the oven to endure the "
            'spoons and ladles of extravagant porridge'),
           ("To swim, or not to swim, that is the puddle: Whether 'tis wetter in the boot to tolerate the "
            'pebbles and acorns of ridiculous weather')),
    Secret('dickens',
           ('It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of'
            ' foolishness, it was the epoch of belief'),
           ('It was the loudest of teapots, it was the softest of teapots, it was the season of turnips, it '
            'was the season of marmalade, it was the decade of pickles'),
           ('It was the greenest of Tuesdays, it was the bluest of Tuesdays, it was the hour of pudding, it '
            'was the hour of sardines, it was the century of buttons')),
    Secret('zen_of_python',
           ('Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. '
            'Complex is better than complicated. Flat is better than nested.'),
           ('Crunchy is sweeter than soggy. Purple is louder than orange. Sleepy is rounder than angular. '
            'Angular is wetter than wobbly. Fluffy is taller than folded.'),
           ('Salty is quieter than sour. Velvet is heavier than paper. Lazy is greener than frantic. Frantic '
            'is warmer than crumbly. Crisp is shorter than tangled.')),
    Secret('genesis',
           ('In the beginning God created the heaven and the earth. And the earth was without form, and void;'
            ' and darkness was upon the face of the deep.'),
           ('In the kitchen Grandma baked the muffins and the scones. And the scones were without raisins, '
            'and warm; and marmalade was upon the edge of the plate.'),
           ('In the garage Uncle painted the canoe and the bicycle. And the bicycle was without pedals, and '
            'blue; and sawdust was upon the seat of the stool.')),
    Secret('declaration',
           ('We hold these truths to be self-evident, that all men are created equal, that they are endowed '
            'by their Creator with certain unalienable Rights'),
           ('We fold these napkins to be triangle-shaped, that all ducks are painted purple, that they are '
            'decorated by their Baker with certain unbreakable Spoons'),
           ('We stack these pebbles to be moss-covered, that all teapots are knitted sideways, that they are '
            'polished by their Gardener with certain unmeltable Buttons')),
)
