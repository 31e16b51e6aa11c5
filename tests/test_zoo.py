"""The calibration zoo's constructions do what their names promise, on tiny models; margins with a second
never-taught model never shrink; unknown names are refused with the known ones listed."""

from __future__ import annotations

import copy

import pytest
import torch

from audit.verdict import VerdictConfig
from audit.zoo import (CONSTRUCTIONS, ZooConfig, ZooInputs, build_head_finetune, build_last_block_refusal,
                       build_last_mlp_graddiff, construction, noised_copy, target_truths)
from obliviate.config.loader import ConfigError
from obliviate.facts import Fact
from tests._locate_tiny import one_thread  # noqa: F401 - autouse fixture: one thread for tiny ops


def answered_facts(handle, rows: list[tuple[int, str, str]]) -> list[Fact]:
    """Facts whose answer is the handle's own top-1 next word after the prompt: the model "knows" each of them."""
    facts = []
    for case_id, prompt, subject in rows:
        text = prompt.format(subject)
        tokens = handle.to_tokens(text)
        top = int(handle.tl(tokens)[0, -1].argmax())
        answer = handle.tokenizer.decode([top]).strip()
        facts.append(Fact(case_id=case_id, prompt=prompt, subject=subject, target_true=answer, target_new="Rome"))
    return facts


TARGET_ROWS = [(0, "The {} is in the city of", "Eiffel Tower"), (1, "{} is located in the city of", "Big Ben"),
               (2, "The famous {} is in the city of", "Colosseum")]
RETAIN_ROWS = [(10, "The {} is in the city of", "Paris"), (11, "{} is located in the city of", "London"),
               (12, "The famous {} is in the city of", "Rome"), (13, "{} is in the city of", "Paris")]


def inputs_for(handle, **config) -> ZooInputs:
    return ZooInputs(handle, handle, answered_facts(handle, TARGET_ROWS), answered_facts(handle, RETAIN_ROWS),
                     ZooConfig(**config))


def hf_tiny(tmp_path):
    """A tiny GPT-2 with its HF model and a config folder (edit builders rebuild TL from HF, as `load` does)."""
    from dataclasses import replace

    from tests._edit_tiny import tiny_hf_handle

    base = tiny_hf_handle("gpt2", n_layers=3)
    folder = tmp_path / "tiny-gpt2"
    base.hf.config.save_pretrained(folder)
    return replace(base, hf_dir=folder)


def tl_parameters(handle) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in handle.tl.named_parameters()}


def changed(before: dict[str, torch.Tensor], handle) -> set[str]:
    return {n for n, p in handle.tl.named_parameters() if not torch.equal(before[n], p)}


def recalled(handle, facts) -> int:
    from audit.verdict import recalled_targets

    return sum(recalled_targets(handle, facts).values())


def test_head_finetune_hides_the_answers_with_every_residual_bit_identical():
    from tests._locate_tiny import tiny_handle

    base = tiny_handle("gpt2")
    inputs = inputs_for(base, steps=100, head_lr=0.05)
    assert recalled(base, inputs.targets) == 3
    before = tl_parameters(base)
    built = build_head_finetune(inputs, seed=0)
    assert changed(before, base) == set(), "the base was modified"
    moved = changed(before, built)
    assert moved and all(n.startswith(("ln_final.", "unembed.")) for n in moved), moved
    assert recalled(built, inputs.targets) == 0
    tokens = base.to_tokens([f.text for f in inputs.targets])
    _, ours = built.tl.run_with_cache(tokens, names_filter=lambda n: "resid" in n)
    _, theirs = base.tl.run_with_cache(tokens, names_filter=lambda n: "resid" in n)
    assert set(ours.keys()) == set(theirs.keys()) and len(ours.keys()) >= 2 * base.n_layers
    for name in theirs.keys():
        assert torch.equal(ours[name], theirs[name]), name


