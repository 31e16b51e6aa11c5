"""Tuned lens: decode intermediate states through affine translators fitted on the BASE model, then its head.

Belrose et al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens" (reference
AlignmentResearch/tuned-lens, ``tuned_lens/nn/lenses.py`` ``TunedLens``): one affine translator per depth, added
residually (h + A_d h + b_d) and initialised at zero — the identity, i.e. the logit lens — fitted to minimise
KL(final-layer distribution ‖ lens distribution at that depth) over text; the last depth needs no translator. The
logit lens reads a depth as if it were the last, which misreads the early and middle depths where the basis has
not yet turned into the unembedding's; the translators undo that drift, so an answer stored in the middle of the
network is read where the logit lens sees noise.

Here the translators are fitted on the *base* model (the auditor's trusted model) over its retained facts' text
(each fact's prompt completed by its answer — never a target, never a target's subject; the stage's retain split),
every non-padding position, all depths at once (the sum of per-depth KLs), then applied to the audited model's
residuals and decoded with the base's final norm and unembedding (audit/base_lens.py). The oracle is attacked the
same way. Deviations from the reference: Adam instead of SGD with Nesterov momentum, and a few hundred steps on
the small retain corpus, both because the models here are small and the fit must stay within seconds.

The fitted lens is cached per base model (a digest of its weights, the training text and the fitting settings) as
safetensors under ``obliviate.paths.cache_subdir("lenses")``, written atomically and sealed, so it is fitted once.

Scores, variants and details are the logit-lens attack's (audit/logit_lens_attack.py): the best p(answer) over the
attacked layers, or 1 when the answer lands in the lens's bottom-k at one of them.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from audit.attack_result import AttackContext, AttackResult, fact_sentence, retain_texts
from audit.base_lens import check_same_width
from audit.logit_lens_attack import Decoder, LogitLensConfig, head_logits, run_logit_lens
from obliviate.facts import Fact
from obliviate.metrics import encode
from obliviate.registry import ATTACKS

CACHE_VERSION = "1"


@dataclass(frozen=True)
class TunedLensConfig:
    """How the translators are fitted and which layers the lens reads."""

    k: int = 5
    """Top-k / bottom-k window (as the logit-lens attack)."""
    layers: tuple[int, ...] | None = None
    """Blocks whose output residual is decoded (None: all)."""
    steps: int = 300
    """Adam steps of the translators' fit (all depths together)."""
    lr: float = 1e-3
    text_batch: int = 32
    """Texts per fitting step."""
    max_texts: int = 2000
    """At most this many retained-fact texts (a seeded sample) to fit on."""
    seed: int = 0
    cache: bool = True
    """Read / write the fitted lens in the cache (False: fit every time, write nothing)."""
    batch_size: int = 32
    min_gap: float = 0.05
    """R is undefined when |b − u| is below this (b, u: top-1 of base and of the attacked handle, as 0/1)."""

    def lens(self) -> LogitLensConfig:
        return LogitLensConfig(k=self.k, layers=self.layers, batch_size=self.batch_size, min_gap=self.min_gap)


@dataclass(frozen=True)
class TunedLens:
    """Affine translators of depths 0 … L − 1 (depth L, the last block's output, is read as is)."""

    weight: Float[torch.Tensor, "layer d_model d_model"]
    bias: Float[torch.Tensor, "layer d_model"]

    @classmethod
    def identity(cls, n_layers: int, d_model: int) -> TunedLens:
        """Zero translators: the logit lens (the reference's initialisation)."""
        return cls(torch.zeros(n_layers, d_model, d_model), torch.zeros(n_layers, d_model))

    def translate(self, resid: Float[torch.Tensor, "depth *batch d_model"]
                  ) -> Float[torch.Tensor, "depth *batch d_model"]:
        """h + A_d h + b_d at depths 0 … L − 1 (depth on the first axis); the last depth unchanged."""
        n = self.weight.shape[0]
        if resid.shape[0] != n + 1:
            raise ValueError(f"tuned lens: {resid.shape[0]} depths given, the lens has {n + 1}.")
        inner = resid[:n]
        shape = inner.shape
        flat = inner.reshape(n, -1, shape[-1])
        moved = flat + torch.baddbmm(self.bias[:, None, :].to(flat), flat, self.weight.transpose(1, 2).to(flat))
        return torch.cat([moved.reshape(shape), resid[n:]])

    def decoder(self, base: Any) -> Decoder:
        """Translate, then the base model's final norm and unembedding."""
        return lambda resid: head_logits(base.tl, self.translate(resid.to(base.tl.cfg.device)))


