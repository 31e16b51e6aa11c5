"""SAE features through sae-lens: save/reload is exact, the trained SAE reconstructs held-out activations, and the
top-attributed feature of a fact matters more to its answer than a random active feature."""

from __future__ import annotations

import random

import pytest
import torch

from _locate_tiny import WORDS, one_thread, tiny_facts, tiny_handle  # noqa: F401 (autouse fixture)
from locate.sae_features import (SaeTrainConfig, ablate_features, feature_activations, feature_attribution,
                                 feature_selectivity, load_sae, train_sae, _sae_forward)

HOOK = "blocks.1.hook_resid_post"


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = WORDS[3:]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory):
    handle = tiny_handle("gpt2")
    config = SaeTrainConfig(hook_name=HOOK, expansion=4, k=8, activation_tokens=4000, training_tokens=60_000,
                            train_batch_size_tokens=256, lr=3e-3)
    path = tmp_path_factory.mktemp("sae") / "tiny"
    result = train_sae(handle, _sentences(600, 0), config, output_path=path, heldout_texts=_sentences(100, 1))
    return handle, result


def test_save_and_reload_through_sae_lens_is_exact(tiny_sae):
    handle, result = tiny_sae
    assert (result.path / "cfg.json").is_file() and (result.path / "sae_weights.safetensors").is_file()
    again = load_sae(result.path)
    assert type(again).__name__ == type(result.sae).__name__ == "TopKSAE"
    assert again.cfg.metadata.hook_name == HOOK
    x = torch.randn(50, handle.tl.cfg.d_model) * 5
    assert torch.equal(again.encode(x), result.sae.encode(x))
    assert torch.equal(again.decode(again.encode(x)), result.sae.decode(result.sae.encode(x)))


def test_trained_sae_reconstructs_held_out_activations(tiny_sae):
    _, result = tiny_sae
    quality = result.quality
    assert quality is not None and quality.n_tokens > 300
    assert quality.explained_variance > 0.5
    assert quality.l0 <= 8 + 1e-6


def test_sae_splice_leaves_the_forward_unchanged(tiny_sae):
    handle, result = tiny_sae
    facts = tiny_facts()
    answers = [handle.answer_token(f.target_true) for f in facts]
    spliced, _ = _sae_forward(handle, result.sae, [f.text for f in facts], [2, 1, 3], answers)
    clean = torch.stack([handle.tl(handle.to_tokens(f.text))[0, -1, a] for f, a in zip(facts, answers)])
    torch.testing.assert_close(spliced, clean, atol=1e-4, rtol=1e-4)
    # ablating no feature is the same forward too
    torch.testing.assert_close(ablate_features(handle, result.sae, facts, [], position="last"),
                               _sae_forward(handle, result.sae, [f.text for f in facts],
                                            [len(handle.to_tokens(f.text)[0]) - 1 for f in facts], answers)[0],
                               atol=1e-4, rtol=1e-4)


def test_attribution_is_the_first_order_ablation_effect(tiny_sae):
    """z_f · ∂logit/∂z_f is the linear estimate of zeroing f: for small features it matches the real change."""
    handle, result = tiny_sae
    fact = tiny_facts()[0]
    ranking, attribution = feature_attribution(handle, result.sae, [fact], position="last", top_k=64)
    active = [f for f in range(attribution.shape[1]) if feature_activations(
        handle, result.sae, [fact], position="last")[0, f] > 0]
    clean = ablate_features(handle, result.sae, [fact], [], position="last")[0]
    drops = torch.stack([clean - ablate_features(handle, result.sae, [fact], [f], position="last")[0]
                         for f in active])
    estimate = attribution[0, active]
    # same sign on the features that move the logit most, and strongly correlated overall
    assert torch.corrcoef(torch.stack([drops, estimate]))[0, 1] > 0.8
    assert ranking.features[0] in active and ranking.scores[0] == pytest.approx(float(estimate.max()), rel=1e-5)


def test_selectivity_ranks_features_on_target_prompts_first(tiny_sae):
    handle, result = tiny_sae
    target = ["The Eiffel Tower is in the city of", "The famous Eiffel Tower is in the city of"]
    others = ["Big Ben is located in the city of", "The Colosseum is in the city of", "a famous city of Rome"]
    ranking = feature_selectivity(handle, result.sae, target, others, position="last", top_k=5)
    on = feature_activations(handle, result.sae, target, position="last").mean(0)
    off = feature_activations(handle, result.sae, others, position="last").mean(0)
    assert ranking.scores[0] == pytest.approx(float((on - off).max()), rel=1e-6)
    assert ranking.scores == sorted(ranking.scores, reverse=True)


@pytest.mark.slow
def test_world_sae_features(world_handle, tmp_path):
    from obliviate.metrics import top1_correct
    from obliviate.targets import resolve_facts
    from obliviate.world import ensure_world, load_filler

    world_dir = ensure_world()
    facts = resolve_facts("world")
    filler = load_filler(world_dir, "train")
    texts = [f"{f.text} {f.target_true}." for f in facts] + filler
    random.Random(0).shuffle(texts)
    heldout = load_filler(world_dir, "heldout")[:400]
    config = SaeTrainConfig(hook_name="blocks.1.hook_resid_post", expansion=8, k=16, activation_tokens=40_000,
                            training_tokens=300_000)
    trained = train_sae(world_handle, texts, config, output_path=tmp_path / "sae", heldout_texts=heldout)
    assert trained.quality.explained_variance > 0.5, trained.quality
    again = load_sae(tmp_path / "sae")
    x = torch.randn(20, world_handle.tl.cfg.d_model)
    assert torch.equal(again.encode(x), trained.sae.encode(x))

    known = [f for f, ok in zip(facts[:40], top1_correct(world_handle, [f.text for f in facts[:40]],
                                                         [f.target_true for f in facts[:40]])) if ok]
    assert known, "the world model should know its facts"
    wins = 0
    for fact in known[:8]:
        ranking, _ = feature_attribution(world_handle, trained.sae, [fact], position="subject", top_k=1)
        active = torch.nonzero(feature_activations(world_handle, trained.sae, [fact], position="subject")[0] > 0)
        others = [int(f) for f in active.flatten() if int(f) != ranking.features[0]]
        clean = ablate_features(world_handle, trained.sae, [fact], [])[0]
        top_drop = clean - ablate_features(world_handle, trained.sae, [fact], ranking.features[:1])[0]
        random_drop = clean - ablate_features(world_handle, trained.sae, [fact],
                                              [random.Random(fact.case_id).choice(others)])[0]
        wins += int(top_drop > random_drop)
    assert wins >= 6, wins