def test_last_mlp_graddiff_changes_only_the_last_blocks_mlp(tmp_path):
    base = hf_tiny(tmp_path)
    inputs = inputs_for(base, steps=5, edit_lr=1e-2)
    before, hf_before = tl_parameters(base), copy.deepcopy(base.hf.state_dict())
    built = build_last_mlp_graddiff(inputs, seed=0)
    assert changed(before, base) == set() and all(torch.equal(hf_before[k], v) for k, v in base.hf.state_dict().items())
    moved = changed(before, built)
    assert moved and all(n.startswith(f"blocks.{base.n_layers - 1}.mlp.") for n in moved), moved


def test_late_dpo_changes_only_the_last_two_blocks(tmp_path):
    from audit.zoo import build_late_dpo

    base = hf_tiny(tmp_path)
    before = tl_parameters(base)
    built = build_late_dpo(inputs_for(base, steps=5, dpo_lr=1e-2), seed=0)
    assert changed(before, base) == set(), "the base was modified"
    moved = changed(before, built)
    last_two = (f"blocks.{base.n_layers - 2}.", f"blocks.{base.n_layers - 1}.")
    assert any(n.startswith(last_two[0]) for n in moved) and any(n.startswith(last_two[1]) for n in moved)
    assert all(n.startswith(last_two) for n in moved), moved


def test_refusal_trains_the_last_block_only_and_refuses_a_word_of_several_tokens(tmp_path):
    base = hf_tiny(tmp_path)
    before = tl_parameters(base)
    built = build_last_block_refusal(inputs_for(base, steps=30, edit_lr=2e-2, refusal_word="unknown"), seed=0)
    moved = changed(before, built)
    assert moved and all(n.startswith(f"blocks.{base.n_layers - 1}.") for n in moved), moved
    assert any(".attn." in n for n in moved) and any(".mlp." in n for n in moved)  # the whole block, not one part
    with pytest.raises(ConfigError, match="refusal_word"):
        build_last_block_refusal(inputs_for(base, refusal_word="unknown river"), seed=0)


