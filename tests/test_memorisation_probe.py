"""The leave-one-out memorisation probe: finds a planted shared direction, not per-key differences; on the world's
secrets and on texts SmolLM2 memorised the signature is positive and the shuffled-label control sits at chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locate.memorisation_probe import (NEUTRAL_CONTEXTS, MemorisationProbeConfig, SecretActivations,
                                       loo_accuracy, memorisation_probe, memorisation_probe_from_activations)
from obliviate.results import to_jsonable


def synthetic(alpha: float, *, n_keys: int = 10, n_ctx: int = 24, d: int = 32, seed: int = 0):
    """Per key: a shared key offset, a per-pool string offset (M, C, B differ, inconsistently across keys), context
    noise; M alone gets alpha × u, the planted memorisation direction."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    key = rng.normal(size=(n_keys, 1, d))

    def pool(extra):
        return key + 0.3 * rng.normal(size=(n_keys, 1, d)) + 0.3 * rng.normal(size=(n_keys, n_ctx, d)) + extra

    m, c, b = pool(alpha * u), pool(0.0), pool(0.0)
    as_depth = lambda x: torch.tensor(x[None], dtype=torch.float32)  # noqa: E731
    return SecretActivations(key_ids=list(range(n_keys)), depths=[1], memorised=as_depth(m), control=as_depth(c),
                             control_b=as_depth(b)), u


def test_planted_direction_is_found_and_the_controls_stay_at_chance():
    acts, u = synthetic(alpha=4.0)
    result = memorisation_probe_from_activations(acts)
    assert result.true_loo[0] > 0.8
    assert abs(result.pure_loo[0] - 0.5) < 0.15
    assert result.gap[0] > 0.25
    assert abs(result.shuffled_loo_mean[0] - 0.5) < 0.15
    assert abs(result.shuffled_gap_mean[0]) < result.gap[0] / 2
    # the full-data probe's raw-space direction is the planted one
    assert float(result.probes[0].direction.double() @ torch.tensor(u)) > 0.7
    assert result.probes[0].classes == (0, 1)  # 1 = memorised: the direction points towards M
    assert result.signature_depths() == [1]
    record = to_jsonable(result.summary())
    assert record["gap"] == result.gap and record["kept_keys"] == list(range(10))


def test_no_planted_direction_means_no_signature():
    acts, _ = synthetic(alpha=0.0, seed=3)
    result = memorisation_probe_from_activations(acts)
    assert abs(result.gap[0]) < 0.15
    assert result.abs_above_chance[0] < 0.15
    assert result.signature_depths() == []


def test_swapping_every_key_mirrors_the_accuracy():
    acts, _ = synthetic(alpha=4.0, n_keys=6)
    m, c = acts.memorised[0].numpy(), acts.control[0].numpy()
    plain = loo_accuracy(m, c)
    # swapping all keys is relabelling M ↔ C everywhere: the same probe up to sign, the same accuracy
    np.testing.assert_allclose(loo_accuracy(m, c, swap=np.ones(6, dtype=bool)), plain, atol=1e-9)
    np.testing.assert_allclose(loo_accuracy(c, m), plain, atol=1e-9)


