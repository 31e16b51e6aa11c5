"""PGA: the projector removes what the probe reads, MD-PGA's basis is orthonormal, adversarial rounds stop by rule.

Synthetic activations stand in for the model: keys × contexts × d, memorised (M) = control (C) + a shared shift
seen through correlated noise, so a probe trained on some keys transfers to others (the LOO probe's premise), and
one removed direction is not enough (the adversarial rounds have work to do).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edit.pga import (DepthProjector, PGAConfig, adversarial_pga, fit_projectors, heldout_key_accuracy,
                      md_projector, probe_projector)
from locate.probes import fit_probe

D = 16


def _synthetic(n_keys: int = 24, n_ctx: int = 12, depths: int = 2, strength: float = 1.5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(D) + 2 * torch.randn(D, D, generator=g) / D**0.5  # correlated noise: LDA ≠ mean difference
    shift = torch.zeros(D)
    shift[:4] = strength
    ms, cs = [], []
    for _ in range(depths):
        key = 2 * torch.randn(n_keys, 1, D, generator=g)
        ms.append(key + torch.randn(n_keys, n_ctx, D, generator=g) @ mix.T + shift)
        cs.append(key + torch.randn(n_keys, n_ctx, D, generator=g) @ mix.T)
    return torch.stack(ms), torch.stack(cs)


def _collector(m, c):
    def collect(hooks):
        if not hooks:
            return m, c
        return (torch.stack([h(m[i]) for i, h in enumerate(hooks)]),
                torch.stack([h(c[i]) for i, h in enumerate(hooks)]))

    return collect


def test_rank1_projector_removes_the_probe_direction():
    m, c = _synthetic(depths=1, strength=3.0)
    mf, cf = m[0].reshape(-1, D), c[0].reshape(-1, D)
    assert heldout_key_accuracy(m[0], c[0]) > 0.7  # there is a signature to erase
    projector = probe_projector(1, mf, cf)
    probe = fit_probe(torch.cat([mf, cf]), np.r_[np.ones(len(mf)), np.zeros(len(cf))].astype(int))
    projected = projector.project(torch.cat([mf, cf]))
    # the probe's standardised direction has no component left, so its logit is the same for every input
    standardised = (projected.double() - projector.mean) / projector.scale
    assert (standardised @ probe.standardised_direction).abs().max() < 1e-5  # float32 round-off
    assert np.ptp(probe.decision_function(projected)) < 1e-4
    labels = np.r_[np.ones(len(mf)), np.zeros(len(cf))].astype(int)
    assert probe.accuracy(projected, labels) <= 0.55
    # the hook form is the same map, and it is a projection (idempotent)
    hook = projector.intervention()
    assert hook.hook_name == "blocks.0.hook_resid_post"
    assert torch.allclose(hook(torch.cat([mf, cf])), projected.float(), atol=1e-4)
    assert torch.allclose(projector.project(projected), projected, atol=1e-5)


def test_md_pga_basis_is_orthonormal_with_rank_k():
    m, c = _synthetic(depths=1)
    mf, cf = m[0].reshape(-1, D), c[0].reshape(-1, D)
    for k in (1, 2, 4):
        projector = md_projector(3, mf, cf, k)
        u = projector.basis
        assert u.shape == (D, k)
        assert torch.allclose(u.T @ u, torch.eye(k, dtype=u.dtype), atol=1e-10)
        assert int(torch.linalg.matrix_rank(projector.matrix, atol=1e-8)) == k
        assert torch.allclose(projector.matrix @ projector.matrix, projector.matrix, atol=1e-8)
    # the top eigenvector carries the mean difference: projecting k = 2 removes most of the held-out signal
    projector = md_projector(3, mf, cf, 2)
    assert heldout_key_accuracy(projector.project(m[0]), projector.project(c[0])) < \
        heldout_key_accuracy(m[0], c[0]) - 0.15


def test_gram_schmidt_keeps_the_basis_orthonormal_and_skips_directions_in_its_span():
    g = torch.Generator().manual_seed(1)
    projector = DepthProjector(0, torch.zeros(D), torch.ones(D), torch.nn.functional.normalize(
        torch.randn(D, 1, generator=g, dtype=torch.float64), dim=0))
    for _ in range(3):
        projector = projector.with_direction(torch.randn(D, generator=g))
    assert projector.rank == 4
    assert torch.allclose(projector.basis.T @ projector.basis, torch.eye(4, dtype=torch.float64), atol=1e-10)
    in_span = projector.basis @ torch.randn(4, generator=g, dtype=torch.float64)
    assert projector.with_direction(in_span).rank == 4


def test_adversarial_pga_drives_refit_probes_below_tolerance_and_stops():
    m, c = _synthetic()
    cfg = PGAConfig(variant="adversarial", tolerance=0.55, max_rounds=7)
    projectors = fit_projectors(m, c, [1, 2], cfg)
    final, trace = adversarial_pga(_collector(m, c), projectors, cfg)
    assert max(trace.accuracy[0]) >= cfg.tolerance  # rank 1 alone does not suffice on this data
    assert max(trace.accuracy[-1]) < cfg.tolerance  # ... the rounds do
    assert all(max(acc) >= cfg.tolerance for acc in trace.accuracy[:-1])  # it stopped at the first round below
    assert [p.rank for p in final] == trace.ranks[-1] == [len(trace.accuracy)] * 2
    assert "below" in trace.stopped_because


def test_adversarial_pga_stops_after_max_rounds():
    m, c = _synthetic(strength=4.0)
    cfg = PGAConfig(variant="adversarial", tolerance=0.5, max_rounds=1)  # tolerance 0.5 is never reached
    final, trace = adversarial_pga(_collector(m, c), fit_projectors(m, c, [1, 2], cfg), cfg)
    assert len(trace.accuracy) == 2 and [p.rank for p in final] == [2, 2]
    assert "rounds done" in trace.stopped_because


@pytest.mark.parametrize("bad", [{"rank": 0}, {"tolerance": 0.3}, {"max_rounds": -1}])
def test_config_rejects_bad_values(bad):
    from obliviate.config.loader import ConfigError, from_dict

    with pytest.raises(ConfigError):
        from_dict(PGAConfig, bad)


def test_leave_one_key_out_agrees_with_the_locate_probe():
    from locate.memorisation_probe import loo_accuracy

    m, c = _synthetic(depths=1, n_keys=8, strength=3.0)
    loo = heldout_key_accuracy(m[0], c[0], n_folds=None)
    assert loo == pytest.approx(float(loo_accuracy(m[0].numpy(), c[0].numpy()).mean()))
    assert loo > 0.7 and abs(loo - heldout_key_accuracy(m[0], c[0])) < 0.1  # the 5-fold estimate of the same


def test_edit_stage_projects_where_locate_found_the_signature(tmp_path):
    from types import SimpleNamespace

    from edit.stage import resolve_layers
    from obliviate.config import EditConfig
    from obliviate.results import RunDir, StageRecord

    run_dir, handle = RunDir(tmp_path), SimpleNamespace(n_layers=4)
    assert resolve_layers(EditConfig(method="pga"), run_dir, handle) == []  # no locate stage: every depth
    run_dir.write(StageRecord(stage="locate", config={}, metrics={
        "memorisation_probe": {"signature_depths": [3, 4]}, "proposed_edit_layers": {"layers": [1]}}))
    assert resolve_layers(EditConfig(method="pga"), run_dir, handle) == [2, 3]  # depth d is block d − 1's output
    assert resolve_layers(EditConfig(method="pga", layers=[0]), run_dir, handle) == [0]
    assert resolve_layers(EditConfig(method="rome"), run_dir, handle) == [1]