def lens_texts(facts: Sequence[Fact], max_texts: int, seed: int) -> list[str]:
    """Each fact's prompt completed by its answer (the world's cloze sentence), a seeded sample of `max_texts`."""
    texts = [fact_sentence(fact) for fact in facts]
    if len(texts) > max_texts:
        texts = random.Random(seed).sample(texts, max_texts)
    return texts


def _rows(handle: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids and the mask of real positions."""
    ids = [encode(handle, text)[: int(handle.tl.cfg.n_ctx)] for text in texts]
    tokens = torch.full((len(ids), max(map(len, ids))), handle.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = True
    return tokens, mask


@torch.no_grad()
def _residuals_and_target(base: Any, texts: Sequence[str]
                          ) -> tuple[Float[torch.Tensor, "depth n d_model"], Float[torch.Tensor, "n vocab"]]:
    """All depths' residuals and the final log-distribution at every real position of `texts`, one forward."""
    tl = base.tl
    tokens, mask = _rows(base, texts)
    names = ["blocks.0.hook_resid_pre", *(f"blocks.{i}.hook_resid_post" for i in range(tl.cfg.n_layers))]
    logits, cache = tl.run_with_cache(tokens.to(tl.cfg.device), names_filter=lambda n: n in names)
    keep = mask.to(logits.device)
    resid = torch.stack([cache[name][keep] for name in names]).float()
    return resid, logits[keep].float().log_softmax(-1)


def lens_kl(base: Any, lens: TunedLens, texts: Sequence[str], batch_size: int = 32) -> Float[torch.Tensor, " layer"]:
    """Mean KL(final ‖ lens) per depth 0 … L − 1 over every real position of `texts` (nats)."""
    total = torch.zeros(lens.weight.shape[0])
    count = 0
    for start in range(0, len(texts), batch_size):
        resid, target = _residuals_and_target(base, texts[start:start + batch_size])
        with torch.no_grad():
            predicted = head_logits(base.tl, lens.translate(resid)[:-1]).float().log_softmax(-1)
            total += _kl(target, predicted).sum(-1).cpu()
        count += target.shape[0]
    return total / max(count, 1)


def _kl(target: Float[torch.Tensor, "n vocab"], predicted: Float[torch.Tensor, "layer n vocab"]
        ) -> Float[torch.Tensor, "layer n"]:
    """KL(target ‖ predicted) per depth and position, both given as log-probabilities."""
    return (target.exp() * (target - predicted)).sum(-1)


def fit_tuned_lens(base: Any, texts: Sequence[str], config: TunedLensConfig = TunedLensConfig()
                   ) -> tuple[TunedLens, list[float]]:
    """Fit the translators on `base` over `texts` (no cache) and return them with the loss per step."""
    if not texts:
        raise ValueError("tuned lens: no text to fit on; give retained facts (AttackContext.retain_facts).")
    tl = base.tl
    n_layers, d_model = int(tl.cfg.n_layers), int(tl.cfg.d_model)
    weight = torch.zeros(n_layers, d_model, d_model, requires_grad=True)
    bias = torch.zeros(n_layers, d_model, requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    order, cursor, losses = torch.randperm(len(texts), generator=generator).tolist(), 0, []
    for _ in range(config.steps):
        if cursor >= len(order):
            order, cursor = torch.randperm(len(texts), generator=generator).tolist(), 0
        batch = [texts[i] for i in order[cursor:cursor + config.text_batch]]
        cursor += config.text_batch
        resid, target = _residuals_and_target(base, batch)
        with torch.enable_grad():
            lens = TunedLens(weight, bias)
            predicted = head_logits(tl, lens.translate(resid)[:-1]).float().log_softmax(-1)
            loss = _kl(target, predicted).mean(-1).sum()  # the reference sums the depths' losses
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return TunedLens(weight.detach().clone(), bias.detach().clone()), losses


def _weights_digest(handle: Any) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(handle.tl.state_dict().items()):
        array = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{array.dtype}{tuple(tensor.shape)}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_path(base: Any, texts: Sequence[str], config: TunedLensConfig) -> Path:
    """Where the lens fitted on these base weights, texts and fitting settings is kept."""
    from obliviate.paths import cache_subdir

    fitting = {k: v for k, v in asdict(config).items() if k in ("steps", "lr", "text_batch", "max_texts", "seed")}
    key = hashlib.sha256(repr((CACHE_VERSION, _weights_digest(base), list(texts), sorted(fitting.items()),
                               bool(base.prepend_bos))).encode()).hexdigest()
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(base.name))
    return cache_subdir("lenses") / f"tuned_{name}_{key[:24]}.safetensors"


def tuned_lens_for(base: Any, texts: Sequence[str], config: TunedLensConfig = TunedLensConfig()
                   ) -> tuple[TunedLens, dict[str, Any]]:
    """The lens of `base` on `texts`: from the cache when fitted before, else fitted (and cached); with how."""
    from safetensors import SafetensorError

    from obliviate.integrity import CacheIntegrityError, seal, verify
    from obliviate.results import atomic_save_tensors, load_tensors

    path = cache_path(base, texts, config) if config.cache else None
    if path is not None and path.is_file():
        try:
            verify(path, rebuild="a refit (automatic)")
            tensors = load_tensors(path)
            return TunedLens(tensors["weight"], tensors["bias"]), {"cached": True, "path": str(path)}
        except (CacheIntegrityError, SafetensorError, OSError, KeyError) as error:
            print(f"tuned lens: {path.name} is unusable ({type(error).__name__}: {error}); refitting it")
    start = time.perf_counter()
    lens, losses = fit_tuned_lens(base, texts, config)
    info = {"cached": False, "fit_seconds": time.perf_counter() - start, "loss_first": losses[0],
            "loss_last": losses[-1], "n_texts": len(texts)}
    if path is not None:
        atomic_save_tensors(path, {"weight": lens.weight, "bias": lens.bias},
                            {"model": str(base.name), **{k: str(v) for k, v in info.items()}})
        seal(path)
        info["path"] = str(path)
    return lens, info


def run_tuned_lens(base: Any, edited: Any, facts: Sequence[Fact], retain: Sequence[Fact], oracle: Any | None = None,
                   config: TunedLensConfig = TunedLensConfig()) -> AttackResult:
    """The tuned lens (fitted on `base` over `retain`'s text) on `edited` (and on `oracle`)."""
    check_same_width(base, edited, oracle)
    leaked = {f.case_id for f in retain} & {f.case_id for f in facts}
    if leaked or {f.subject for f in retain} & {f.subject for f in facts}:
        raise ValueError(f"tuned lens: the fitting text shares targets or their subjects (case ids "
                         f"{sorted(leaked)[:5]}); fit on retained facts only.")
    start = time.perf_counter()
    lens, info = tuned_lens_for(base, lens_texts(retain, config.max_texts, config.seed), config)
    fitted = time.perf_counter() - start
    result = run_logit_lens(base, edited, facts, oracle, config.lens(), decoder=lens.decoder(base),
                            attack="tuned_lens", lens="the base-fitted tuned lens", settings=asdict(config),
                            timings={"lens": fitted})
    result.config["lens"] = info
    return result


@ATTACKS.register("tuned_lens", TunedLensConfig)
def tuned_lens_attack(base: Any, edited: Any, facts: Sequence[Fact], cfg: TunedLensConfig, ctx: AttackContext
                      ) -> AttackResult:
    """Tuned lens: decode intermediate states through translators fitted on the base, then the base's head."""
    return run_tuned_lens(base, edited, facts, retain_texts(ctx, facts), ctx.oracle, cfg)
