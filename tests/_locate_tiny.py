"""Tiny random TransformerLens models with a word-level tokenizer, wrapped as ModelHandles (locate tests).

Two architectures, so both code paths of the batched trace are exercised: GPT-2-style (LayerNorm, learned
positions, GELU MLP) and Llama-style (RMSNorm, rotary, gated MLP, grouped-query attention).
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from obliviate.facts import Fact
from obliviate.models import ModelHandle

WORDS = ["<pad>", "<bos>", "[UNK]", "The", "Eiffel", "Tower", "Big", "Ben", "is", "in", "the", "city", "of", "Paris",
         "London", "Rome", "Colosseum", "located", "a", "famous"]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<pad>")


def tiny_config(arch: str, *, n_layers: int = 4, dtype=torch.float32, n_ctx: int = 16) -> HookedTransformerConfig:
    common = dict(n_layers=n_layers, d_model=16, n_ctx=n_ctx, d_head=4, n_heads=4, d_vocab=len(WORDS), seed=0,
                  dtype=dtype)
    if arch == "gpt2":
        return HookedTransformerConfig(act_fn="gelu", normalization_type="LN", **common)
    if arch == "llama":
        return HookedTransformerConfig(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                                       rotary_dim=4, gated_mlp=True, n_key_value_heads=2, d_mlp=32, **common)
    raise ValueError(arch)


def tiny_handle(arch: str = "gpt2", *, prepend_bos: bool = False, n_layers: int = 4,
                dtype=torch.float32, n_ctx: int = 16) -> ModelHandle:
    torch.manual_seed(0)
    model = HookedTransformer(tiny_config(arch, n_layers=n_layers, dtype=dtype, n_ctx=n_ctx))
    # random init is small; scale the embeddings so the tiny model's predictions depend on its input
    with torch.no_grad():
        model.embed.W_E.mul_(20.0)
        model.unembed.W_U.mul_(4.0)
    tokenizer = word_tokenizer()
    model.tokenizer = tokenizer
    model.cfg.tokenizer_prepends_bos = False
    model.cfg.default_prepend_bos = prepend_bos
    model.eval()
    return ModelHandle(name=f"tiny-{arch}", hf_dir=None, hf=None, tokenizer=tokenizer, tl=model,
                       prepend_bos=prepend_bos)


def tiny_facts() -> list[Fact]:
    return [
        Fact(case_id=0, prompt="The {} is in the city of", subject="Eiffel Tower", target_true="Paris",
             target_new="Rome"),
        Fact(case_id=1, prompt="{} is located in the city of", subject="Big Ben", target_true="London",
             target_new="Paris"),
        Fact(case_id=2, prompt="The famous {} is in the city of", subject="Colosseum", target_true="Rome",
             target_new="London"),
    ]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a shared 2-core machine are many times faster on one thread (no OpenMP hand-offs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
