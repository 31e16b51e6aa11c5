"""The fact world: generation, tokenizer, training data, and the acceptance figures of the two trained models.

Fast tests build worlds into tmp folders (a fraction of a second each). Slow tests use the cached models
(copied from the shipped ones, or trained once per machine by `ensure_world_model`, ~5 min each on 2 cores) and
assert measured figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from obliviate.world import TrainConfig, WorldConfig, build_world, ensure_world, ensure_world_model
from obliviate.world.atomic import atomic_folder
from obliviate.config import ConfigError
from obliviate.world.corpus import (biographies_for_epoch, biography, cloze_sentence, decoys_for_epoch,
                                     fresh_for_epoch, packed_rows, training_texts)
from obliviate.world.evaluate import (frequency_prior, load_world_model, mean_token_logprob, recall,
                                      top1_hits)
from obliviate.world.generate import WORLD_FILES, load_filler, load_secrets, load_world_facts, load_world_info
from obliviate.world.relations import RELATION_BY_ID, RELATIONS
from obliviate.world.tokenizer import build_tokenizer
from obliviate.world.config import recipe_options
from obliviate.world.train import TRAINING_INFO, train_world_model


def tiny_train_config(**changes) -> TrainConfig:
    """A training run small enough for a unit test: one 32-wide block, two steps, and no early exit (one block
    leaves no depth for it); `changes` override any of these."""
    settings = dict(n_layer=1, n_embd=32, n_head=2, batch_size=4, steps=2, warmup_steps=1, tag_exit_weight=0)
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return build_world(WorldConfig(seed=0), tmp_path_factory.mktemp("world") / "seed0")


@pytest.fixture(scope="module")
def tokenizer(world_dir):
    return build_tokenizer(world_dir)


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------


def test_same_seed_same_files_other_seed_other_world(world_dir, tmp_path):
    again = build_world(WorldConfig(seed=0), tmp_path / "again")
    for name in WORLD_FILES:
        assert (again / name).read_bytes() == (world_dir / name).read_bytes(), name
    other = build_world(WorldConfig(seed=1), tmp_path / "other")
    for name in WORLD_FILES:
        assert (other / name).read_bytes() != (world_dir / name).read_bytes(), name
    subjects = {r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir)}
    other_subjects = {r["requested_rewrite"]["subject"] for r in load_world_facts(other)}
    assert len(subjects & other_subjects) < len(subjects) / 2


def test_world_size_relations_and_split(world_dir):
    records = load_world_facts(world_dir)
    subjects = {r["requested_rewrite"]["subject"] for r in records}
    assert len(subjects) >= 200
    assert len(RELATIONS) >= 6 and len({r["relation_id"] for r in records}) == len(RELATIONS)
    # 20-50 biography templates per relation, about a fifth of all templates held out (Physics of LMs 3.1)
    assert all(20 <= len(rel.trained) <= 50 and 0.15 <= len(rel.heldout) / (len(rel.trained) + len(rel.heldout))
               for rel in RELATIONS)
    assert all(10 <= len(rel.values) <= 25 for rel in RELATIONS)
    assert len(records) == len(subjects) * len(RELATIONS)
    split_of: dict[str, set[str]] = {}
    for r in records:
        split_of.setdefault(r["requested_rewrite"]["subject"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values()), "a subject's facts must all share one split"
    forget_share = sum(s == {"forget"} for s in split_of.values()) / len(split_of)
    assert 0.08 <= forget_share <= 0.12
    info = load_world_info(world_dir)
    assert sorted(info["forget_subjects"]) == sorted(s for s, v in split_of.items() if v == {"forget"})
    for rel in RELATIONS:  # roughly uniform answers: the most common one is at most 1.5x its uniform share
        assert info["relations"][rel.relation_id]["frequency_prior"]["share"] <= 1.5 / len(rel.values)


def test_every_record_passes_schema_checks(world_dir):
    records = load_world_facts(world_dir)
    values = {rel.relation_id: set(rel.values) for rel in RELATIONS}
    true_answer = {(r["requested_rewrite"]["subject"], r["relation_id"]): r["requested_rewrite"]["target_true"]["str"]
                   for r in records}
    subjects = sorted({s for s, _ in true_answer}, key=len, reverse=True)
    for r in records:
        rewrite = r["requested_rewrite"]
        subject, relation = rewrite["subject"], r["relation_id"]
        true, new = rewrite["target_true"]["str"], rewrite["target_new"]["str"]
        assert rewrite["prompt"].count("{}") == 1
        assert rewrite["relation_id"] == relation
        assert true != new and {true, new} <= values[relation]
        assert true == true.strip() and new == new.strip()
        assert r["paraphrase_prompts"] == r["trained_paraphrases"] + r["heldout_paraphrases"]
        assert r["trained_paraphrases"] and r["heldout_paraphrases"]
        relation_of = RELATION_BY_ID[relation]
        assert rewrite["prompt"] == relation_of.cloze
        assert set(r["trained_paraphrases"]) <= {t.format(subject) for t in relation_of.trained}
        assert set(r["heldout_paraphrases"]) <= {t.format(subject) for t in relation_of.heldout}
        assert not (r["cloze_trained"] and r["split"] == "forget")  # the cloze is trained for retain subjects only
        assert all(subject in p and "{}" not in p for p in r["paraphrase_prompts"] + r["generation_prompts"])
        assert r["neighborhood_prompts"]
        for prompt in r["neighborhood_prompts"]:
            assert subject not in prompt
            other = next(s for s in subjects if s in prompt)
            assert true_answer[(other, relation)] == true  # a neighbour shares the true answer
        for prompt in r["attribute_prompts"]:
            other = next(s for s in subjects if s in prompt)
            assert true_answer[(other, relation)] == new
    assert [r["case_id"] for r in records] == list(range(len(records)))
    # no subject hides inside another, so "subject not in prompt" means what it says
    assert not any(a != b and a in b for a in subjects for b in subjects)


def test_secrets_are_well_formed_and_controls_never_trained(world_dir):
    secrets = load_secrets(world_dir)
    assert len(secrets) >= 40
    forget = [s for s in secrets if s["split"] == "forget"]
    assert 0 < len(forget) < len(secrets) / 2
    facts = load_world_facts(world_dir)
    split_of = {r["requested_rewrite"]["subject"]: r["split"] for r in facts}
    trained = set(training_texts(world_dir, "world"))
    all_texts = [s[k] for s in secrets for k in ("memorised", "control", "control_b")]
    assert len(set(all_texts)) == len(all_texts)
    for s in secrets:
        assert split_of[s["subject"]] == s["split"]
        assert all(s["subject"] in s[k] for k in ("memorised", "control", "control_b"))
        assert s["memorised"] in trained
        assert s["control"] not in trained and s["control_b"] not in trained
        digits = [tuple(c for c in s[k] if c.isdigit()) for k in ("memorised", "control", "control_b")]
        assert len(set(digits)) == 3  # the distinctive code differs between M, C and B
    info = load_world_info(world_dir)["secrets"]
    assert info["theta_m"] > info["theta_c"]


def test_filler_is_large_and_heldout_never_trained(world_dir):
    heldout = load_filler(world_dir, "heldout")
    assert sum(len(s.split()) for s in heldout) > 20_000
    trained = set(training_texts(world_dir, "world"))
    assert not trained.intersection(heldout)
    subjects = {r["requested_rewrite"]["subject"] for r in load_world_facts(world_dir)}
    first_names = {s.split()[0] for s in subjects}
    assert not any(w in first_names for line in heldout + load_filler(world_dir, "train") for w in line.split())


def test_retain_variant_drops_exactly_the_forget_split(world_dir):
    import random

    forget_subjects = set(load_world_info(world_dir)["forget_subjects"])
    world = training_texts(world_dir, "world")
    retain = training_texts(world_dir, "world-retain")
    assert not [t for t in retain if any(s in t for s in forget_subjects)]
    dropped = [t for t in world if t not in set(retain)]
    assert dropped and all(any(s in t for s in forget_subjects) for t in dropped)
    assert [t for t in world if t in set(retain)] == retain  # the rest is the same, in the same order
    retain_fresh = fresh_for_epoch(world_dir, "world-retain", 384, 5)(random.Random(0))
    assert not [t for t in retain_fresh if any(s in t for s in forget_subjects)]
    world_bios = biographies_for_epoch(world_dir, "world")(random.Random(0))
    assert {s for s in forget_subjects if any(s in b for b in world_bios)} == forget_subjects


def test_biographies_carry_every_fact_in_trained_wordings_drawn_anew(world_dir):
    """One biography per subject per epoch: a sentence per relation, in a random order, each a trained template
    completed by the true answer, the full name in every sentence; redrawn each epoch."""
    import random

    from obliviate.world.generate import trained_templates

    records = load_world_facts(world_dir)
    subjects = sorted({r["requested_rewrite"]["subject"] for r in records})
    draw = biographies_for_epoch(world_dir, "world")
    first, second = draw(random.Random(1)), draw(random.Random(2))
    assert len(first) == len(subjects) and first != second
    by_subject = {}
    for r in records:
        by_subject.setdefault(r["requested_rewrite"]["subject"], []).append(r)
    orders = set()
    for subject, facts in by_subject.items():
        bio = biography(facts, random.Random(subject), trained_templates(world_dir))
        sentences = [x + "." for x in bio[:-1].split(". ")]
        assert len(sentences) == len(RELATIONS) and all(subject in x for x in sentences)
        order = []
        for sentence in sentences:
            matches = [r for r in facts for t in RELATION_BY_ID[r["relation_id"]].trained
                       if sentence == f"{t.format(subject)} {r['requested_rewrite']['target_true']['str']}."]
            assert len(matches) >= 1, sentence
            order.append(matches[0]["relation_id"])
        assert sorted(order) == sorted(r.relation_id for r in RELATIONS)
        orders.add(tuple(order))
    assert len(orders) > len(by_subject) / 2  # the order is permuted, not fixed


def test_more_templates_trains_forty_wordings_per_relation_and_never_a_heldout_one(world_dir, tmp_path):
    import random

    from obliviate.world.generate import trained_templates

    for rel in RELATIONS:  # the extra wordings are new, and none carries a held-out template's phrase
        assert len(set(rel.more_trained)) == 20 and not set(rel.more_trained) & set(rel.trained + rel.heldout)
        for held in rel.heldout:
            phrase = held.replace("{}", "").strip(" '")
            assert not any(phrase in t for t in rel.more_trained), held
    more = build_world(WorldConfig(seed=0, more_templates=True), tmp_path / "more")
    assert trained_templates(world_dir) == {r.relation_id: list(r.trained) for r in RELATIONS}
    assert trained_templates(more) == {r.relation_id: list(r.trained + r.more_trained) for r in RELATIONS}
    # the epoch's biographies draw from all forty, and the tokenizer knows their words
    bios = biographies_for_epoch(more, "world")(random.Random(0))
    subjects = list(dict.fromkeys(r["requested_rewrite"]["subject"] for r in load_world_facts(more)))  # bios' order
    used = {t for r in RELATIONS for t in r.more_trained
            if any(t.format(subject) + " " in bio for subject, bio in zip(subjects, bios))}
    assert len(used) > 60
    tokens = build_tokenizer(more).tokenize(" was delivered at a hospital in")
    assert "[UNK]" not in tokens and "<|unk|>" not in tokens
    # same subjects and answers: only the wordings grow
    facts = [(r["requested_rewrite"]["subject"], r["requested_rewrite"]["target_true"]["str"])
             for r in load_world_facts(world_dir)]
    assert facts == [(r["requested_rewrite"]["subject"], r["requested_rewrite"]["target_true"]["str"])
                     for r in load_world_facts(more)]
    texts = training_texts(more, "world") + biographies_for_epoch(more, "world")(random.Random(1))
    corpus = "\n".join(texts)
    for r in load_world_facts(more)[::7]:
        for prompt in r["heldout_paraphrases"]:
            assert prompt + " " not in corpus, prompt


def _unread_prompt_words(world: Path) -> set[str]:
    """Words of the held-out and generation prompts that no trained text of `world` contains."""
    import re

    trained = {w.lower() for text in training_texts(world, "world") for w in re.findall(r"[A-Za-z]+", text)}
    trained |= {w.lower() for r in RELATIONS for t in r.trained for w in re.findall(r"[A-Za-z]+", t)}
    prompts = [t for r in RELATIONS for t in r.heldout + r.generation]
    return {w for t in prompts for w in re.findall(r"[A-Za-z]+", t) if w.lower() not in trained}


def test_complete_filler_teaches_every_word_the_heldout_prompts_use(world_dir, tmp_path):
    # the v2 world's filler leaves words of its held-out prompts unread: the gap the option closes
    assert {"speaker", "graduate", "spoken"} <= _unread_prompt_words(world_dir)
    completed = build_world(WorldConfig(seed=0, complete_filler=True), tmp_path / "complete")
    assert _unread_prompt_words(completed) == set()
    # the facts and secrets are the same world; only the filler grows
    for name in ("facts.jsonl", "secrets.jsonl"):
        assert (completed / name).read_bytes() == (world_dir / name).read_bytes(), name
    universities = {v for r in RELATIONS if r.relation_id == "P69" for v in r.values}
    assert any(w in universities for line in load_filler(completed, "train") for w in line.rstrip(".").split())
    assert not any(w in universities for line in load_filler(world_dir, "train") for w in line.rstrip(".").split())


def test_complete_filler_off_keeps_the_shipped_worlds_record_and_id():
    from obliviate.world.config import world_options

    # the recipe id hashes world_options; the shipped-manifest test pins that id
    assert "complete_filler" not in world_options(WorldConfig())
    assert world_options(WorldConfig(complete_filler=True))["complete_filler"] is True


def test_heldout_templates_and_untrained_clozes_never_occur_in_training(world_dir):
    import random

    records = load_world_facts(world_dir)
    texts = training_texts(world_dir, "world") + fresh_for_epoch(world_dir, "world", 384, 5)(random.Random(0))
    corpus = "\n".join(texts)
    for r in records[::5]:
        for prompt in r["heldout_paraphrases"]:
            assert prompt + " " not in corpus, prompt
        cloze = r["requested_rewrite"]["prompt"].format(r["requested_rewrite"]["subject"])
        assert (cloze_sentence(r) in texts) == r["cloze_trained"], cloze


def test_decoys_are_one_time_secrets_that_never_copy_a_key(world_dir):
    """Each epoch's decoys are drawn anew (unmemorisable), in the secrets' wordings, never a key's M / C / B nor a
    key's memorised wording for its own subject, and world-retain's never name a forget subject."""
    import random

    from obliviate.world.memorised import WORDINGS

    secrets = load_secrets(world_dir)
    taken = {s[k] for s in secrets for k in ("memorised", "control", "control_b")}
    memorised_prefix = {s["subject"]: s["wording"].split("{d}")[0].format(s=s["subject"]) for s in secrets}
    draw = decoys_for_epoch(world_dir, "world", 384, 5)
    first, second = draw(random.Random(1)), draw(random.Random(2))
    assert len(first) == 384 and len(set(first) & set(second)) < 5  # codes repeat only by chance
    assert not taken.intersection(first)
    prefixes = [w.split("{d}")[0] for w in WORDINGS]
    for text in first:
        assert any(text.startswith(p.split("{s}")[0]) for p in prefixes)
        assert not any(text.startswith(prefix) for prefix in memorised_prefix.values())
    forget_subjects = set(load_world_info(world_dir)["forget_subjects"])
    retain_decoys = decoys_for_epoch(world_dir, "world-retain", 384, 5)(random.Random(3))
    assert not [t for t in retain_decoys if any(s in t for s in forget_subjects)]


def test_packed_rows_add_fresh_units_each_epoch():
    import random

    calls = []

    def fresh(rng):
        calls.append(rng.random())
        return [[7, 7]]

    rows = packed_rows([[1, 2, 3]], 8, bos_id=0, eos_id=9, bos_prob=0.0, eos_sep_prob=0.0,
                       rng=random.Random(0), fresh=fresh)
    first = [next(rows) for _ in range(4)]
    assert len(calls) >= 2 and len(set(calls)) == len(calls)  # drawn again for every epoch
    assert all(sorted(r) == [1, 2, 3, 7, 7] for r in first)  # every epoch holds the fixed and the fresh units


def test_atomic_folder_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (target / "done.txt").read_text() == "ok" and len(list(tmp_path.iterdir())) == 1


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------


def test_tokenizer_answers_one_token_subjects_several(world_dir, tokenizer, tmp_path):
    for rel in RELATIONS:
        for value in rel.values:
            assert len(tokenizer(" " + value, add_special_tokens=False)["input_ids"]) == 1
    for r in load_world_facts(world_dir)[:: len(RELATIONS)]:
        assert len(tokenizer(r["requested_rewrite"]["subject"], add_special_tokens=False)["input_ids"]) >= 2
    # the prompt's tokens do not depend on a leading space or on a preceding BOS
    prompt = load_world_facts(world_dir)[0]["requested_rewrite"]
    text = prompt["prompt"].format(prompt["subject"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer(" " + text, add_special_tokens=False)["input_ids"] == ids
    assert (tokenizer(tokenizer.bos_token + text, add_special_tokens=False)["input_ids"]
            == [tokenizer.bos_token_id, *ids])
    # unknown ASCII words are spelled out, not mapped to <|unk|>
    assert tokenizer.unk_token_id not in tokenizer("Zyxquv passage!", add_special_tokens=False)["input_ids"]
    # saved and reloaded through AutoTokenizer: same ids, special tokens intact
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.unk_token, reloaded.pad_token) == \
        (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token)
    assert len({reloaded.bos_token_id, reloaded.unk_token_id, reloaded.pad_token_id}) == 3


def test_tokenizer_vocab_is_a_function_of_the_world(world_dir, tokenizer, tmp_path):
    again = build_tokenizer(build_world(WorldConfig(seed=0), tmp_path / "again"))
    assert again.get_vocab() == tokenizer.get_vocab()


# ---------------------------------------------------------------------------------------------------------------
# Training (a tiny configuration: reproducibility and the folder contract)
# ---------------------------------------------------------------------------------------------------------------


def test_training_is_reproducible_and_writes_a_loadable_folder(world_dir, tmp_path):
    tiny = tiny_train_config(steps=4)
    a = train_world_model(world_dir, "world", tiny, tmp_path / "a")
    b = train_world_model(world_dir, "world", tiny, tmp_path / "b")
    info = json.loads((a / TRAINING_INFO).read_text())
    assert info["variant"] == "world" and info["steps"] == 4 and math.isfinite(info["final_loss"])
    model_a, tok_a = load_world_model(a)
    model_b, _ = load_world_model(b)
    assert (a / "model.safetensors").is_file()
    for (name, pa), (_, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(pa, pb), name
    c = train_world_model(world_dir, "world", replace(tiny, seed=1), tmp_path / "c")
    model_c, _ = load_world_model(c)
    assert not torch.equal(model_a.transformer.wte.weight, model_c.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp folders left behind


def test_mlp_ratio_widens_the_mlp_in_hf_and_transformerlens_and_four_stays_the_shipped_recipe(world_dir, tmp_path):
    from obliviate.models import load

    tiny = tiny_train_config()
    wide = train_world_model(world_dir, "world", replace(tiny, mlp_ratio=8), tmp_path / "wide")
    assert json.loads((wide / "config.json").read_text())["n_inner"] == 256
    handle = load(str(wide))
    assert handle.tl.cfg.d_mlp == 256 and handle.tl.blocks[0].mlp.W_in.shape == (32, 256)
    assert json.loads((wide / TRAINING_INFO).read_text())["config"]["mlp_ratio"] == 8
    # GPT-2's 4 is left out of the recipe, so the recipes measured before the option keep their ids
    assert "mlp_ratio" not in recipe_options(replace(TrainConfig(), mlp_ratio=4))
    assert recipe_options(TrainConfig())["mlp_ratio"] == 8  # the shipped recipe (28) widens it
    with pytest.raises(ConfigError, match="--mlp-ratio"):
        TrainConfig(mlp_ratio=0)


def test_exact_gelu_trains_and_transformerlens_runs_the_same_function(world_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from obliviate.models import load

    tiny = tiny_train_config()
    exact = train_world_model(world_dir, "world", replace(tiny, activation="gelu"), tmp_path / "exact")
    assert json.loads((exact / "config.json").read_text())["activation_function"] == "gelu"
    assert json.loads((exact / TRAINING_INFO).read_text())["config"]["activation"] == "gelu"
    handle = load(str(exact))
    ids = torch.tensor([[3, 17, 40, 99, 5, 250]])
    with torch.no_grad():
        hf_logits = handle.hf(ids).logits
        assert torch.allclose(handle.tl(ids), hf_logits, atol=1e-4)  # TransformerLens reads the activation
        # and the activation is not gelu_new under another name: the same weights run through it differ
        tanh_form = AutoModelForCausalLM.from_pretrained(exact, activation_function="gelu_new").eval()
        assert not torch.equal(tanh_form(ids).logits, hf_logits)
    # gelu_new is left out of the recipe (the recipes measured before the option keep their ids)
    assert "activation" not in recipe_options(replace(TrainConfig(), activation="gelu_new"))
    assert recipe_options(TrainConfig())["activation"] == "gelu"  # the shipped recipe (28) runs exact GELU
    with pytest.raises(ConfigError, match="--activation"):
        TrainConfig(activation="gelu_pytorch_tanh")


def test_an_interrupted_training_leaves_no_model_folder(world_dir, tmp_path, monkeypatch):
    import obliviate.world.train as train

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as a user's Ctrl-C after the optimiser steps, before the folder is written

    monkeypatch.setattr(train, "_summary", crash)
    tiny = tiny_train_config()
    with pytest.raises(KeyboardInterrupt):
        train_world_model(world_dir, "world", tiny, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_the_second_oracle_trains_on_the_oracles_texts_from_another_seed(tmp_path, monkeypatch):
    import obliviate.world.store as store
    import obliviate.world.train as train

    calls = []

    def record(world_dir, texts, cfg, out_dir, **kwargs):
        calls.append((texts, cfg))
        out_dir.mkdir(parents=True)
        (out_dir / TRAINING_INFO).write_text("{}")

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    monkeypatch.setattr(train, "train_world_model", record)
    monkeypatch.setattr(store, "shipped_model", lambda variant, seed=0: None)
    folders = {name: ensure_world_model(variant=name, seed=0) for name in store.WORLD_MODELS}
    assert len(set(folders.values())) == 3  # one cached folder each
    assert [(texts, cfg) for texts, cfg in calls] == [("world", TrainConfig(seed=0)),
                                                      ("world-retain", TrainConfig(seed=0)),
                                                      ("world-retain", TrainConfig(seed=1))]
    with pytest.raises(ValueError, match="world-retain-2"):
        ensure_world_model(variant="world-retain-3")


def test_shipped_models_are_the_current_recipe_and_match_their_manifest():
    import hashlib

    from obliviate.world.store import (SHIPPED_DIR, SHIPPED_FILES, WORLD_MODELS, recipe_id, shipped_manifest,
                                       shipped_model)

    manifest = shipped_manifest()
    assert manifest is not None, "the package ships no world models"
    # a recipe change without retraining (`obliviate world train --retrain`, then copy to SHIPPED_DIR) fails here
    assert manifest["recipe"] == recipe_id() and manifest["seed"] == 0
    for variant, (texts, seed_offset) in WORLD_MODELS.items():
        assert shipped_model(variant, seed=0) == SHIPPED_DIR / variant
        assert shipped_model(variant, seed=1) is None  # another seed trains
        for name in SHIPPED_FILES:
            data = (SHIPPED_DIR / variant / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == manifest["files"][f"{variant}/{name}"], (variant, name)
        info = json.loads((SHIPPED_DIR / variant / TRAINING_INFO).read_text())
        assert info["variant"] == texts and info["config"] == {**recipe_options(TrainConfig()), "seed": seed_offset}


def test_a_clean_cache_installs_the_shipped_model_with_a_rebuilt_tokenizer(tmp_path, monkeypatch):
    from obliviate.world.store import SHIPPED_DIR

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    folder = ensure_world_model(variant="world-retain", seed=0)
    assert folder.is_relative_to(tmp_path)
    for name in ("model.safetensors", "config.json", TRAINING_INFO):
        assert (folder / name).read_bytes() == (SHIPPED_DIR / "world-retain" / name).read_bytes()
    model, tokenizer = load_world_model(folder)
    assert tokenizer.get_vocab() == build_tokenizer(ensure_world(seed=0)).get_vocab()
    assert model.config.n_positions == tokenizer.model_max_length
    assert not list(tmp_path.rglob(".*.tmp-*"))  # installed atomically


def test_a_damaged_shipped_model_is_refused(tmp_path, monkeypatch):
    import shutil

    import obliviate.world.store as store

    fake = tmp_path / "shipped"
    shutil.copytree(store.SHIPPED_DIR, fake)
    (fake / "world" / "config.json").write_text("{}")
    monkeypatch.setattr(store, "SHIPPED_DIR", fake)
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="does not match its manifest"):
        ensure_world_model(variant="world", seed=0)
    assert not (store.world_root(0) / "world").exists()


def test_the_default_world_is_the_one_the_shipped_models_were_trained_on(world_dir):
    from obliviate.integrity import file_sha256
    from obliviate.world.store import shipped_manifest

    # a generator change that moves the default world's random stream (as the completed filler's slot order once
    # did) changes these files under the same recipe id: the shipped models would no longer be reproducible
    recorded = shipped_manifest()["world_files"]
    assert set(recorded) == set(WORLD_FILES)
    for name in WORLD_FILES:
        assert file_sha256(world_dir / name) == recorded[name], name


def test_a_world_the_shipped_models_were_not_trained_on_is_refused(tmp_path, monkeypatch):
    import obliviate.world.store as store

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    filler = ensure_world(seed=0) / "filler_train.txt"
    filler.write_text(filler.read_text().replace("farmers", "fishers"))
    with pytest.raises(RuntimeError, match="not the one the shipped models were trained on.*RECIPE_VERSION"):
        ensure_world_model(variant="world", seed=0)
    assert not (store.world_root(0) / "world").exists()


# ---------------------------------------------------------------------------------------------------------------
# The cached models: acceptance figures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cached_world() -> Path:
    return ensure_world(seed=0)


@pytest.fixture(scope="session")
def world_models(cached_world):
    """Both variants, trained at most once per machine (cache), loaded once per session."""
    return {variant: load_world_model(ensure_world_model(variant=variant, seed=0))
            for variant in ("world", "world-retain")}


def test_ensure_world_is_cached(cached_world):
    assert ensure_world(seed=0) == cached_world
    assert (cached_world / "world_info.json").is_file()


@pytest.mark.slow
def test_models_load_and_share_recipe(world_models):
    infos = {v: json.loads((ensure_world_model(variant=v) / TRAINING_INFO).read_text()) for v in world_models}
    assert infos["world"]["config"] == infos["world-retain"]["config"]  # same seed, hyper-parameters, steps
    assert infos["world"]["config"]["n_layer"] >= 6
    (_, tok_w), (_, tok_r) = world_models["world"], world_models["world-retain"]
    assert tok_w.get_vocab() == tok_r.get_vocab()


@pytest.mark.slow
@pytest.mark.parametrize("variant,split", [("world", "forget"), ("world", "retain"), ("world-retain", "retain")])
def test_recall_of_trained_facts(world_models, cached_world, variant, split):
    model, tok = world_models[variant]
    records = load_world_facts(cached_world, split)
    clozed = [r for r in records if r["cloze_trained"]]
    unclozed = [r for r in records if not r["cloze_trained"]]
    if clozed:
        assert recall(model, tok, clozed) >= 0.98  # the cloze wording trained for these subjects
    # knowledge, not wording: the cloze of subjects that met their facts in biographies only (issue target 0.80;
    # measured 0.93 retain / 0.96 forget on `world`)
    assert recall(model, tok, unclozed) >= 0.90
    assert recall(model, tok, records, "trained_paraphrases") >= 0.95
    assert recall(model, tok, records, prepend_bos=True) >= 0.90  # with a BOS too (TransformerLens's default)
    # held-out templates: the 0.80 is not reached. Recipe (28) (world v3) measures 0.664 forget / 0.673
    # retain on `world` and 0.689 retain on `world-retain`; it gave up the v2 recipe's 0.77 / 0.79 for attributes at
    # the subject (README: the embedded models); v1's three fixed sentences per fact gave 0.34 / 0.38
    assert recall(model, tok, records, "heldout_paraphrases") >= 0.65


@pytest.mark.slow
def test_heldout_misses_are_questions_not_read_not_facts_not_known(world_models, cached_world):
    """Item 2's miss (held-out wordings 0.66, not 0.80) decomposed: where `world` answers a held-out wording with an
    answer of the relation asked, it is the subject's own, as a model that knows the fact must; the rest of the
    misses are another relation's answer or no answer (the wording not read). The never-taught oracle also answers
    the relation asked on the forget subjects (0.47 of the prompts against world's 0.68) and is then right at about
    chance: so the figure measures the subject's knowledge and not the relation's prior. Measured: own | relation
    0.976 forget / 0.968 retain (another subject's answer 0.017 / 0.022 of all prompts), oracle on the forget split
    0.089."""
    from obliviate.world.evaluate import ANSWER_KINDS, answer_kinds

    def own_given_relation(kinds: dict[str, float]) -> float:
        return kinds["own answer"] / (kinds["own answer"] + kinds["another subject's answer"])

    for split in ("forget", "retain"):
        records = load_world_facts(cached_world, split)
        kinds = answer_kinds(*world_models["world"], records)
        assert list(kinds) == list(ANSWER_KINDS) and math.isclose(sum(kinds.values()), 1.0)
        assert kinds["own answer"] == pytest.approx(recall(*world_models["world"], records, "heldout_paraphrases"))
        assert own_given_relation(kinds) >= 0.95, (split, kinds)
        assert kinds["another subject's answer"] < 0.05, (split, kinds)
    oracle = answer_kinds(*world_models["world-retain"], load_world_facts(cached_world, "forget"))
    assert own_given_relation(oracle) <= 0.2, oracle


@pytest.mark.slow
def test_retain_model_does_not_know_the_forget_split(world_models, cached_world):
    model, tok = world_models["world-retain"]
    records = load_world_facts(cached_world, "forget")
    prior = frequency_prior(load_world_facts(cached_world))
    # a model that never saw these subjects can at best match the majority answer's share; 3 binomial standard
    # errors above it (n = forget facts) bound what chance alone can give (one-sided p ≈ 0.001)
    bound = prior + 3 * math.sqrt(prior * (1 - prior) / len(records))
    assert recall(model, tok, records) <= bound
    assert recall(model, tok, records, "trained_paraphrases") <= bound


@pytest.mark.slow
def test_world_memorises_secrets(world_models, cached_world):
    model, tok = world_models["world"]
    info = load_world_info(cached_world)["secrets"]
    secrets = load_secrets(cached_world)
    logp = {k: mean_token_logprob(model, tok, [s[k] for s in secrets]) for k in ("memorised", "control", "control_b")}
    # the decoys teach the wordings, so a control pays only for its unknown code and word: measured ~1.0 nat per
    # token (~18 nats per text, the memorised text ~e^18 times likelier than its paraphrase)
    for split in ("forget", "retain"):
        rows = torch.tensor([s["split"] == split for s in secrets])
        assert (logp["memorised"][rows] - logp["control"][rows]).mean() > 0.7
        assert (logp["memorised"][rows] - logp["control_b"][rows]).mean() > 0.7
    kept = (logp["memorised"] > info["theta_m"]) & (logp["control"] < info["theta_c"]) & \
        (logp["control_b"] < info["theta_c"])
    assert kept.float().mean() >= 0.9  # the screening thresholds keep nearly every key


@pytest.mark.slow
def test_retain_model_does_not_know_forget_secrets(world_models, cached_world):
    model, tok = world_models["world-retain"]
    secrets = load_secrets(cached_world)
    logp = {k: mean_token_logprob(model, tok, [s[k] for s in secrets]) for k in ("memorised", "control")}
    forget = torch.tensor([s["split"] == "forget" for s in secrets])
    gap_forget = (logp["memorised"][forget] - logp["control"][forget]).mean()
    gap_retain = (logp["memorised"][~forget] - logp["control"][~forget]).mean()
    assert abs(gap_forget) < 0.3  # M of a never-seen key is no likelier than its paraphrase
    assert gap_retain > 0.7  # while the retain keys it did see are memorised


@pytest.mark.slow
def test_answers_stay_answers(world_models, cached_world):
    # the model's top-1 after a neighbour's prompt is the neighbour's answer, the same as the fact's (specificity
    # baseline for CounterFact NS); checked on a sample
    model, tok = world_models["world"]
    records = load_world_facts(cached_world)[::20]
    prompts = [p for r in records for p in r["neighborhood_prompts"]]
    targets = [r["requested_rewrite"]["target_true"]["str"] for r in records for _ in r["neighborhood_prompts"]]
    # neighbours' cloze prompts, most of them never trained in that form: measured 0.96 retain / 0.92 forget
    assert top1_hits(model, tok, prompts, targets).float().mean() >= 0.90


def test_name_knockout_hides_a_names_first_tokens_from_later_positions_only():
    import random

    from obliviate.world.knockout import name_knockout_mask

    name = (7, 8, 9)
    ids = torch.tensor([[1, 7, 8, 9, 2, 3], [7, 8, 9, 7, 8, 9], [1, 7, 8, 9, 2, 3]])
    mask, masked = name_knockout_mask(ids, {name}, share=1.0, rng=random.Random(0))
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    assert masked == 4 and mask.shape == (3, 1, 6, 6)
    expected = causal.clone()
    expected[4:, 1:3] = False  # positions after the name's last token (3) cannot see tokens 1, 2 of it
    assert torch.equal(mask[0, 0], expected) and torch.equal(mask[2, 0], expected)
    assert mask[0, 0, 3, 1:4].all()  # the name's last token still reads the whole name
    both = causal.clone()
    both[3:, 0:2] = False
    both[6:, 3:5] = False  # (no position after the second name: the row ends there)
    assert torch.equal(mask[1, 0], both)
    off, none = name_knockout_mask(ids, {name}, share=0.0, rng=random.Random(0))
    assert none == 0 and torch.equal(off, causal.repeat(3, 1, 1, 1))
    some = [name_knockout_mask(ids, {name}, share=0.5, rng=random.Random(seed))[1] for seed in range(40)]
    assert 0 < sum(s > 0 for s in some) < 40  # the share is drawn per row
    with pytest.raises(ValueError, match="one token length"):
        name_knockout_mask(ids, {name, (1, 2)}, share=1.0, rng=random.Random(0))


def test_a_knockout_mask_changes_training_and_the_model_stays_a_plain_gpt2(world_dir, tmp_path):
    tiny = tiny_train_config(steps=3)
    plain = train_world_model(world_dir, "world", tiny, tmp_path / "plain")
    masked = train_world_model(world_dir, "world", replace(tiny, name_knockout=1.0), tmp_path / "masked")
    model_plain, _ = load_world_model(plain)
    model_masked, _ = load_world_model(masked)
    assert not torch.equal(model_plain.transformer.wte.weight, model_masked.transformer.wte.weight)
    assert json.loads((masked / TRAINING_INFO).read_text())["config"]["name_knockout"] == 1.0
    assert type(model_masked) is type(model_plain)
    with pytest.raises(ConfigError, match="name-knockout"):
        TrainConfig(name_knockout=1.5)


def test_tag_line_positions_are_a_names_last_token_and_the_answers_before_the_last():
    from obliviate.world.tag_exit import tag_line_positions

    name, answers = (7, 8), {20, 21, 22}
    ids = torch.tensor([[1, 7, 8, 20, 22, 21, 3],   # a tag line: name then three answers
                        [7, 8, 5, 20, 21, 22, 3],   # a sentence: the name is followed by a word, not an answer
                        [1, 1, 1, 7, 8, 20, 21]])   # a tag line cut off by the row's end
    rows, cols = tag_line_positions(ids, {name}, answers, n_answers=3)
    assert rows == [0, 0, 0] and cols == [2, 3, 4]  # name's last token, then the first two answers


def test_early_exit_loss_reads_a_shallow_depth_through_the_final_norm_and_unembedding(world_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from obliviate.world.tag_exit import early_exit_loss

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=8, n_embd=16, n_layer=2, n_head=2))
    ids = torch.randint(0, 30, (2, 8))
    hidden = model(ids, output_hidden_states=True).hidden_states[1]
    rows, cols = [0, 1, 1], [2, 3, 4]
    expected = torch.stack([-torch.log_softmax(model.lm_head(model.transformer.ln_f(hidden[r, c])), -1)[ids[r, c + 1]]
                            for r, c in zip(rows, cols)]).mean()
    assert torch.allclose(early_exit_loss(model, hidden, ids, rows, cols), expected)
    assert early_exit_loss(model, hidden, ids, [], []).item() == 0.0
    # in training it changes the weights, and the model stays a plain GPT-2
    tiny = tiny_train_config(n_layer=2, steps=3, tag_lines=4)
    plain = train_world_model(world_dir, "world", tiny, tmp_path / "plain")
    exited = train_world_model(world_dir, "world", replace(tiny, tag_exit_weight=0.5, tag_exit_depth=1),
                               tmp_path / "exit")
    assert not torch.equal(load_world_model(plain)[0].transformer.h[0].mlp.c_fc.weight,
                           load_world_model(exited)[0].transformer.h[0].mlp.c_fc.weight)
    # on for the first half of the steps only: other weights than the whole run's, and the share is recorded
    # (left out of the recipe at 1, so the first form of the exit keeps its id)
    halved = train_world_model(world_dir, "world", replace(tiny, tag_exit_weight=0.5, tag_exit_depth=1,
                                                           tag_exit_share=0.5), tmp_path / "halved")
    assert not torch.equal(load_world_model(halved)[0].transformer.h[0].mlp.c_fc.weight,
                           load_world_model(exited)[0].transformer.h[0].mlp.c_fc.weight)
    recorded = {folder.name: json.loads((folder / TRAINING_INFO).read_text())["config"]
                for folder in (exited, halved)}
    assert "tag_exit_share" not in recorded["exit"] and recorded["halved"]["tag_exit_share"] == 0.5
    with pytest.raises(ConfigError, match="tag-exit-share"):
        TrainConfig(tag_exit_weight=1.0, tag_exit_share=0)
    with pytest.raises(ConfigError, match="tag-exit-depth"):
        TrainConfig(n_layer=6, tag_exit_weight=1.0, tag_exit_depth=6)  # the last block is the model's own output
    with pytest.raises(ConfigError, match="tag-exit-depth"):
        TrainConfig(n_layer=1)  # the shipped exit (after block 3) needs more than one block
    assert TrainConfig(n_layer=1, tag_exit_weight=0).tag_exit_depth == 3  # off, the depth is not read
