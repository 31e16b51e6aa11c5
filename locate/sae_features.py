"""Sparse-autoencoder features of a fact, with sae-lens: train (or load) an SAE at one hook, then rank its features
for a target by attribution (activation × gradient of the answer logit) and by selectivity (activation on the
target prompts vs on other prompts).

- Published SAEs (online): ``SAE.from_pretrained(release, sae_id)`` — `load_pretrained_sae`; releases are listed
  in sae-lens's ``pretrained_saes.yaml`` (e.g. ``gpt2-small-res-jb`` / ``blocks.8.hook_resid_pre``).
- Offline: `train_sae` trains a sae-lens TrainingSAE (TopK by default) on the handle's activations at one hook.
  Default ("cached"): the corpus's activations are read once through TransformerLens and sae-lens's
  ``SAETrainer`` cycles over them (a CPU cannot afford a fresh model forward per SAE batch). Option "runner":
  sae-lens's ``LanguageModelSAETrainingRunner`` with the handle's model and an in-memory token dataset
  (``datasets.Dataset.from_dict``) — the GPU path. Either way nothing is downloaded; the SAE is saved with sae-lens
  (``save_inference_model``: ``cfg.json`` + ``sae_weights.safetensors``) and returned as reloaded by
  ``SAE.load_from_disk`` — what is measured is what was saved.
- Attribution of feature f to the target: z_f · ∂logit(target)/∂z_f at the read position (the last subject token
  of a fact, or the last token), where the residual there is replaced by decode(z) + (x − decode(encode(x))): the
  forward is unchanged, and the gradient flows through the decoder (Marks et al. 2024, "Sparse Feature Circuits";
  the AtP estimate of zero-ablating f).
- Selectivity: mean activation of f on the target prompts minus its mean on other prompts.
- `ablate_features` zeroes features (keeping the error term) and re-reads the target logit: the check that an
  attribution ranking points at features the prediction depends on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float

from obliviate.facts import Fact
from obliviate.metrics import encode


@dataclass
class SaeTrainConfig:
    """A small SAE trained with sae-lens on a local corpus (sizes fit a CPU in about a minute)."""

    hook_name: str = "blocks.1.hook_resid_post"
    """TransformerLens hook the SAE reads and writes (a residual hook of the handle's model)."""
    architecture: Literal["topk", "standard"] = "topk"
    """sae-lens architecture: TopK (sparsity fixed at k) or standard ReLU + L1."""
    expansion: int = 8
    """d_sae = expansion × d_model."""
    k: int = 32
    """Active features per token (TopK)."""
    l1_coefficient: float = 5.0
    """L1 penalty (standard architecture only)."""
    trainer: Literal["cached", "runner"] = "cached"
    """cached: read the corpus's activations once (up to `activation_tokens`) and train sae-lens's SAETrainer on
    them for several epochs (CPU-friendly); runner: sae-lens's LanguageModelSAETrainingRunner, which runs the
    model afresh for every batch (the GPU path)."""
    activation_tokens: int = 30_000
    """Cached trainer: at most this many distinct tokens' activations are read from the corpus (the model forward
    is the cost: about 20 s per 10k tokens for the world model, 90 s per 10k for SmolLM2-135M, on one CPU core)."""
    training_tokens: int = 300_000
    """Activation samples the SAE is trained on (the cached trainer cycles its tokens as needed)."""
    context_size: int = 64
    """Tokens per sequence fed to the model."""
    skip_first_positions: int = 1
    """Positions dropped from each sequence (the first token's residual is an outlier: an attention sink)."""
    train_batch_size_tokens: int = 1024
    lr: float = 1e-3
    store_batch_size_prompts: int = 16
    n_batches_in_buffer: int = 32
    normalize_activations: Literal["none", "expected_average_only_in"] = "none"
    seed: int = 42


@dataclass
class SaeQuality:
    """Reconstruction figures of an SAE on held-out activations."""

    explained_variance: float
    """1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the tokens."""
    mse: float
    l0: float
    """Mean number of active features per token."""
    dead_fraction: float
    """Share of features never active on these tokens."""
    n_tokens: int


@dataclass
class SaeTrainingResult:
    sae: Any = field(repr=False)
    """The inference SAE (sae_lens.SAE), as reloaded from `path`."""
    path: Path
    config: SaeTrainConfig
    wall_time_s: float
    n_train_texts: int
    quality: SaeQuality | None = None


def load_pretrained_sae(release: str, sae_id: str, device: str = "cpu") -> Any:
    """A published SAE through sae-lens (needs the internet; e.g. ("gpt2-small-res-jb", "blocks.8.hook_resid_pre"))."""
    from sae_lens import SAE

    return SAE.from_pretrained(release, sae_id, device=device)


def load_sae(path: str | Path, device: str = "cpu") -> Any:
    """An SAE saved by sae-lens (cfg.json + sae_weights.safetensors)."""
    from sae_lens import SAE

    return SAE.load_from_disk(str(path), device=device)


def save_sae(sae: Any, path: str | Path) -> Path:
    """Save through sae-lens (inference form for training SAEs); returns the folder."""
    path = Path(path)
    if hasattr(sae, "save_inference_model"):
        sae.save_inference_model(str(path))
    else:
        sae.save_model(str(path))
    return path


def token_dataset(handle, texts: Sequence[str], context_size: int) -> Any:
    """An in-memory tokenised `datasets.Dataset` (column "input_ids") of rows of exactly `context_size` tokens.

    Texts are tokenised one by one and packed back to back (as the world models were trained), each row starting
    with BOS when the handle prepends one; the tail that does not fill a row is dropped.
    """
    from datasets import Dataset

    bos = [handle.tokenizer.bos_token_id] if handle.prepend_bos and handle.tokenizer.bos_token_id is not None else []
    width = context_size - len(bos)
    stream = [i for t in texts for i in handle.tokenizer(t, add_special_tokens=False)["input_ids"]]
    rows = [bos + stream[i:i + width] for i in range(0, len(stream) - width + 1, width)]
    if not rows:
        raise ValueError(f"{len(texts)} texts give {len(stream)} tokens, fewer than one row of {context_size}.")
    return Dataset.from_dict({"input_ids": rows})


def _hook_d_in(handle, hook_name: str) -> int:
    if "hook_resid" in hook_name or hook_name.endswith(("hook_mlp_out", "hook_attn_out")):
        return int(handle.tl.cfg.d_model)
    raise ValueError(f"hook {hook_name!r}: train_sae reads residual-width hooks (hook_resid_*, hook_mlp_out, "
                     f"hook_attn_out).")


def _training_sae_config(config: SaeTrainConfig, d_in: int) -> Any:
    from sae_lens import StandardTrainingSAEConfig, TopKTrainingSAEConfig

    d_sae = config.expansion * d_in
    if config.architecture == "topk":
        return TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=config.k,
                                     normalize_activations=config.normalize_activations)
    return StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=config.l1_coefficient,
                                     normalize_activations=config.normalize_activations)


def _cycled_batches(acts: torch.Tensor, batch_size: int, seed: int):
    """Shuffled batches of cached activations, epoch after epoch (sae-lens's DataProvider: an iterator)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for start in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield acts[order[start:start + batch_size]]


def _train_cached(handle, texts: Sequence[str], config: SaeTrainConfig, d_in: int, show_progress: bool) -> Any:
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import TrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    acts = hook_activations(handle, texts, config.hook_name, skip_first_positions=config.skip_first_positions,
                            max_total_tokens=config.activation_tokens)
    if acts.shape[0] < config.train_batch_size_tokens:
        raise ValueError(f"{acts.shape[0]} activation tokens, fewer than one batch of "
                         f"{config.train_batch_size_tokens}; give more text.")
    torch.manual_seed(config.seed)
    sae = TrainingSAE.from_dict(_training_sae_config(config, d_in).to_dict())
    trainer_cfg = SAETrainerConfig(total_training_samples=config.training_tokens,
                                   train_batch_size_samples=config.train_batch_size_tokens, lr=config.lr,
                                   lr_end=config.lr / 10,
                                   device=str(handle.tl.cfg.device), n_batches_for_norm_estimate=20,
                                   logger=LoggingConfig(log_to_wandb=False))
    provider = _cycled_batches(acts.to(handle.tl.cfg.device), config.train_batch_size_tokens, config.seed)
    if show_progress:
        return SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider).fit()
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # sae-lens always draws a tqdm bar
        return SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider).fit()


def _train_with_runner(handle, texts: Sequence[str], config: SaeTrainConfig, d_in: int, show_progress: bool) -> Any:
    import logging

    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig

    runner_cfg = LanguageModelSAERunnerConfig(
        sae=_training_sae_config(config, d_in), model_name=handle.name, hook_name=config.hook_name,
        dataset_path="in-memory", is_dataset_tokenized=True, streaming=False, context_size=config.context_size,
        seqpos_slice=(config.skip_first_positions, None), training_tokens=config.training_tokens,
        train_batch_size_tokens=config.train_batch_size_tokens,
        store_batch_size_prompts=config.store_batch_size_prompts,
        n_batches_in_buffer=config.n_batches_in_buffer, prepend_bos=handle.prepend_bos,
        sequence_separator_token=None, device=str(handle.tl.cfg.device), lr=config.lr, seed=config.seed,
        output_path=None, checkpoint_path=None, n_checkpoints=0, logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=20, n_eval_batches=1, eval_batch_size_prompts=4, verbose=show_progress)
    torch.manual_seed(config.seed)
    level = logging.getLogger("sae_lens").level
    logging.getLogger("sae_lens").setLevel(logging.ERROR)  # override_model/override_dataset warnings are expected
    try:
        runner = LanguageModelSAETrainingRunner(runner_cfg, override_dataset=token_dataset(
            handle, texts, config.context_size), override_model=handle.tl)
        return runner.run()
    finally:
        logging.getLogger("sae_lens").setLevel(level)


def train_sae(handle, texts: Sequence[str], config: SaeTrainConfig | None = None, *, output_path: str | Path,
              heldout_texts: Sequence[str] | None = None, show_progress: bool = False) -> SaeTrainingResult:
    """Train an SAE with sae-lens at `config.hook_name` of the handle's TL model on `texts`; save it with sae-lens
    and return it as reloaded by ``SAE.load_from_disk``. `heldout_texts` (never trained on) give `quality`."""
    config = config or SaeTrainConfig()
    d_in = _hook_d_in(handle, config.hook_name)
    start = time.perf_counter()
    if config.trainer == "cached":
        trained = _train_cached(handle, texts, config, d_in, show_progress)
    elif config.trainer == "runner":
        trained = _train_with_runner(handle, texts, config, d_in, show_progress)
    else:
        raise ValueError(f"trainer={config.trainer!r}; use 'cached' or 'runner'.")
    wall = time.perf_counter() - start
    metadata = trained.cfg.metadata
    metadata.model_name, metadata.hook_name = handle.name, config.hook_name
    metadata.prepend_bos, metadata.context_size = handle.prepend_bos, config.context_size
    metadata.dataset_path = "in-memory (obliviate.locate.sae_features)"
    save_sae(trained, output_path)
    sae = load_sae(output_path, device=str(handle.tl.cfg.device))
    quality = sae_quality(handle, sae, heldout_texts) if heldout_texts else None
    return SaeTrainingResult(sae=sae, path=Path(output_path), config=config, wall_time_s=wall,
                             n_train_texts=len(texts), quality=quality)


def hook_name_of(sae: Any) -> str:
    return str(sae.cfg.metadata.hook_name)


@torch.no_grad()
def hook_activations(handle, texts: Sequence[str], hook_name: str, *, skip_first_positions: int = 1,
                     max_tokens: int | None = None, max_total_tokens: int | None = None,
                     batch_size: int = 32) -> Float[torch.Tensor, "tokens d"]:
    """Every real token's activation at `hook_name` (padding and each text's first positions left out), for the
    texts in order until `max_total_tokens` are read."""
    model = handle.tl
    rows = [encode(handle, t)[:max_tokens] for t in texts]
    rows = [r for r in rows if len(r) > skip_first_positions]
    pad_id = handle.tokenizer.pad_token_id or 0
    layer = int(hook_name.split(".")[1]) if hook_name.startswith("blocks.") else None
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        tokens = torch.full((len(chunk), max(len(r) for r in chunk)), pad_id, dtype=torch.long)
        for i, row in enumerate(chunk):
            tokens[i, : len(row)] = torch.tensor(row)
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=[hook_name],
                                        stop_at_layer=None if layer is None else layer + 1)
        acts = cache[hook_name]
        for i, row in enumerate(chunk):
            out.append(acts[i, skip_first_positions:len(row)].float().cpu())
        if max_total_tokens is not None and sum(len(o) for o in out) >= max_total_tokens:
            break
    stacked = torch.cat(out)
    return stacked if max_total_tokens is None else stacked[:max_total_tokens]


@torch.no_grad()
def sae_quality(handle, sae: Any, texts: Sequence[str], *, skip_first_positions: int = 1) -> SaeQuality:
    """Explained variance, MSE, L0 and dead share of `sae` on the texts' activations at its hook."""
    x = hook_activations(handle, texts, hook_name_of(sae), skip_first_positions=skip_first_positions)
    z = sae.encode(x.to(sae.W_dec.device, sae.W_dec.dtype))
    x_hat = sae.decode(z).float().cpu()
    residual = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    active = (z > 0).float().cpu()
    return SaeQuality(explained_variance=float(1 - residual / total), mse=float(((x - x_hat) ** 2).mean()),
                      l0=float(active.sum(-1).mean()), dead_fraction=float((active.sum(0) == 0).float().mean()),
                      n_tokens=int(x.shape[0]))


