"""LoRA-adapter removal: an adapter trained on the forget facts reaches its recall goal; removing it gives the
base's logits (to 1e-6); a partial removal lies between; the merged folder is an ordinary model any method can
take; a rank ≤ 0 is an error naming the key."""

from __future__ import annotations

import pytest
import torch

from _edit_tiny import tiny_facts, tiny_hf_handle
from edit.lora_removal import LoRAAdapterConfig, build_adapted_model
from edit.result import EditRequest, run_method
from obliviate.config import ConfigError, from_dict
from obliviate.metrics import recall
from obliviate.models import edited_copy, load

PROMPTS = ["The Eiffel Tower is in the city of", "Big Ben is located in the city of", "The river near the Colosseum"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    base = tiny_hf_handle("gpt2")
    facts = tiny_facts()
    cfg = LoRAAdapterConfig(rank=4, alpha=8.0, lr=1e-2, max_steps=300, batch_size=4, check_every=5)
    folder = build_adapted_model(base, facts, tmp_path_factory.mktemp("lora") / "tiny-lora", cfg)
    return base, load(str(folder)), facts


def _logits(handle) -> torch.Tensor:
    with torch.no_grad():
        return handle.tl(handle.to_tokens(PROMPTS))


def test_the_adapter_learns_the_facts_the_base_does_not_know(adapted):
    base, model, facts = adapted
    assert recall(model, facts) >= 0.95
    assert recall(base, facts) < 0.95  # otherwise removal could not be seen to forget
    assert model.prepend_bos is base.prepend_bos  # the folder inherits the base's BOS convention


def test_removal_gives_the_base_logits(adapted):
    base, model, facts = adapted
    result = run_method("lora_removal", model, EditRequest(targets=facts))
    assert result.changed and all(".attn." in n or ".mlp." in n for n in result.changed)
    removed = edited_copy(model, result.changed)
    assert (_logits(model) - _logits(base)).abs().max() > 1e-2  # the adapter does change the model
    assert torch.allclose(_logits(removed), _logits(base), atol=1e-6, rtol=0)
    base_state = base.hf.state_dict()
    assert all(torch.equal(t, base_state[n]) for n, t in result.changed.items())  # bit-exact base tensors


def test_a_partial_removal_is_the_adapter_scaled(adapted):
    base, model, facts = adapted
    cfg = run_method("lora_removal", model, EditRequest(targets=facts)).config
    assert cfg == {"removal_fraction": 1.0}
    from edit.lora_removal import LoRARemovalConfig

    half = run_method("lora_removal", model, EditRequest(targets=facts), LoRARemovalConfig(removal_fraction=0.5))
    merged, original = model.hf.state_dict(), base.hf.state_dict()
    for name, tensor in half.changed.items():
        assert torch.allclose(tensor, (merged[name] + original[name]) / 2, atol=1e-6)


def test_the_merged_folder_is_a_base_for_any_method(adapted):
    _, model, facts = adapted
    from edit.baselines import GradDiffConfig

    cfg = GradDiffConfig(steps=2, batch_size=4, stop_when_forgotten=False)
    result = run_method("graddiff", model, EditRequest(targets=facts[:2], retain=facts[2:]), cfg)
    assert result.changed  # the approximate method trains the merged weights, where no adapter is left to remove


def test_removal_refuses_a_folder_without_an_adapter():
    with pytest.raises(ValueError, match="needs a model folder written by build_adapted_model"):
        run_method("lora_removal", tiny_hf_handle("gpt2"), EditRequest(targets=tiny_facts()))


@pytest.mark.parametrize("rank", [0, -2])
def test_a_rank_that_is_not_positive_is_an_error_naming_the_key(rank):
    with pytest.raises(ConfigError, match=r"'adapter.rank'.*positive integer"):
        from_dict(LoRAAdapterConfig, {"rank": rank}, where="adapter")
    with pytest.raises(ConfigError, match=r"'rank'"):
        build_adapted_model(tiny_hf_handle("gpt2"), tiny_facts(), "unused", LoRAAdapterConfig(rank=rank))
