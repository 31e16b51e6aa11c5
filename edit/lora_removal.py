"""LoRA-adapter removal: modular unlearning, where the forget knowledge lives in a removable module.

Set-up (as in modular / adapter-based unlearning; LoRA: Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large
Language Models", with the Hugging Face ``peft`` library): a base that never saw the forget facts (the fact world's
`world-retain`) plus a LoRA adapter trained on the forget facts until it recalls them (≥ 95% top-1 by default).
`build_adapted_model` writes that model as an ordinary Hugging Face folder whose weights are the base's with the
adapter MERGED in (W + s·BA, s = α/r), so every stage, and every approximate method, runs on it as on any model;
beside the weights it keeps the adapter (``adapter/``, peft's files) and the base's own values of the tensors the
adapter touched (``adapter/base_weights.safetensors``).

The edit (``lora_removal``) removes the adapter: the touched tensors go back to the base's, exactly, so the result
is the base model bit for bit — exact unlearning, by construction, of whatever only the adapter held. Its knob,
`removal_fraction` f, removes part of the adapter (W + (1 − f)·s·BA): how much of the module must go before the
forget facts are gone (f = 1, the default, is the removal). The comparison the set-up exists for: the same merged
folder, where the adapter is no longer a module, handed to an approximate method (graddiff, npo, dpo, rmu, …) as
its base; the audit then shows what removal reaches and what the approximate method leaves.

Deviation: the adapter is trained on the forget facts' cloze prompts (and their trained paraphrases) with the loss
on the answer tokens only; held-out paraphrases stay held out for the audit.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from edit.baselines import _answer_nll, _cycle, _forget_recall, answer_batch
from edit.result import EditRequest, EditResult
from obliviate.config.loader import InvalidField
from obliviate.facts import Fact
from obliviate.registry import EDITS, Knob, Spec

ADAPTER_DIR = "adapter"
BASE_WEIGHTS = "base_weights.safetensors"


@dataclass
class LoRAAdapterConfig:
    """The forget adapter: a LoRA on the base, trained on the forget facts until it recalls them."""

    rank: int = 16
    """LoRA rank r (at least 1)."""
    alpha: float = 32.0
    """LoRA α; the update is scaled by α / r (peft's convention)."""
    target_modules: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    """Module names the adapter wraps (GPT-2's attention and MLP projections; Llama: q_proj, …, down_proj)."""
    lr: float = 3e-3
    """AdamW learning rate."""
    max_steps: int = 3000
    """Give up (an error naming this key) if the recall goal is not reached within this many steps."""
    batch_size: int = 32
    recall_goal: float = 0.95
    """Stop training once top-1 recall of the facts' cloze prompts reaches this."""
    check_every: int = 25
    """Measure recall every this many steps."""
    retain_weight: float = 1.0
    """Weight of the NLL on retained facts' answers mixed into each step (0: forget facts only). Without it the
    adapter overwrites what the base knows: on world-retain, lr 3e-3, retain recall fell from 0.99 to 0.45."""
    trained_paraphrases: bool = True
    """Train on each fact's trained paraphrases too (`Fact.extra['trained_paraphrases']`; held-out ones never)."""
    seed: int = 0

    def validate(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise InvalidField("rank", f"{self.rank!r} is not a LoRA rank; use a positive integer (e.g. 16).")
        for name in ("max_steps", "batch_size", "check_every"):
            if getattr(self, name) <= 0:
                raise InvalidField(name, f"{getattr(self, name)!r}; use a positive integer.")
        if not 0 < self.recall_goal <= 1:
            raise InvalidField("recall_goal", f"{self.recall_goal!r}; use a share in (0, 1] (e.g. 0.95).")
        if not self.target_modules:
            raise InvalidField("target_modules", "name at least one module for the adapter to wrap.")


@dataclass
class LoRARemovalConfig:
    """Remove the forget adapter from an adapted model (`build_adapted_model`)."""

    removal_fraction: float = 1.0
    """Share f of the adapter taken out: W + (1 − f)·s·BA; 1 = the removal (the base's tensors, exactly)."""

    def validate(self) -> None:
        from obliviate.config.loader import check_range

        check_range("removal_fraction", self.removal_fraction, minimum=1e-6, maximum=1.0,
                    fix="1 removes the adapter; smaller values remove part of it")


def _training_prompts(facts: Sequence[Fact], paraphrases: bool) -> tuple[list[str], list[str]]:
    prompts, answers = [], []
    for fact in facts:
        texts = [fact.text, *(fact.extra.get("trained_paraphrases", ()) if paraphrases else ())]
        prompts += texts
        answers += [fact.target_true] * len(texts)
    return prompts, answers


def train_forget_adapter(base: Any, facts: Sequence[Fact], cfg: LoRAAdapterConfig | None = None,
                         retain: Sequence[Fact] = (), *, show_progress: bool = False) -> tuple[Any, dict[str, Any]]:
    """A peft model: a copy of `base.hf` with a LoRA trained on `facts` until their recall reaches the goal, with
    the NLL of `retain`'s answers mixed in (weight `cfg.retain_weight`) so the base's knowledge stays.

    Returns (peft model, record of steps / recall / time). `base` is not modified. Raises a RuntimeError naming
    `max_steps` if the goal is not reached.
    """
    from peft import LoraConfig, get_peft_model

    cfg = cfg or LoRAAdapterConfig()
    cfg.validate()  # a config built in code skips the loader's check
    if not facts:
        raise ValueError("the forget adapter needs at least one fact to learn.")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    is_conv1d = type(base.hf).__name__.startswith("GPT2")  # GPT-2's projections are Conv1D (weights transposed)
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules), lora_dropout=0.0,
                      bias="none", fan_in_fan_out=is_conv1d, init_lora_weights=True)
    model = get_peft_model(copy.deepcopy(base.hf).eval(), lora)  # eval: no dropout anywhere
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    prompts, answers = _training_prompts(facts, cfg.trained_paraphrases)
    cloze, cloze_answers = [f.text for f in facts], [f.target_true for f in facts]
    keep, keep_answers = _training_prompts(retain, cfg.trained_paraphrases)
    order = _cycle(len(prompts), cfg.batch_size, generator)
    keep_order = _cycle(len(keep), cfg.batch_size, generator) if keep and cfg.retain_weight > 0 else None
    recall, history, step = _forget_recall(model, base, cloze, cloze_answers), [], 0
    while recall < cfg.recall_goal and step < cfg.max_steps:
        idx = next(order)
        loss, _ = _answer_nll(model, answer_batch(base, [prompts[i] for i in idx], [answers[i] for i in idx]))
        if keep_order is not None:
            kdx = next(keep_order)
            kept, _ = _answer_nll(model, answer_batch(base, [keep[i] for i in kdx], [keep_answers[i] for i in kdx]))
            loss = loss + cfg.retain_weight * kept
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        if step % cfg.check_every == 0:
            recall = _forget_recall(model, base, cloze, cloze_answers)
            history.append({"step": step, "loss": round(loss.item(), 4), "recall": round(recall, 4)})
            if show_progress:
                print(f"forget adapter: step {step}: loss {loss.item():.3f}, recall {recall:.3f}")
    if recall < cfg.recall_goal:
        raise RuntimeError(f"the forget adapter recalls {recall:.2f} of the facts after {step} steps, below "
                           f"recall_goal {cfg.recall_goal}; raise max_steps, rank or lr.")
    kept_recall = _forget_recall(model, base, [f.text for f in retain], [f.target_true for f in retain]) \
        if retain else None
    return model, {"steps": step, "recall": recall, "retain_recall": kept_recall, "history": history,
                   "train_s": time.perf_counter() - start, "n_facts": len(facts), "n_prompts": len(prompts),
                   "n_retain": len(retain)}


