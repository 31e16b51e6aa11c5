"""SISA on a tiny config (4 shards × 2 slices, 3 steps a slice, 1-block width-16 constituents) over the fact world:
the aggregate's logits are the log of the averaged probabilities; unlearning leaves untouched shards bit-identical,
never shows the retrained shard a forgotten text, and equals training that shard from scratch without the subject;
an interrupted retrain leaves the old model usable and names the shard to rerun; too many shards is an error
naming the key."""

from __future__ import annotations

import filecmp
import json
import os
import random
from pathlib import Path

import pytest
import torch

from obliviate.config import ConfigError, from_dict
from obliviate.world import sisa
from obliviate.world.sisa import SISAConfig, UnlearningInterrupted, deal, read_manifest, train_sisa, unlearn

# world v3's recipe in miniature: tag lines, name knockout and the early exit after block 1 of 2 are all on, so
# the exactness tests below cover them (their masks and exit positions must be drawn again the same way)
TINY = dict(shards=4, slices=2, steps_per_slice=3, n_layer=2, n_embd=16, n_head=2, batch_size=2, n_positions=96,
            warmup_steps=1, num_threads=1, tag_exit_depth=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_sisa(tmp_path_factory.mktemp("sisa") / "tiny", SISAConfig(**TINY))


def _subject_in(folder: Path, shard: int, slice_index: int) -> str:
    return read_manifest(folder)["plan"]["subjects"][shard][slice_index][0]


def _same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and \
        all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_the_aggregate_logits_are_the_log_of_the_averaged_probabilities(trained):
    from transformers import AutoModelForCausalLM

    from obliviate.metrics import recall
    from obliviate.models import load
    from obliviate.targets import resolve_facts
    from obliviate.world.sisa import constituent_dirs

    handle = load(str(trained))
    tokens = handle.to_tokens(["Belith Jassander was born in the city of", "The city of"])
    with torch.no_grad():
        probs = torch.stack([AutoModelForCausalLM.from_pretrained(d)(input_ids=tokens).logits.softmax(-1)
                             for d in constituent_dirs(trained)]).mean(0)
        assert torch.allclose(handle.tl(tokens), probs.log(), atol=1e-5)
        assert torch.allclose(handle.hf(input_ids=tokens).logits, probs.log(), atol=1e-5)
    assert 0.0 <= recall(handle, resolve_facts("world", split="forget")[:12]) <= 1.0  # scoreable like any model


def test_unlearning_retrains_only_the_shard_that_held_the_subject(trained, tmp_path, monkeypatch):
    forgotten = _subject_in(trained, 1, 1)  # shard 1, slice 1: restart from the slice-0 checkpoint
    seen: list[str] = []
    real = sisa.slice_texts

    def recording(world_dir, subjects, filler, repeats, tag_lines):
        fixed, fresh = real(world_dir, subjects, filler, repeats, tag_lines)
        seen.extend(fixed + fresh(random.Random(0)))
        return fixed, fresh

    monkeypatch.setattr(sisa, "slice_texts", recording)
    record = unlearn(trained, [forgotten], tmp_path / "out")
    assert record["retrained_shards"] == [1] and record["restart_slice"] == {"1": 1}
    assert record["retrained_steps"] == 3 and record["full_retrain_steps"] == 24
    for shard in (0, 2, 3):  # untouched shards: every checkpoint byte for byte
        for r in (0, 1):
            part = Path(f"shard-{shard}") / f"slice-{r}"
            assert _same_files(trained / part, tmp_path / "out" / part)
    assert _same_files(trained / "shard-1" / "slice-0", tmp_path / "out" / "shard-1" / "slice-0")
    assert not _same_files(trained / "shard-1" / "slice-1", tmp_path / "out" / "shard-1" / "slice-1")
    # the retrained slice saw texts, none about the forgotten subject (the same call on the old plan shows it)
    assert seen and not any(forgotten in text for text in seen)
    old = read_manifest(trained)["plan"]
    fixed, fresh = real(_world(), old["subjects"][1][0] + old["subjects"][1][1], [], 1)
    assert any(forgotten in text for text in fixed + fresh(random.Random(0)))
    assert forgotten not in sum(read_manifest(tmp_path / "out")["plan"]["subjects"][1], [])


def _world() -> Path:
    from obliviate.world import ensure_world

    return ensure_world(seed=0)


def test_retraining_from_the_checkpoint_equals_training_the_reduced_shard_from_scratch(trained, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    forgotten = _subject_in(trained, 2, 1)
    unlearn(trained, [forgotten], tmp_path / "out")
    plan = read_manifest(tmp_path / "out")["plan"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(trained / "tokenizer")
    sisa._train_shard(scratch, _world(), tokenizer, SISAConfig(**TINY), plan, 2, 0, None)
    got = load_file(str(tmp_path / "out" / "shard-2" / "slice-1" / "model.safetensors"))
    want = load_file(str(scratch / "slice-1" / "model.safetensors"))
    # bit-equal when the process runs single-threaded (OMP_NUM_THREADS=1, measured); with the default OpenMP pool
    # some CPU kernels reduce in a varying order and the two runs differ by about 1e-5 after six steps
    diff = max((got[k] - want[k]).abs().max().item() for k in want)
    assert diff < 1e-4, diff
    if os.environ.get("OMP_NUM_THREADS") == "1":
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_never_taught_variant_is_what_unlearning_the_forget_split_gives(trained, tmp_path):
    """SISA's claim at the level of a whole ensemble: `variant: world-retain` (trained from scratch without the
    forget split's subjects) equals the `world` ensemble with those subjects unlearned, shard by shard."""
    from safetensors.torch import load_file

    from obliviate.world.generate import load_world_facts
    from obliviate.world.sisa import constituent_dirs

    forget = sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(_world(), "forget")})
    unlearn(trained, forget, tmp_path / "unlearned")
    never = train_sisa(tmp_path / "never", SISAConfig(**TINY, variant="world-retain"))
    assert read_manifest(never)["excluded_subjects"] == forget
    assert read_manifest(never)["plan"] == read_manifest(tmp_path / "unlearned")["plan"]
    assert not any(name in forget for shard in read_manifest(never)["plan"]["subjects"] for part in shard
                   for name in part)
    for got_dir, want_dir in zip(constituent_dirs(tmp_path / "unlearned"), constituent_dirs(never)):
        got, want = (load_file(str(d / "model.safetensors")) for d in (got_dir, want_dir))
        diff = max((got[k] - want[k]).abs().max().item() for k in want)  # see the test above on threads
        assert diff < 1e-4, (got_dir, diff)
        if os.environ.get("OMP_NUM_THREADS") == "1":
            assert all(torch.equal(got[k], want[k]) for k in want)
    full = load_file(str(constituent_dirs(trained)[0] / "model.safetensors"))
    assert any(not torch.allclose(full[k], load_file(str(constituent_dirs(never)[0] / "model.safetensors"))[k])
               for k in full)  # the forget split's texts did change the ensemble that saw them


def test_an_interrupted_retrain_keeps_the_old_model_and_names_the_shard(trained, tmp_path, monkeypatch):
    from obliviate.models import load

    first, second = _subject_in(trained, 0, 0), _subject_in(trained, 3, 1)
    before = load(str(trained))
    tokens = before.to_tokens(["The city of"])
    calls: list[int] = []
    real = sisa.train_slice

    def failing(model, optimiser, tokenizer, world_dir, cfg, shard, slice_index, subjects, filler):
        calls.append(shard)
        if shard == 3:
            raise MemoryError("out of memory")
        return real(model, optimiser, tokenizer, world_dir, cfg, shard, slice_index, subjects, filler)

    monkeypatch.setattr(sisa, "train_slice", failing)
    with pytest.raises(UnlearningInterrupted, match=r"stopped in shard 3 .*unchanged and still usable.*resumes at "
                                                    r"shard 3"):
        unlearn(trained, [first, second], tmp_path / "out")
    with torch.no_grad():  # the previous constituents load and predict as before
        assert torch.equal(load(str(trained)).tl(tokens), before.tl(tokens))
    with pytest.raises(FileNotFoundError, match="not a finished SISA model.*shard-0"):
        read_manifest(tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(sisa, "train_slice", lambda *a: (calls.append(a[5]), real(*a))[1])
    record = unlearn(trained, [first, second], tmp_path / "out")
    assert calls == [3] and record["retrained_now"] == [3]  # shard 0 was finished: the rerun resumed at shard 3
    assert record["retrained_shards"] == [0, 3]


def test_the_sisa_edit_gives_the_unlearned_aggregate(trained, tmp_path):
    from edit.result import EditRequest, run_method
    from obliviate.facts import Fact
    from obliviate.models import edited_copy, load
    from obliviate.registry import EDITS

    subject = _subject_in(trained, 0, 1)
    fact = Fact(case_id=0, prompt="{} was born in the city of", subject=subject, target_true="x", target_new="y")
    handle = load(str(trained))
    cfg = EDITS.get("sisa").params({"work_dir": str(tmp_path / "u")})
    result = run_method("sisa", handle, EditRequest(targets=[fact]), cfg)
    assert result.changed and all(k.startswith("constituents.0.") for k in result.changed)
    tokens = handle.to_tokens([f"{subject} was born in the city of"])
    with torch.no_grad():
        assert torch.allclose(edited_copy(handle, result.changed).tl(tokens), load(str(tmp_path / "u")).tl(tokens),
                              atol=1e-6)
        assert not torch.allclose(handle.tl(tokens), load(str(tmp_path / "u")).tl(tokens))


def test_a_constituent_handle_predicts_exactly_as_that_constituent(trained):
    from transformers import AutoModelForCausalLM

    from obliviate.ensemble import constituent_handle
    from obliviate.models import load
    from obliviate.world.sisa import constituent_dirs

    handle = load(str(trained))
    tokens = handle.to_tokens(["Belith Jassander was born in the city of"])
    with torch.no_grad():
        alone = AutoModelForCausalLM.from_pretrained(constituent_dirs(trained)[2])(input_ids=tokens).logits
        assert torch.allclose(constituent_handle(handle, 2).tl(tokens), alone.log_softmax(-1), atol=1e-5)
        assert not torch.allclose(constituent_handle(handle, 1).tl(tokens), alone.log_softmax(-1), atol=1e-3)


def test_quantizing_the_aggregate_quantizes_each_constituent_alone(trained):
    from audit.quantization import quantized_tl
    from obliviate.models import load

    tl = load(str(trained)).tl
    quantized = quantized_tl(tl, "int8")
    for member, alone in zip(quantized.models, tl.models):
        assert torch.equal(member.W_in, quantized_tl(alone, "int8").W_in)
        assert not torch.equal(member.W_in, alone.W_in)  # the copy is rounded; the original is untouched


@pytest.mark.slow
def test_a_sisa_unlearning_runs_through_edit_and_audit_and_shows_nothing_beyond_its_oracle(trained, tmp_path):
    """`obliviate run` on a SISA folder: the checks before the stages read its tokenizer, the sisa edit retrains,
    and the audit attacks the aggregate through logits (no residual-stream comparison: an ensemble has none).
    The oracle is SISA's own recipe without the split (`variant: world-retain`, same seed), which the unlearning
    must equal: no attack gets anything back beyond it, no target is suppressed, an intact one the oracle answers."""
    from obliviate.cli import main

    never = train_sisa(tmp_path / "never", SISAConfig(**TINY, variant="world-retain"))
    config = tmp_path / "sisa.yaml"
    # the whole forget split (120 targets): the oracle lacks all of its subjects, so unlearning fewer would leave
    # the ensemble and its oracle apart on the rest
    config.write_text(f"model: {trained}\nfacts: world\nsplit: forget\nseed: 0\nlocate: {{methods: []}}\n"
                      f"edits:\n  - {{method: sisa, goal: erase, params: {{work_dir: {tmp_path / 'u'}}}}}\n"
                      f"audit: {{attacks: [keyword, quantization, in_context], reference: {never}}}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) in (0, None)
    audited = json.loads((tmp_path / "run" / "audit-sisa.json").read_text())
    assert sum(audited["metrics"]["verdict_counts"].values()) == 120
    assert audited["metrics"]["verdict_counts"].get("suppressed", 0) == 0
    assert set(audited["metrics"]["attacks"]) == {"keyword", "quantization", "in_context"}
    assert "representation" not in audited["metrics"]
    assert read_manifest(tmp_path / "u")["removed_subjects"]  # the unlearned ensemble the edit trained
    for target in audited["targets"]:
        assert target["verdict"] == "erased" or target["oracle_answers"], target
        for name, row in target["attacks"].items():
            assert abs(row["attacked"] - row["oracle_attacked"]) < 1e-3, (name, row)


def test_a_slice_trains_tag_lines_and_an_old_manifest_reads_as_the_recipe_it_was_trained_with():
    """World v3's tag lines are in a slice's texts (about its subjects only), and a manifest written before the
    tag-line fields existed (world v2's ensembles) unlearns with them off rather than with today's defaults."""
    plan = deal(_world(), SISAConfig(**TINY))
    mine = plan["subjects"][0][0][:3]
    _, fresh = sisa.slice_texts(_world(), mine, [], 1, tag_lines=2)
    texts = fresh(random.Random(0))
    from obliviate.world.generate import load_world_facts

    answers = {r["requested_rewrite"]["target_true"]["str"] for r in load_world_facts(_world())
               if r["requested_rewrite"]["subject"] == mine[0]}
    tags = [t for t in texts if t.startswith(mine[0] + " ") and set(t[len(mine[0]) + 1:-1].split()) == answers]
    assert len(tags) == 2
    _, bare = sisa.slice_texts(_world(), mine, [], 1, tag_lines=0)
    assert len(fresh(random.Random(0))) == len(bare(random.Random(0))) + 2 * len(mine)
    v2 = {k: v for k, v in SISAConfig(n_layer=6, n_embd=128, mlp_ratio=4, activation="gelu_new").__dict__.items()
          if k not in ("tag_lines", "name_knockout", "tag_exit_weight", "tag_exit_depth")}
    old = SISAConfig.from_manifest(v2)
    assert (old.tag_lines, old.name_knockout, old.tag_exit_weight) == (0, 0.0, 0.0)
    assert old.train_config().tag_lines == 0 and old.train_config().n_embd == 128
    new = SISAConfig()
    assert (new.n_layer, new.n_embd, new.mlp_ratio, new.activation) == (8, 64, 8, "gelu")
    assert SISAConfig.from_manifest(new.__dict__) == new


def test_a_constituent_trains_with_name_knockout_and_the_early_exit(trained, tmp_path, monkeypatch):
    """Each step of a slice draws a knockout mask (at the configured share) and adds the early-exit loss read after
    block `tag_exit_depth`; with both off (a v2 manifest) neither is called."""
    from transformers import AutoTokenizer

    from obliviate.world import train

    calls = {"mask": [], "exit": []}
    real_mask, real_exit = train.name_knockout_mask, train.early_exit_loss
    monkeypatch.setattr(train, "name_knockout_mask", lambda ids, names, share, rng: (
        calls["mask"].append((share, len(names))), real_mask(ids, names, share, rng))[1])
    monkeypatch.setattr(train, "early_exit_loss", lambda model, hidden, *a: (
        calls["exit"].append(hidden.shape), real_exit(model, hidden, *a))[1])
    tokenizer = AutoTokenizer.from_pretrained(trained / "tokenizer")
    plan = read_manifest(trained)["plan"]
    sisa._train_shard(tmp_path / "v3", _world(), tokenizer, SISAConfig(**TINY), plan, 0, 1, None)
    assert calls["mask"] == [(0.75, 200)] * 3 and len(calls["exit"]) == 3
    off = SISAConfig(**{**TINY, "name_knockout": 0.0, "tag_exit_weight": 0.0})
    sisa._train_shard(tmp_path / "v2", _world(), tokenizer, off, plan, 0, 1, None)
    assert len(calls["mask"]) == 3 and len(calls["exit"]) == 3


def test_more_shards_than_subjects_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"'shards'.*201 shards for 200 subjects"):
        deal(_world(), SISAConfig(**{**TINY, "shards": 201}))
    with pytest.raises(ConfigError, match=r"'sisa.shards'"):
        from_dict(SISAConfig, {"shards": 1}, where="sisa")
    with pytest.raises(ConfigError, match=r"'variant'.*world-retain"):
        SISAConfig(variant="retain").validate()
    with pytest.raises(ConfigError, match=r"'tag_exit_depth'.*n_layer 2"):
        SISAConfig(**{**TINY, "tag_exit_depth": 2}).validate()
    with pytest.raises(ConfigError, match=r"'name_knockout'"):
        SISAConfig(name_knockout=1.5).validate()
    assert json.loads((_world() / "world_info.json").read_text())["config"]["n_subjects"] == 200