def _read_positions(handle, facts_or_prompts: Sequence[Fact | str], position: Literal["subject", "last"]) -> list[int]:
    if position == "last":
        return [len(encode(handle, p.text if isinstance(p, Fact) else p)) - 1 for p in facts_or_prompts]
    if not all(isinstance(p, Fact) for p in facts_or_prompts):
        raise ValueError("position='subject' needs Facts (the subject's span); pass position='last' for strings.")
    from locate.activations import last_subject_token_positions

    return last_subject_token_positions(handle, facts_or_prompts)  # type: ignore[arg-type]


def _sae_forward(handle, sae: Any, texts: Sequence[str], positions: Sequence[int], targets: Sequence[int], *,
                 edit=None, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Target logits at each text's last token, with the hook's activation at `positions` routed through the SAE.

    The activation there becomes decode(z') + error, error = x − decode(z) (so z' = z leaves the forward
    unchanged); `edit(z)` returns z' (e.g. features zeroed). Returns (logits, z) with z a leaf when `grad`.
    """
    model = handle.tl
    rows = [encode(handle, t) for t in texts]
    pad_id = handle.tokenizer.pad_token_id or 0
    tokens = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    index = torch.arange(len(rows))
    pos = torch.tensor(list(positions))
    captured: dict[str, torch.Tensor] = {}

    def hook(activation: torch.Tensor, hook=None) -> torch.Tensor:
        x = activation[index, pos]
        with torch.no_grad():
            z_clean = sae.encode(x.to(sae.W_dec.dtype))
            error = x - sae.decode(z_clean).to(x.dtype)
        z = z_clean.clone().requires_grad_(grad)
        captured["z"] = z
        z_used = edit(z) if edit is not None else z
        patched = activation.clone()
        patched[index, pos] = sae.decode(z_used).to(x.dtype) + error
        return patched

    with torch.set_grad_enabled(grad):
        logits = model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=[(hook_name_of(sae), hook)])
        last = torch.tensor([len(r) - 1 for r in rows])
        target_logits = logits[index, last, torch.tensor(list(targets))]
    return target_logits, captured["z"]


@dataclass
class FeatureRanking:
    """SAE features of one target, ranked."""

    hook_name: str
    position: str
    features: list[int]
    """Feature ids, best first."""
    scores: list[float]
    activations: list[float]
    """Each listed feature's activation on the target (mean over prompts)."""


def feature_attribution(handle, sae: Any, prompts: Sequence[Fact | str], targets: Sequence[str] | None = None, *,
                        position: Literal["subject", "last"] = "subject", top_k: int = 20,
                        ) -> tuple[FeatureRanking, Float[torch.Tensor, "n d_sae"]]:
    """Rank features by z_f · ∂logit(target)/∂z_f at the read position, averaged over the prompts.

    `prompts` are Facts (target defaults to each fact's target_true) or strings with `targets`. Returns the
    ranking and the per-prompt attribution matrix.
    """
    texts = [p.text if isinstance(p, Fact) else p for p in prompts]
    if targets is None:
        if not all(isinstance(p, Fact) for p in prompts):
            raise ValueError("give `targets` for string prompts.")
        targets = [p.target_true for p in prompts]  # type: ignore[union-attr]
    answer_ids = [handle.answer_token(t) for t in targets]
    positions = _read_positions(handle, prompts, position)
    logits, z = _sae_forward(handle, sae, texts, positions, answer_ids, grad=True)
    # autograd.grad, not backward: nothing accumulates in the model's parameters' .grad
    (grad_z,) = torch.autograd.grad(logits.sum(), z)
    attribution = (z * grad_z).detach().float().cpu()
    mean = attribution.mean(0)
    order = torch.argsort(mean, descending=True)[:top_k]
    z_mean = z.detach().float().cpu().mean(0)
    ranking = FeatureRanking(hook_name=hook_name_of(sae), position=position, features=order.tolist(),
                             scores=mean[order].tolist(), activations=z_mean[order].tolist())
    return ranking, attribution


@torch.no_grad()
def feature_activations(handle, sae: Any, prompts: Sequence[Fact | str], *,
                        position: Literal["subject", "last"] = "subject") -> Float[torch.Tensor, "n d_sae"]:
    """Feature activations of each prompt at the read position."""
    from locate.activations import collect_at_hooks

    texts = [p.text if isinstance(p, Fact) else p for p in prompts]
    acts = collect_at_hooks(handle, texts, [hook_name_of(sae)], positions=_read_positions(handle, prompts, position))
    return sae.encode(acts[0].to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu()


def feature_selectivity(handle, sae: Any, target_prompts: Sequence[Fact | str], other_prompts: Sequence[Fact | str],
                        *, position: Literal["subject", "last"] = "subject", top_k: int = 20) -> FeatureRanking:
    """Rank features by mean activation on the target prompts minus mean activation on the other prompts."""
    on = feature_activations(handle, sae, target_prompts, position=position).mean(0)
    off = feature_activations(handle, sae, other_prompts, position=position).mean(0)
    score = on - off
    order = torch.argsort(score, descending=True)[:top_k]
    return FeatureRanking(hook_name=hook_name_of(sae), position=position, features=order.tolist(),
                          scores=score[order].tolist(), activations=on[order].tolist())


@torch.no_grad()
def ablate_features(handle, sae: Any, prompts: Sequence[Fact | str], features: Sequence[int],
                    targets: Sequence[str] | None = None, *,
                    position: Literal["subject", "last"] = "subject") -> Float[torch.Tensor, " n"]:
    """Target logit with `features` zeroed at the read position (the SAE's error term kept)."""
    texts = [p.text if isinstance(p, Fact) else p for p in prompts]
    if targets is None:
        targets = [p.target_true for p in prompts]  # type: ignore[union-attr]
    answer_ids = [handle.answer_token(t) for t in targets]
    positions = _read_positions(handle, prompts, position)
    chosen = torch.tensor(list(features), dtype=torch.long)

    def zero(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, chosen] = 0
        return z

    logits, _ = _sae_forward(handle, sae, texts, positions, answer_ids, edit=zero if len(chosen) else None)
    return logits.float().cpu()


@dataclass
class FactFeatureReport:
    """Top SAE features of one fact, by attribution and by selectivity."""

    case_id: int
    subject: str
    target: str
    by_attribution: FeatureRanking
    by_selectivity: FeatureRanking
    overlap: list[int]
    """Features in both top lists."""


def fact_features(handle, sae: Any, fact: Fact, others: Sequence[Fact], *, top_k: int = 20,
                  position: Literal["subject", "last"] = "subject") -> FactFeatureReport:
    """Attribution ranking on the fact (its prompt and paraphrases that contain the subject) and selectivity
    against other facts of the same relation."""
    prompts: list[Fact] = [fact]
    attribution, _ = feature_attribution(handle, sae, prompts, position=position, top_k=top_k)
    selectivity = feature_selectivity(handle, sae, prompts, list(others), position=position, top_k=top_k)
    overlap = [f for f in attribution.features if f in set(selectivity.features)]
    return FactFeatureReport(case_id=fact.case_id, subject=fact.subject, target=fact.target_true,
                             by_attribution=attribution, by_selectivity=selectivity, overlap=overlap)
