"""Tiny random Hugging Face models (GPT-2 and Llama) wrapped as ModelHandles, for the edit tests.

Unlike a bare HookedTransformer, these have the HF model beside the TL one (built offline through
obliviate.tl_wrap), so the TL↔HF name map, the HF mirror of applied deltas and the prefix-cached optimisation
path are all exercised.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from obliviate.facts import Fact
from obliviate.models import ModelHandle

WORDS = ["<pad>", "<bos>", "[UNK]", "The", "Eiffel", "Tower", "Big", "Ben", "is", "in", "the", "city", "of", "Paris",
         "London", "Rome", "Colosseum", "located", "a", "famous", "Therefore", "Because", "I", "You", "and", "it",
         "was", "old", "new", ".", "unknown", "river", "near", "built", "by", "people", "many", "who", "there"]


def word_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<pad>")


def tiny_hf_handle(arch: str = "gpt2", *, n_layers: int = 3, d_model: int = 32, seed: int = 0) -> ModelHandle:
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    from obliviate.tl_wrap import hooked_from_hf

    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(WORDS), n_positions=48, n_embd=d_model, n_layer=n_layers, n_head=4,
                            n_inner=4 * d_model, bos_token_id=1, eos_token_id=0, pad_token_id=0,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3)
        hf = GPT2LMHeadModel(config)
    elif arch == "llama":
        config = LlamaConfig(vocab_size=len(WORDS), hidden_size=d_model, intermediate_size=3 * d_model,
                             num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=48, bos_token_id=1, eos_token_id=0, pad_token_id=0,
                             tie_word_embeddings=False, initializer_range=0.3)
        hf = LlamaForCausalLM(config)
    elif arch == "gemma3":  # post-MLP norms, QK norm, a sliding window shorter than the prompts
        config = Gemma3TextConfig(vocab_size=len(WORDS), hidden_size=d_model, intermediate_size=3 * d_model,
                                  num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                                  head_dim=d_model // 4, query_pre_attn_scalar=d_model // 4, sliding_window=6,
                                  layer_types=["sliding_attention", "full_attention"] * (n_layers // 2)
                                  + ["sliding_attention"] * (n_layers % 2),
                                  max_position_embeddings=48, bos_token_id=1, eos_token_id=0, pad_token_id=0,
                                  initializer_range=0.3)
        hf = Gemma3ForCausalLM(config)
        with torch.no_grad():  # HF initialises the norms' (1 + w) at w = 0; random w exercise them
            for name, param in hf.named_parameters():
                if "norm" in name:
                    param.normal_(0.0, 0.5)
    else:
        raise ValueError(arch)
    hf.config.architectures = [type(hf).__name__]
    hf.eval()
    tokenizer = word_tokenizer()
    with tempfile.TemporaryDirectory(prefix="obliviate-edit-tiny-") as scratch:  # only read while wrapping
        folder = Path(scratch) / f"tiny-{arch}"
        folder.mkdir()
        hf.config.save_pretrained(folder)
        tl = hooked_from_hf(folder, hf, tokenizer, prepend_bos=False)
    return ModelHandle(name=f"tiny-{arch}", hf_dir=None, hf=hf, tokenizer=tokenizer, tl=tl, prepend_bos=False)


def tiny_facts() -> list[Fact]:
    return [
        Fact(case_id=0, prompt="The {} is in the city of", subject="Eiffel Tower", target_true="Paris",
             target_new="Rome", paraphrase_prompts=("The famous {} is located in the city of",),
             neighborhood_prompts=("The Colosseum is in the city of",)),
        Fact(case_id=1, prompt="{} is located in the city of", subject="Big Ben", target_true="London",
             target_new="Paris", neighborhood_prompts=("The Eiffel Tower is in the city of",)),
        Fact(case_id=2, prompt="The famous {} is in the city of", subject="Colosseum", target_true="Rome",
             target_new="London", neighborhood_prompts=("Big Ben is located in the city of",)),
    ]


def tiny_corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A text file of random word sequences (paragraphs), for covariance tests."""
    rng = torch.Generator().manual_seed(seed)
    words = WORDS[3:]
    paragraphs = []
    for _ in range(n):
        idx = torch.randint(len(words), (12,), generator=rng).tolist()
        paragraphs.append(" ".join(words[i] for i in idx))
    path.write_text("\n\n".join(paragraphs))
    return path