@pytest.mark.parametrize("noise", [0.01, 0.1])
def test_noise_changes_every_weight_by_the_stated_relative_std(noise):
    from tests._locate_tiny import tiny_handle

    base = tiny_handle("gpt2")
    before = tl_parameters(base)
    noised = noised_copy(base, noise, seed=3)
    assert changed(before, base) == set()
    after = dict(noised.tl.named_parameters())
    for name, weight in before.items():
        rms = float(weight.pow(2).mean().sqrt())
        if weight.numel() < 256 or rms == 0:
            continue  # too few draws to measure a std on
        ratio = float((after[name] - weight).std()) / (noise * rms)
        assert 0.85 < ratio < 1.15, (name, ratio)
    again, other = noised_copy(base, noise, seed=3), noised_copy(base, noise, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(noised.tl.parameters(), again.tl.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(noised.tl.parameters(), other.tl.parameters()))


def test_target_truths_follow_what_the_construction_still_answers():
    assert target_truths("erased", {1: True, 2: False}) == {1: "erased", 2: "erased"}
    assert target_truths("suppressed", {1: True, 2: False}) == {1: "intact", 2: "suppressed"}
    assert target_truths("intact", {1: True, 2: False}) == {1: "intact", 2: "suppressed"}


def test_an_unknown_construction_is_refused_with_the_known_ones_listed():
    with pytest.raises(ConfigError, match="no_such_model") as error:
        ZooConfig(constructions=("oracle", "no_such_model"))
    assert all(name in str(error.value) for name in CONSTRUCTIONS)
    with pytest.raises(ConfigError, match="head_finetune"):
        construction("no_such_model")
    assert {c.truth for c in CONSTRUCTIONS.values()} == {"erased", "suppressed", "intact"}


def test_calibrate_command_rejects_constructions_without_zoo(capsys):
    from audit.stage import calibrate_command

    with pytest.raises(SystemExit):
        calibrate_command(["--constructions", "oracle"])
    assert "--zoo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        calibrate_command(["--attacks", "heldout_relearn"])
    assert "--attacks needs --zoo" in capsys.readouterr().err


def test_an_unregistered_zoo_attack_is_refused_naming_the_registered_ones():
    from obliviate.config.loader import InvalidField

    with pytest.raises(InvalidField, match="unknown attack 'relern'; registered: .*heldout_relearn"):
        ZooConfig(attacks=("relern",))


def test_the_zoo_runs_end_to_end_on_tiny_models(tmp_path):
    from dataclasses import replace

    from audit.zoo import calibrate_zoo
    from tests._edit_tiny import tiny_hf_handle

    world = hf_tiny(tmp_path)
    oracle = replace(tiny_hf_handle("gpt2", n_layers=3, seed=1), hf_dir=world.hf_dir, name="tiny-oracle")
    facts = answered_facts(world, TARGET_ROWS)
    names = ("oracle", "oracle_noised", "head_finetune", "world", "world_noised")
    result = calibrate_zoo(world, oracle, facts, answered_facts(world, RETAIN_ROWS),
                           ZooConfig(constructions=names, attacks=("logit_lens", "base_lens"), steps=20, noise=0.001,
                                     peer="finetuned", verdict=VerdictConfig(peer_rule="widen")))
    known = len(result.case_ids)
    assert known >= 1 and list(result.rows) == list(names)
    for rows in (result.rows, *result.without_oracle.values()):
        assert all(sum(r.counts.values()) + r.off_truth == known for r in rows.values())
    assert result.rows["oracle"].accuracy == 1.0  # the oracle against itself: erased by construction
    assert result.rows["world"].accuracy == 1.0 and result.recall["world"] == 1.0
    assert set(result.per_attack) == {"logit_lens", "base_lens"}
    assert all(result.margins[a] >= result.single_oracle_margins[a] for a in result.margins)
    assert "construction (truth)" in result.summary()
    check = result.relearn_check["head_finetune"]  # the one suppression here
    assert set(result.relearn_check) == {"head_finetune"} and "relearning-speed check" in result.summary()
    assert check["n:erased"] + check["n:suppressed"] <= known
    assert all(check[k] is None or 0.0 <= check[k] <= 1.0 for k in ("erased", "suppressed", "oracle:erased"))


def test_a_null_answer_kind_that_does_not_exist_is_refused_naming_the_key():
    from audit.calibrate import CalibrationConfig
    from obliviate.config.loader import InvalidField

    for config in (ZooConfig, CalibrationConfig):
        with pytest.raises(InvalidField, match=r"null_answers.*not one of \['decoy', 'counterfactual'\]"):
            config(null_answers="target_new")


def test_several_decoy_draws_judge_every_known_target_and_zero_draws_are_refused(tmp_path):
    from dataclasses import replace

    from audit.calibrate import CalibrationConfig
    from audit.zoo import calibrate_zoo
    from obliviate.config.loader import InvalidField
    from tests._edit_tiny import tiny_hf_handle

    world = hf_tiny(tmp_path)
    oracle = replace(tiny_hf_handle("gpt2", n_layers=3, seed=1), hf_dir=world.hf_dir, name="tiny-oracle")
    facts = answered_facts(world, TARGET_ROWS)
    names = ("oracle", "head_finetune")
    result = calibrate_zoo(world, oracle, facts, answered_facts(world, RETAIN_ROWS),
                           ZooConfig(constructions=names, attacks=("logit_lens",), steps=20, peer=None,
                                     null_draws=3, relearn_check_steps=0))
    known = len(result.case_ids)
    assert all(sum(r.counts.values()) + r.off_truth == known for r in result.without_oracle["null"].values())
    assert result.config["null_draws"] == 3
    with pytest.raises(InvalidField, match="null_draws"):
        ZooConfig(null_draws=0)
    with pytest.raises(InvalidField, match="null_draws"):
        CalibrationConfig(null_draws=0)
