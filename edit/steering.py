"""Activation steering: difference-of-means and SAE-decoder vectors added to the residual stream.

Difference-of-means vectors follow contrastive activation addition (Rimsky et al. 2024, "Steering Llama 2 via
Contrastive Activation Addition"; Turner et al. 2023, ActAdd): v = mean h_L(target prompts) − mean h_L(contrast
prompts) at one residual hook, read at each prompt's last real token or averaged over all its tokens. SAE vectors
are sums of decoder rows of chosen features (Templeton et al. 2024 feature steering); "clamping" a feature to a
value c is done on average, as an added vector (c − mean activation) · W_dec[f], so the hook stays one savable
AddVector rather than a per-input SAE pass.

The scoping API follows the steering-vectors library (steering-vectors/steering-vectors): `with vector.apply(model,
multiplier): ...` adds the hook for the block only. The edit stage saves the vector as an `obliviate.hooks.AddVector`.

Vectors are added at ALL positions by default: the metrics right-pad batches, so "the last position" of a batch row
is padding for every prompt but the longest; adding at every position is what a deployed steering hook does.

Steering is not an erasure: the facts stay in the weights and the audit is expected to find them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from edit.result import EditRequest, EditResult
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec
from obliviate.hooks import AddVector, applied

Position = Literal["last", "all"]


@dataclass(frozen=True)
class SteeringVector:
    """A direction at one hook point; `apply` adds multiplier × vector for the duration of a block."""

    hook_name: str
    vector: Float[torch.Tensor, " d"]
    last_position_only: bool = False

    def intervention(self, multiplier: float = 1.0) -> AddVector:
        """The savable hook that adds multiplier × vector."""
        return AddVector(self.hook_name, self.vector.detach().clone(), scale=float(multiplier),
                         last_position_only=self.last_position_only)

    @contextmanager
    def apply(self, model: HookedTransformer, multiplier: float = 1.0) -> Iterator[HookedTransformer]:
        """Steer `model` inside the block; the hook is gone afterwards, even if the block raises."""
        with applied(model, [self.intervention(multiplier)]):
            yield model


def resid_hook(layer: int, site: Literal["resid_pre", "resid_post"] = "resid_pre") -> str:
    """TransformerLens name of the residual stream entering (resid_pre) or leaving (resid_post) block `layer`."""
    return f"blocks.{layer}.hook_{site}"


@torch.no_grad()
def hook_activations(handle: Any, texts: Sequence[str], hook_name: str, position: Position = "last",
                     batch_size: int = 32) -> Float[torch.Tensor, "n d"]:
    """Activation at `hook_name` per text: at its last real token, or the mean over its real tokens."""
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        lengths = torch.tensor([handle.to_tokens(t).shape[1] for t in chunk])
        tokens = handle.to_tokens(chunk)
        _, cache = handle.tl.run_with_cache(tokens.to(handle.tl.cfg.device), names_filter=hook_name)
        acts = cache[hook_name].float().cpu()
        if position == "last":
            rows.append(acts[torch.arange(len(chunk)), lengths - 1])
        else:
            mask = (torch.arange(acts.shape[1])[None, :] < lengths[:, None]).float()
            rows.append((acts * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
    return torch.cat(rows)


def mean_difference_vector(handle: Any, target_prompts: Sequence[str], contrast_prompts: Sequence[str],
                           layer: int, *, site: Literal["resid_pre", "resid_post"] = "resid_pre",
                           position: Position = "last") -> SteeringVector:
    """mean h(target_prompts) − mean h(contrast_prompts) at the residual of `layer` (CAA's difference of means)."""
    if not target_prompts or not contrast_prompts:
        raise ValueError("difference of means needs at least one target prompt and one contrast prompt.")
    hook_name = resid_hook(layer, site)
    target = hook_activations(handle, target_prompts, hook_name, position).mean(0)
    contrast = hook_activations(handle, contrast_prompts, hook_name, position).mean(0)
    return SteeringVector(hook_name, target - contrast)


def sae_feature_vector(sae: Any, features: Sequence[int], *, coefficients: Sequence[float] | None = None,
                       hook_name: str | None = None) -> SteeringVector:
    """Σ_f c_f · W_dec[f] for an sae-lens SAE (c_f = 1 unless given); the hook defaults to the SAE's own."""
    if not features:
        raise ValueError("an SAE steering vector needs at least one feature.")
    w_dec = sae.W_dec.detach().float().cpu()
    coeffs = torch.ones(len(features)) if coefficients is None else torch.tensor(list(coefficients), dtype=torch.float)
    if len(coeffs) != len(features):
        raise ValueError(f"{len(features)} features but {len(coeffs)} coefficients.")
    vector = (coeffs[:, None] * w_dec[list(features)]).sum(0)
    return SteeringVector(hook_name or sae.cfg.metadata.hook_name, vector)


@torch.no_grad()
def sae_clamp_vector(handle: Any, sae: Any, features: Sequence[int], prompts: Sequence[str], *,
                     clamp_to: float = 0.0, position: Position = "last",
                     hook_name: str | None = None) -> SteeringVector:
    """Clamp features to `clamp_to` on average: Σ_f (clamp_to − mean a_f(prompts)) · W_dec[f].

    Exact clamping would encode every input with the SAE; the average shift is a fixed vector, so it stays a
    savable AddVector. On the prompts it was fitted on it moves each feature's mean activation to `clamp_to`
    (through the decoder), not each single activation.
    """
    hook = hook_name or sae.cfg.metadata.hook_name
    acts = hook_activations(handle, prompts, hook, position)
    feature_acts = sae.encode(acts.to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu()[:, list(features)]
    return sae_feature_vector(sae, features, coefficients=(clamp_to - feature_acts.mean(0)).tolist(), hook_name=hook)


@dataclass
class SteeringConfig:
    """Difference-of-means (or SAE-feature) steering away from the forget facts."""

    layer: int | None = None
    """Block whose residual is steered; None = the middle block (EditConfig.layers[0] overrides)."""
    site: Literal["resid_pre", "resid_post"] = "resid_pre"
    """Residual hook of that block."""
    source: Literal["mean_difference", "sae"] = "mean_difference"
    """mean_difference: forget prompts vs retain prompts; sae: clamp the given SAE features to `clamp_to`."""
    position: Position = "last"
    """Where activations are read when fitting: each prompt's last token, or the mean over its tokens."""
    multiplier: float = -4.0
    """Scale of the added vector; negative steers away from the forget prompts' mean."""
    use_paraphrases: bool = True
    """Fit on the forget facts' paraphrase prompts too (more contrast pairs, better generalisation)."""
    sae_path: str | None = None
    """source="sae": an sae-lens SAE folder (e.g. <run>/locate/sae, trained by the locate stage)."""
    sae_features: list[int] | None = None
    """Features to clamp (source="sae"); None = the targets' top features by `sae_ranking`."""
    sae_ranking: Literal["attribution", "selectivity"] = "attribution"
    """How features are chosen when not given: activation × gradient of the answer logit at the last token, or
    activation on the target prompts minus on the retain prompts (locate.sae_features)."""
    sae_top_k: int = 8
    """How many top features are clamped when they are chosen here."""
    clamp_to: float = 0.0
    """Value SAE features are clamped to on average (source="sae")."""

    def validate(self) -> None:
        from obliviate.config.loader import InvalidField

        if self.layer is not None and self.layer < 0:
            raise InvalidField("layer", "must be ≥ 0.")
        if self.sae_top_k < 1:
            raise InvalidField("sae_top_k", "must be ≥ 1.")


def _fact_prompts(facts: Sequence[Fact], paraphrases: bool) -> list[str]:
    prompts = []
    for fact in facts:
        prompts.append(fact.text)
        if paraphrases:
            prompts.extend(fact.paraphrase_prompts)
    return prompts


def _load_sae(path: str | None) -> Any:
    if path is None:
        raise ValueError("steering with source='sae' needs an SAE: pass sae=, or set sae_path to an sae-lens folder "
                         "(the locate stage writes one at <run>/locate/sae when 'sae' is among locate.methods).")
    from locate.sae_features import load_sae

    return load_sae(path)


def _top_features(handle: Any, sae: Any, targets: Sequence[Fact], retain: Sequence[Fact],
                  cfg: SteeringConfig) -> list[int]:
    """The features that carry the targets' answers (locate.sae_features rankings, read at the last token)."""
    from locate.sae_features import feature_attribution, feature_selectivity

    if cfg.sae_ranking == "selectivity":
        if not retain:
            raise ValueError("sae_ranking='selectivity' needs retain facts to contrast with.")
        ranking = feature_selectivity(handle, sae, list(targets), list(retain), position="last", top_k=cfg.sae_top_k)
    else:
        ranking, _ = feature_attribution(handle, sae, list(targets), position="last", top_k=cfg.sae_top_k)
    return ranking.features


def steering_edit(handle: Any, targets: Sequence[Fact], retain: Sequence[Fact], cfg: SteeringConfig | None = None,
                  *, sae: Any = None, layers: Sequence[int] | None = None) -> EditResult:
    """Fit a steering vector that moves activations away from the targets; returns it as an AddVector hook.

    mean_difference: v = mean h(target prompts) − mean h(retain prompts), added with `cfg.multiplier` (< 0).
    sae: clamp features of `sae` (or the SAE at `cfg.sae_path`) to `cfg.clamp_to` on average over the target
    prompts; the features are `cfg.sae_features`, else the targets' top `cfg.sae_top_k` by `cfg.sae_ranking`
    (locate.sae_features). The hook sits at the SAE's own hook point; `layers` does not move it.
    """
    cfg = cfg or SteeringConfig()
    layer = layers[0] if layers else (cfg.layer if cfg.layer is not None else handle.n_layers // 2)
    start = time.perf_counter()
    target_prompts = _fact_prompts(targets, cfg.use_paraphrases)
    if cfg.source == "mean_difference":
        vector = mean_difference_vector(handle, target_prompts, _fact_prompts(retain, cfg.use_paraphrases), layer,
                                        site=cfg.site, position=cfg.position)
        multiplier = cfg.multiplier
    else:
        sae = sae if sae is not None else _load_sae(cfg.sae_path)
        features = list(cfg.sae_features) if cfg.sae_features else _top_features(handle, sae, targets, retain, cfg)
        vector = sae_clamp_vector(handle, sae, features, target_prompts, clamp_to=cfg.clamp_to,
                                  position=cfg.position)
        multiplier = 1.0
    hook = vector.intervention(multiplier)
    if cfg.source == "sae":
        layer = int(vector.hook_name.split(".")[1]) if vector.hook_name.startswith("blocks.") else layer
    fit_s = time.perf_counter() - start
    return EditResult(method="steering", interventions=[hook], targets=[f.case_id for f in targets],
                      layers=[layer], timings={"fit": fit_s},
                      metrics={"vector_norm": float(vector.vector.norm()), "multiplier": multiplier,
                               "hook_name": vector.hook_name,
                               **({"sae_features": features} if cfg.source == "sae" else {})},
                      config=asdict(cfg))


@EDITS.register("steering", SteeringConfig, spec=Spec(layers="one", knob=Knob(
    "multiplier", -32.0, -0.25, stronger="lower", doc="α, the scale of the added vector (more negative: stronger)")))
def steering_method(handle: Any, request: EditRequest, cfg: SteeringConfig) -> EditResult:
    """Steering away from the targets at one block (the request's layer, else cfg.layer, else the middle one)."""
    if cfg.source == "sae" and request.layers:
        raise ValueError("steering with source='sae' acts at its SAE's hook point; remove 'layers' or use "
                         "source='mean_difference'.")
    return steering_edit(handle, request.targets, request.retain, cfg, layers=request.layers)