def adapter_deltas(peft_model: Any) -> dict[str, torch.Tensor]:
    """HF weight name → s·BA in the weight's own layout, for every module the adapter wraps."""
    deltas = {}
    prefix = "base_model.model."
    for name, module in peft_model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A") and "default" in module.lora_A:
            deltas[f"{name.removeprefix(prefix)}.weight"] = module.get_delta_weight("default").detach().clone()
    return deltas


def build_adapted_model(base: Any, facts: Sequence[Fact], out_dir: str | Path,
                        cfg: LoRAAdapterConfig | None = None, retain: Sequence[Fact] = (), *,
                        base_name: str | None = None, show_progress: bool = False) -> Path:
    """Train the forget adapter on `base` and write the adapted model: merged weights + adapter + base tensors.

    The folder (written atomically) loads with `obliviate.models.load(path)` like any HF folder; its
    ``derived_from.json`` names the base and its BOS convention. Any edit method can take it as its base (the
    merged variant); ``lora_removal`` takes the adapter out again.
    """
    from safetensors.torch import save_file

    from obliviate.models import DERIVED_MANIFEST
    from obliviate.world.atomic import atomic_folder

    cfg = cfg or LoRAAdapterConfig()
    peft_model, record = train_forget_adapter(base, facts, cfg, retain, show_progress=show_progress)
    adapted = sorted(adapter_deltas(peft_model))
    base_state = base.hf.state_dict()
    with atomic_folder(Path(out_dir)) as tmp:
        peft_model.save_pretrained(tmp / ADAPTER_DIR)  # before the merge, which unwraps the adapter's modules
        originals = {k: base_state[k].detach().cpu().contiguous() for k in adapted}
        save_file(originals, str(tmp / ADAPTER_DIR / BASE_WEIGHTS))
        peft_model.merge_and_unload().save_pretrained(tmp)
        base.tokenizer.save_pretrained(tmp)
        manifest = {"kind": "lora_adapter", "base_model": base_name or base.name, "base_model_hash": base.weights_hash,
                    "prepend_bos": base.prepend_bos, "adapter": asdict(cfg), "training": record,
                    "targets": [f.case_id for f in facts], "adapted_tensors": adapted}
        (tmp / DERIVED_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(out_dir)


def adapted_world_model(out_dir: str | Path, cfg: LoRAAdapterConfig | None = None, *, seed: int = 0,
                        show_progress: bool = False) -> Path:
    """The standard set-up: `world-retain` + a LoRA on the world's forget split (≈ 1-3 CPU minutes).

    ``python -c "from edit.lora_removal import adapted_world_model; adapted_world_model('runs/world-lora')"``, then
    use ``model: runs/world-lora`` with ``method: lora_removal`` (exact) or any other method (the merged variant);
    the audit's reference stays ``world-retain``.
    """
    from obliviate.models import load
    from obliviate.targets import resolve_facts

    base = load("world-retain")
    every = resolve_facts("world", seed=seed)
    forget = [f for f in every if f.split == "forget"]
    retain = [f for f in every if f.split == "retain"]
    return build_adapted_model(base, forget, out_dir, cfg, retain, base_name="world-retain",
                               show_progress=show_progress)


def _adapter_updates(folder: Path) -> dict[str, torch.Tensor]:
    """HF weight name → s·BA from peft's saved adapter files (GPT-2 Conv1D weights: transposed, fan_in_fan_out)."""
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / (config["r"] ** 0.5 if config.get("use_rslora") else config["r"])
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    updates = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        update = (b @ a) * scale
        updates[f"{module}.weight"] = update.T if config.get("fan_in_fan_out") else update
    return updates


def removal_tensors(hf_dir: Path, state: dict[str, torch.Tensor], fraction: float = 1.0) -> dict[str, torch.Tensor]:
    """The adapted tensors with a share `fraction` of the adapter taken out (1: the base's tensors, exactly).

    Checks first that the folder's merged weights are its base tensors plus its adapter's update s·BA (so the
    adapter belongs to these weights), within float32 rounding.
    """
    from safetensors.torch import load_file

    folder = Path(hf_dir) / ADAPTER_DIR
    if not (folder / BASE_WEIGHTS).is_file():
        raise ValueError(f"{hf_dir} carries no forget adapter ({ADAPTER_DIR}/{BASE_WEIGHTS}); lora_removal runs on "
                         f"a folder written by edit.lora_removal.build_adapted_model.")
    base, updates = load_file(str(folder / BASE_WEIGHTS)), _adapter_updates(folder)
    out = {}
    for name, original in base.items():
        if name not in state or name not in updates:
            raise KeyError(f"{folder}: adapted tensor {name!r} is not a weight of the model or of the adapter.")
        merged, update = state[name].detach().cpu(), updates[name]
        error = float((merged - original - update).abs().max())
        if error > 1e-4 * max(1.0, float(update.abs().max())):
            raise ValueError(f"{hf_dir}: {name} is not its base tensor plus the adapter's update (off by {error:.2e});"
                             f" the weights were changed after the adapter was merged.")
        out[name] = original.clone() if fraction >= 1.0 else original + (1.0 - fraction) * update
    return out


@EDITS.register("lora_removal", LoRARemovalConfig, needs=("adapted_model",), spec=Spec(layers="none", knob=Knob(
    "removal_fraction", 0.01, 1.0, doc="share of the forget adapter taken out (1: removed, the base exactly)")))
def lora_removal_method(handle: Any, request: EditRequest, cfg: LoRARemovalConfig) -> EditResult:
    """LoRA removal: take the forget adapter out of an adapted model (exact: the tensors return to the base's)."""
    if handle.hf_dir is None:
        raise ValueError(f"lora_removal needs a model folder written by build_adapted_model; {handle.name} has none.")
    start = time.perf_counter()
    changed = removal_tensors(handle.hf_dir, handle.hf.state_dict(), cfg.removal_fraction)
    from edit.baselines import _layer_index
    from obliviate.models import DERIVED_MANIFEST

    manifest = json.loads((Path(handle.hf_dir) / DERIVED_MANIFEST).read_text())

    return EditResult(method="lora_removal", changed=changed, targets=[f.case_id for f in request.targets],
                      layers=sorted({i for n in changed if (i := _layer_index(n)) is not None}),
                      timings={"remove": time.perf_counter() - start},
                      metrics={"removal_fraction": cfg.removal_fraction, "n_changed_tensors": len(changed),
                               "adapter_trained_on": manifest.get("targets"),
                               "base_model": manifest.get("base_model")},
                      config=asdict(cfg))
