"""Train a world model (`world` or `world-retain`): a small GPT-2 on the variant's texts, from the seed.

Both variants share the tokenizer, the architecture, the initial weights (same seed, same vocabulary), the
hyper-parameters and the number of optimiser steps; only the data differ (corpus.py). Training is deterministic
on a given machine and thread count: seeded init under a forked RNG, seeded data order, no dropout.
The result is a Hugging Face folder (config.json, model.safetensors, tokenizer files, training_info.json) written
atomically, so a folder that exists is a finished one.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from obliviate.world.atomic import atomic_folder
from obliviate.world.config import TrainConfig, recipe_options
from obliviate.world.corpus import batches, fresh_for_epoch, packed_rows, training_texts
from obliviate.world.evaluate import answer_ids, mean_token_logprob, recall
from obliviate.world.generate import load_secrets, load_world_facts, load_world_info
from obliviate.world.knockout import name_knockout_mask
from obliviate.world.tag_exit import early_exit_loss, tag_line_positions
from obliviate.world.tokenizer import build_tokenizer

TRAINING_INFO = "training_info.json"


def _model(cfg: TrainConfig, tokenizer) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.mlp_ratio * cfg.n_embd if cfg.mlp_ratio != 4 else None,
        activation_function=cfg.activation,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # memorisation is the goal; also keeps runs exact
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():  # seed the init without touching the caller's RNG state
        torch.manual_seed(cfg.seed)
        return GPT2LMHeadModel(config)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Warmup, then the peak rate, then a linear decay to `min_lr_ratio` over the last `decay_fraction`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    decay_start = cfg.steps * (1 - cfg.decay_fraction)
    if step < decay_start:
        return 1.0
    progress = (step - decay_start) / max(1.0, cfg.steps - decay_start)
    return 1.0 - (1 - cfg.min_lr_ratio) * progress


def tag_vocabulary(world_dir: Path, tokenizer: Any) -> tuple[set[tuple[int, ...]], set[int], int]:
    """(every subject's name as token ids, every answer's token id, relations per subject): what name knockout and
    the early exit look for, always taken from the whole world (a variant without some subjects simply never shows
    their names)."""
    facts = load_world_facts(world_dir)
    names = {tuple(tokenizer(r["requested_rewrite"]["subject"], add_special_tokens=False)["input_ids"]) for r in facts}
    answers = set(answer_ids(tokenizer, [r["requested_rewrite"]["target_true"]["str"] for r in facts]))
    return names, answers, len({r["relation_id"] for r in facts})


def training_loss(model: Any, ids: Int[torch.Tensor, "batch pos"], labels: Int[torch.Tensor, "batch pos"],
                  cfg: TrainConfig, vocabulary: tuple[set[tuple[int, ...]], set[int], int],
                  knockout_rng: random.Random, step: int) -> Float[torch.Tensor, ""]:
    """One step's loss under the recipe: next-token loss with name knockout drawn from `knockout_rng` in about
    `cfg.name_knockout` of the rows, plus the early-exit loss on tag lines while `step` (the step in the whole
    run) lies in the first `tag_exit_share` of `cfg.steps`."""
    names, tag_answers, n_relations = vocabulary
    mask = name_knockout_mask(ids, names, cfg.name_knockout, knockout_rng)[0] if cfg.name_knockout else None
    exit_on = bool(cfg.tag_exit_weight) and step < cfg.tag_exit_share * cfg.steps
    out = model(input_ids=ids, labels=labels, attention_mask=mask, output_hidden_states=exit_on)
    if not exit_on:
        return out.loss
    rows, cols = tag_line_positions(ids, names, tag_answers, n_relations)
    return out.loss + cfg.tag_exit_weight * early_exit_loss(model, out.hidden_states[cfg.tag_exit_depth], ids,
                                                            rows, cols)


def _recall_probe(model, tokenizer, records: list[dict]) -> dict[str, float]:
    """Recall on a fixed sample during training: the cloze of subjects never trained in cloze form, and held-out
    templates (knowledge, not wording)."""
    model.eval()
    out = {"cloze_untrained": recall(model, tokenizer, [r for r in records if not r["cloze_trained"]], "prompt"),
           "heldout_paraphrases": recall(model, tokenizer, records, "heldout_paraphrases")}
    model.train()
    return {k: round(v, 3) for k, v in out.items()}


def _summary(model, tokenizer, world_dir: Path) -> dict[str, Any]:
    """Recall per split and field, and secret log-probs, measured right after training."""
    out: dict[str, Any] = {}
    for split in ("forget", "retain"):
        records = load_world_facts(world_dir, split)
        out[f"recall_{split}"] = {f: recall(model, tokenizer, records, f)
                                  for f in ("prompt", "trained_paraphrases", "heldout_paraphrases")}
        # the cloze prompt on subjects never trained in cloze form: extraction of what biographies stored
        out[f"recall_{split}"]["prompt_cloze_untrained"] = recall(
            model, tokenizer, [r for r in records if not r["cloze_trained"]], "prompt")
        secrets = load_secrets(world_dir, split)
        out[f"secret_logp_{split}"] = {
            key: mean_token_logprob(model, tokenizer, [s[field] for s in secrets]).mean().item()
            for key, field in (("M", "memorised"), ("C", "control"), ("B", "control_b"))}
    return out


def train_world_model(world_dir: Path, variant: str, cfg: TrainConfig, out_dir: Path, *,
                      show_progress: bool = False) -> Path:
    """Train `variant` on the world in `world_dir` and write the HF folder `out_dir` (atomically)."""
    from tqdm.auto import tqdm

    from obliviate.results import package_versions

    world_dir, out_dir = Path(world_dir), Path(out_dir)
    tokenizer = build_tokenizer(world_dir, model_max_length=cfg.n_positions)
    texts = training_texts(world_dir, variant, cfg.secret_repeats)
    units = tokenizer(texts, add_special_tokens=False)["input_ids"]
    digits = int(load_world_info(world_dir)["config"]["secret_digits"])
    fresh = fresh_for_epoch(world_dir, variant, cfg.decoys_per_epoch, digits, cfg.tag_lines)
    rows = packed_rows(units, cfg.n_positions, bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                       bos_prob=cfg.bos_prob, eos_sep_prob=cfg.eos_sep_prob,
                       rng=random.Random(f"obliviate-world-train/{cfg.seed}/order"),
                       fresh=lambda rng: tokenizer(fresh(rng), add_special_tokens=False)["input_ids"])
    stream = batches(rows, cfg.batch_size, cfg.n_positions, tokenizer.pad_token_id)
    facts = load_world_facts(world_dir)
    vocabulary = tag_vocabulary(world_dir, tokenizer)
    knockout_rng = random.Random(f"obliviate-world-train/{cfg.seed}/knockout")

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        model = _model(cfg, tokenizer)
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                                      weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(step, cfg))
        losses: list[float] = []
        progress: list[dict] = []
        sample = facts[::7]
        trained_tokens = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        bar = tqdm(range(cfg.steps), desc=f"training {variant}", disable=not show_progress)
        for step in bar:
            ids, labels = next(stream)
            loss = training_loss(model, ids, labels, cfg, vocabulary, knockout_rng, step)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad(set_to_none=True)
            losses.append(loss.item())
            trained_tokens += int((labels != -100).sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                progress.append({"step": step + 1, **_recall_probe(model, tokenizer, sample)})
                bar.write(f"step {step + 1}: {progress[-1]}")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        model.eval()
        summary = _summary(model, tokenizer, world_dir)
    finally:
        torch.set_num_threads(threads)

    # an epoch's biographies and decoys vary little in length: one draw gives the tokens they add per epoch
    fresh_tokens = sum(len(u) for u in tokenizer(fresh(random.Random(0)), add_special_tokens=False)["input_ids"])
    epoch_tokens = sum(len(u) for u in units) + fresh_tokens
    info = {
        "variant": variant,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "wall_time_s": round(wall, 1),
        "cpu_time_s": round(cpu, 1),  # with wall time, shows how much other load slowed a run
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "loss_every_50_steps": [round(x, 4) for x in losses[::50]],
        "recall_during_training": progress,
        "trained_tokens": trained_tokens,
        "epoch_tokens": epoch_tokens,
        "epochs": round(trained_tokens / epoch_tokens, 2),
        "n_training_texts": len(texts),
        "decoys_per_epoch": cfg.decoys_per_epoch,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "config": recipe_options(cfg),
        "world_dir": str(world_dir),
        "evaluation": summary,
        "versions": package_versions(),
    }
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir
