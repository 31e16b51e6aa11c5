"""GradDiff and RMU on the world model: forget recall falls, retain recall holds (loose bounds), the base stays.

Also the suppression calibration case on the world: answers hidden at the output, the residual stream untouched.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world_split():
    from obliviate.targets import resolve_facts

    forget = resolve_facts("world", split="forget", limit=24)
    retain = resolve_facts("world", split="retain", limit=96)
    return forget, retain


def _snapshot(handle) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in handle.hf.named_parameters()}


def _unchanged(handle, snapshot) -> bool:
    return all(torch.equal(p, snapshot[name]) for name, p in handle.hf.named_parameters())


@pytest.mark.parametrize("method", ["graddiff", "rmu"])
def test_finetuning_baselines_forget_keep_retain_and_never_touch_the_base(world_handle, world_split, method):
    from edit.baselines import GradDiffConfig, RMUConfig, edited_handle, graddiff_edit, rmu_edit
    from obliviate.metrics import recall
    from obliviate.models import weights_file_hash

    forget, retain = world_split
    file_hash = weights_file_hash(world_handle.hf_dir)
    snapshot = _snapshot(world_handle)
    forget_before, retain_before = recall(world_handle, forget), recall(world_handle, retain)
    assert forget_before >= 0.8  # the world model knows its facts
    if method == "graddiff":
        result = graddiff_edit(world_handle, forget, retain, GradDiffConfig(steps=40, lr=1e-3, batch_size=24))
    else:
        # every MLP weight of the update layers: the down-projections alone do not unlearn here (edit/baselines.py)
        result = rmu_edit(world_handle, forget, retain, RMUConfig(params="mlp", lr=1e-2, steps=150, batch_size=8))
    assert result.changed
    edited = edited_handle(world_handle, result)
    forget_after, retain_after = recall(edited, forget), recall(edited, retain)
    assert forget_after <= 0.5 * forget_before
    assert retain_after >= retain_before - 0.25
    # the base model, in memory and on disk, is exactly as it was
    assert _unchanged(world_handle, snapshot)
    assert weights_file_hash(world_handle.hf_dir) == file_hash
    assert recall(world_handle, forget) == forget_before
    if method == "rmu":  # only the MLP weights of the update layers moved
        assert set(result.changed) == {f"transformer.h.{i}.mlp.{m}.{w}" for i in result.metrics["update_layers"]
                                       for m in ("c_fc", "c_proj") for w in ("weight", "bias")}


@pytest.mark.parametrize("kind", ["logit", "unembed"])
def test_suppression_hides_world_answers_but_leaves_the_residual_stream(world_handle, world_split, kind):
    from edit.suppress import SuppressConfig, suppress_edit
    from locate.activations import collect_residuals
    from obliviate.hooks import applied
    from obliviate.metrics import recall

    forget, _ = world_split
    result = suppress_edit(world_handle, forget, (), SuppressConfig(kind=kind))
    texts = [f.text for f in forget]
    clean = collect_residuals(world_handle, texts)
    with applied(world_handle.tl, result.interventions):
        assert recall(world_handle, forget) <= 0.1
        hidden = collect_residuals(world_handle, texts)
    # everything before the last block's output is untouched: the facts are still inside
    assert torch.equal(hidden[:-1], clean[:-1])