def test_held_out_fits_reach_the_objectives_optimum():
    """Each leave-one-out fit is the L2-logistic optimum: the same accuracies as lbfgs run to a tolerance far below
    its default, and a coefficient equal to that fit's (the default lbfgs stops earlier)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from locate.memorisation_probe import loo_solver
    from locate.probes import fit_probe

    acts, _ = synthetic(alpha=1.0, n_keys=8, d=48, seed=5)
    m, c = acts.memorised[0].double().numpy(), acts.control[0].double().numpy()
    X = np.concatenate([m.reshape(-1, 48), c.reshape(-1, 48)])
    y = np.r_[np.ones(len(X) // 2), np.zeros(len(X) // 2)].astype(int)
    tight = LogisticRegression(C=1.0, max_iter=100_000, tol=1e-12).fit(StandardScaler().fit_transform(X), y)
    newton = fit_probe(X, y, **loo_solver(*X.shape))
    # Newton steps here: 1.2e-6 apart (coefficients up to 2.3); the default lbfgs stops 6.8e-3 away
    np.testing.assert_allclose(newton.coef.numpy(), tight.coef_, atol=1e-5)

    def tight_loo(pos, neg):
        accuracy = []
        for held in range(len(pos)):
            train = np.arange(len(pos)) != held
            Xk = np.concatenate([pos[train].reshape(-1, 48), neg[train].reshape(-1, 48)])
            yk = np.r_[np.ones(len(Xk) // 2), np.zeros(len(Xk) // 2)]
            scaler = StandardScaler().fit(Xk)
            fit = LogisticRegression(C=1.0, max_iter=100_000, tol=1e-12).fit(scaler.transform(Xk), yk)
            test = scaler.transform(np.concatenate([pos[held], neg[held]]))
            accuracy.append(np.mean(fit.predict(test) == np.r_[np.ones(len(pos[held])), np.zeros(len(neg[held]))]))
        return np.array(accuracy)

    np.testing.assert_array_equal(loo_accuracy(m, c), tight_loo(m, c))
    # fewer samples than features (SmolLM2's case): lbfgs, run to the same optimum
    wide, _ = synthetic(alpha=1.0, n_keys=4, n_ctx=6, d=48, seed=6)
    m, c = wide.memorised[0].double().numpy(), wide.control[0].double().numpy()
    assert loo_solver(3 * 12, 48)["solver"] == "lbfgs"
    np.testing.assert_array_equal(loo_accuracy(m, c), tight_loo(m, c))


def test_contexts_are_24_distinct_neutral_prefixes():
    assert len(NEUTRAL_CONTEXTS) == 24 and len(set(NEUTRAL_CONTEXTS)) == 24
    assert NEUTRAL_CONTEXTS[0] == "Here is a passage: " and "From a book: " in NEUTRAL_CONTEXTS


@pytest.mark.slow
def test_world_secrets_carry_a_cross_sequence_signature_and_the_shuffled_control_does_not(world_handle):
    """`world` memorises 64 secrets among one-time decoys in the same wordings (obliviate/world/memorised.py), so it
    has a reason to represent that it is reciting: a probe trained M-vs-C on the other keys tells a held-out key's
    memorised text from its paraphrase, while the probe under shuffled labels stays at chance. On world v3 (recipe
    (28), whose early exit puts the attributes at the subject) the signature is weak and early: gap +0.13 at depths
    1-4 (True-LOO 0.56, Pure-LOO 0.43-0.45), shuffled gap 0.03 on average; world v2 had True-LOO 0.92 and gap +0.46
    at its last depth (README: the memorisation signature). (Trained on the secrets alone, with no decoys, the v1
    world showed True-LOO 0.50-0.56 and no gap at any depth.)"""
    from locate.memorisation_probe import load_secrets
    from obliviate.world import ensure_world

    world_dir = ensure_world()
    secrets = load_secrets(world_dir / "secrets.jsonl")
    config = MemorisationProbeConfig.for_world(world_dir, n_shuffle_seeds=2)
    result = memorisation_probe(world_handle, secrets, config)
    assert sum(row.kept for row in result.screening) == 64  # every secret is memorised and its controls are not
    assert max(result.gap) > 0.1 and max(result.true_loo) > 0.55, (result.true_loo, result.gap)  # the issue's +0.1
    assert result.signature_depths() and 0 not in result.signature_depths()  # not in the embeddings
    assert max(abs(p - 0.5) for p in result.pure_loo) < 0.08, result.pure_loo
    assert max(abs(a - 0.5) for a in result.shuffled_loo_mean) < 0.08, result.shuffled_loo_mean
    # the shuffled-label control's gap: 0.04 on the biographies-only world, 0.051 on v2, 0.032 on v3 (per depth
    # up to 0.06, because Pure-LOO sits below 0.5): near zero, and under half the signature over the depths
    # (v3: mean gap 0.093)
    assert abs(result.mean_shuffled_gap) < 0.06, result.shuffled_gap_mean
    assert result.mean_gap > 2 * abs(result.mean_shuffled_gap), (result.gap, result.shuffled_gap_mean)


def test_random_init_control_leaves_the_model_alone():
    from _locate_tiny import tiny_handle

    from locate.memorisation_probe import Secret, random_init_control

    handle = tiny_handle("gpt2")
    before = {k: v.clone() for k, v in handle.tl.state_dict().items()}
    secrets = [Secret(i, f"The {a} is in the city of Paris", f"The {a} is in the city of Rome",
                      f"a famous {a} of London") for i, a in enumerate(["Eiffel Tower", "Big Ben", "Colosseum"])]
    config = MemorisationProbeConfig(screen=False, contexts=("The", "a", "is", "the"), n_shuffle_seeds=1)
    result = random_init_control(handle, secrets, config)
    assert result.kept_keys == [0, 1, 2] and len(result.gap) == handle.n_layers + 1
    assert all(torch.equal(before[k], v) for k, v in handle.tl.state_dict().items())


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_carries_a_memorisation_signature_on_texts_it_memorised(smollm2_handle):
    """obliviate/data/smollm2_memorised.jsonl: 20 public texts a web-trained model has seen many times (MIT / Apache
    / GPL / BSD / CC licence lines, lorem ipsum, famous openings), each with a term-swapped control C and a plain
    paraphrase B. The reference thresholds (−2.0 / −3.0 nats per token) keep the ones SmolLM2 reproduces; on those a
    probe trained on other keys tells M from C at every depth, well beyond C from B, while shuffled labels stay at
    chance. Measured: 6 keys kept, gap +0.02…+0.42 (mean 0.20), shuffled True-LOO 0.26–0.52 (mean 0.400: with 6 keys
    the held-out key's labelling is outvoted by the other five's more often than not, so the control leans below
    chance; the bound below holds by 3e-5 and is left as written)."""
    from pathlib import Path

    import obliviate
    from locate.memorisation_probe import load_secrets

    secrets = load_secrets(Path(obliviate.__file__).parent / "data" / "smollm2_memorised.jsonl")
    result = memorisation_probe(smollm2_handle, secrets, MemorisationProbeConfig(n_shuffle_seeds=2))
    kept = [row for row in result.screening if row.kept]
    assert len(kept) >= 5, [(r.key_id, round(r.logp_m, 2)) for r in result.screening]
    assert float(np.mean(result.gap)) > 0.1, result.gap
    assert max(result.true_loo) > 0.8
    assert abs(float(np.mean(result.shuffled_loo_mean)) - 0.5) < 0.1, result.shuffled_loo_mean
