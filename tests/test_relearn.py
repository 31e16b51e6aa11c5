"""Relearning: never trains on a target's subject, works on a copy that keeps the edit's hooks, and on the world
brings back facts suppressed in the weights much more than the same fine-tuning teaches the never-learned oracle."""

from __future__ import annotations

import pytest
import torch

from _locate_tiny import tiny_facts, tiny_handle
from audit.attack_result import answer_stats, clone_tl, with_tl
from audit.relearn import (RelearnConfig, TargetLeakError, check_disjoint, relearn_pool, relearned_tl,
                           run_relearn)
from obliviate.facts import Fact
from obliviate.hooks import LogitPenalty, attach_permanently
from _world import known_forget_targets


def test_disjointness_is_enforced():
    facts = tiny_facts()
    check_disjoint(facts[:1], facts[1:])
    with pytest.raises(TargetLeakError):
        check_disjoint(facts[:2], facts[1:])  # same case id
    same_subject = Fact(case_id=99, prompt="{} was built in", subject=facts[0].subject, target_true="Paris",
                        target_new="Rome")
    with pytest.raises(TargetLeakError):
        check_disjoint(facts[:1], [same_subject])  # another fact about a target's subject
    with pytest.raises(TargetLeakError):
        run_relearn(tiny_handle(), tiny_handle(), facts[:1], [same_subject])
    pool = relearn_pool([*facts, same_subject], facts[:1])
    assert all(f.subject != facts[0].subject for f in pool)


def test_relearning_trains_a_copy_with_the_hooks():
    handle = tiny_handle("gpt2")
    facts = tiny_facts()
    tl = clone_tl(handle.tl)
    answers = tuple(handle.answer_token(f.target_true) for f in facts)
    attach_permanently(tl, [LogitPenalty(answers, 40.0)])
    edited = with_tl(handle, tl)
    before = {k: v.clone() for k, v in tl.state_dict().items()}
    model, losses = relearned_tl(edited, facts[1:], RelearnConfig(steps=5, lr=1e-2, batch_size=2), targets=facts[:1])
    assert all(torch.equal(before[k], v) for k, v in tl.state_dict().items())  # the handle's model is untouched
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert losses[-1] < losses[0]
    stats = answer_stats(with_tl(handle, model), [facts[0].text], [facts[0].target_true])
    assert float(stats.p_true[0]) < 1e-6  # the penalty is still in the relearned copy's forward pass


def _gradient_ascent(handle, targets, max_steps: int = 120, lr: float = 1e-4, until: float = 0.02):
    """A weight-space suppression of the targets: gradient ascent on their answers until mean p_true < `until`."""
    from obliviate.metrics import continuation_ids, encode

    model = clone_tl(handle.tl)
    for p in model.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    rows = [(encode(handle, f.text), continuation_ids(handle, f.target_true)) for f in targets]
    width = max(len(p) + len(a) for p, a in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        tokens[i, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
    for _ in range(max_steps):
        logprobs = model(tokens).log_softmax(-1)
        picked = torch.stack([logprobs[i, len(p) - 1:len(p) - 1 + len(a)].gather(-1, torch.tensor(a)[:, None]).mean()
                              for i, (p, a) in enumerate(rows)])
        if picked.exp().mean() < until:
            break
        optimiser.zero_grad()
        picked.mean().backward()  # descending log-prob = ascending the answers' NLL
        optimiser.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return with_tl(handle, model)


@pytest.mark.slow
def test_relearning_recovers_a_weight_suppression_more_than_the_oracle(world_handle, world_retain_handle):
    from obliviate.targets import resolve_facts

    all_facts = resolve_facts("world")
    targets = known_forget_targets(world_handle, 16)
    pool = relearn_pool(all_facts, targets)
    # A gentle ascent (lr 1e-5) and 40 relearning steps: on the decoy-trained world, lr 1e-4 wrecks the neighbourhood
    # so broadly (retain recall 0.36) that relearning repairs the model in general without reaching the targets.
    suppressed = _gradient_ascent(world_handle, targets, max_steps=600, lr=1e-5)
    result = run_relearn(world_handle, suppressed, targets, pool[::3], oracle=world_retain_handle,
                         config=RelearnConfig(steps=40))
    assert result.metrics["mean_before"] > 0.2 and result.metrics["mean_unlearned"] < 0.05
    assert result.oracle is not None
    gain = result.metrics["mean_attacked"] - result.metrics["mean_unlearned"]
    oracle_gain = result.oracle.metrics["mean_attacked"] - result.oracle.metrics["mean_unlearned"]
    assert gain > oracle_gain + 0.1
    assert result.metrics["mean_attacked"] > result.oracle.metrics["mean_attacked"]
