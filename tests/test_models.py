"""Model loading: a local HF folder, an artefact applied in memory (base files untouched), clear offline errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from obliviate.artefacts import save_artefact
from obliviate.hooks import LogitPenalty
from obliviate.models import ModelNotAvailableError, edited_copy, load, weights_file_hash


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny randomly initialised GPT-2 with a word-level tokenizer, saved as a local HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<bos>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "Paris"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<bos>", eos_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=32, n_embd=32, n_layer=2, n_head=4))
    folder = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _file_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


def test_local_folder_loads_with_tl_and_hf_agreeing(tiny_folder):
    handle = load(str(tiny_folder), prepend_bos=False)
    tokens = handle.to_tokens("the cat sat on the mat")
    with torch.no_grad():
        tl_logits = handle.tl(tokens)
        hf_logits = handle.hf(tokens).logits
    assert (tl_logits - hf_logits).abs().max() < 1e-4
    assert handle.answer_token("mat") == handle.tokenizer.convert_tokens_to_ids("mat")


def test_artefact_applies_in_memory_and_never_writes_the_base(tiny_folder, tmp_path):
    before = _file_digest(tiny_folder)
    base = load(str(tiny_folder), prepend_bos=False)
    name = "transformer.h.1.mlp.c_proj.weight"
    changed = {name: base.hf.state_dict()[name] + 0.5}
    tokens = base.to_tokens("the cat sat on the")
    top = int(base.tl(tokens)[0, -1].argmax())
    artefact = save_artefact(tmp_path / "artefact", method="test", base_model=str(tiny_folder),
                             base_model_hash=weights_file_hash(tiny_folder), changed=changed,
                             interventions=[LogitPenalty((top,), penalty=1e4)])
    edited = load(str(tiny_folder), artefact=artefact, prepend_bos=False)
    assert torch.equal(edited.hf.state_dict()[name], changed[name])
    assert torch.allclose(edited.tl.blocks[1].mlp.W_out.detach(), changed[name])
    assert int(edited.tl(tokens)[0, -1].argmax()) != top, "the saved intervention must be attached"
    assert _file_digest(tiny_folder) == before, "loading an artefact must never write the base weights"
    twin = edited_copy(base, changed, [LogitPenalty((top,), penalty=1e4)])
    assert torch.allclose(twin.tl(tokens), edited.tl(tokens), atol=1e-5)
    assert int(base.tl(tokens)[0, -1].argmax()) == top, "edited_copy must leave the base handle as it was"


def test_artefact_for_other_base_weights_is_refused(tiny_folder, tmp_path):
    artefact = save_artefact(tmp_path / "a", method="test", base_model="x", base_model_hash="0" * 64)
    with pytest.raises(ValueError, match="made for base weights"):
        load(str(tiny_folder), artefact=artefact)


def test_unknown_model_offline_names_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as caught:
        load("no-such-org/no-such-model")
    message = str(caught.value)
    assert "not an embedded model" in message and "world" in message and "smollm2-135m" in message
    assert f"nothing is at {Path('no-such-org/no-such-model').resolve()}" in message  # a folder not built yet?
    assert "\n" not in message


@pytest.fixture
def world_from_tiny(tiny_folder, tmp_path, monkeypatch):
    """The tiny folder standing in for the cached world model (so no world is built)."""
    import shutil

    import obliviate.models

    folder = tmp_path / "world"
    shutil.copytree(tiny_folder, folder)
    monkeypatch.setattr(obliviate.models, "resolve_hf_dir", lambda name, show_progress=False: folder)
    return folder


def test_a_corrupted_cached_model_is_an_error_naming_the_file_and_the_command(world_from_tiny):
    from obliviate.integrity import CacheIntegrityError

    load("world", prepend_bos=False)
    weights = world_from_tiny / "model.safetensors"
    weights.write_bytes(bytes(weights.stat().st_size))  # garbage of the same size
    with pytest.raises(CacheIntegrityError, match=f"{weights}.*obliviate world train --variant world --retrain"):
        load("world", prepend_bos=False)


def test_a_truncated_model_names_the_folder_and_the_fix(world_from_tiny):
    from obliviate.integrity import CacheIntegrityError

    weights = world_from_tiny / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CacheIntegrityError, match=f"{world_from_tiny}.*cannot be read.*--retrain"):
        load("world", prepend_bos=False)


def test_an_answer_spelled_by_the_unknown_token_is_refused(tiny_folder):
    handle = load(str(tiny_folder), prepend_bos=False)
    with pytest.raises(ValueError, match="'Zyzzyva' tokenises to the unknown token"):
        handle.answer_token("Zyzzyva")
