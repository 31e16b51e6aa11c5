"""Shared fixtures: every RNG seeded per test; models load once per session."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# Offline by design: the hub is never reached from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def world_handle():
    from obliviate.models import load

    return load("world")


@pytest.fixture(scope="session")
def world_retain_handle():
    from obliviate.models import load

    return load("world-retain")


@pytest.fixture(scope="session")
def smollm2_handle():
    from obliviate.models import load

    return load("smollm2-135m")


# Known failures, kept running and reported rather than hidden (see the issue notes). Each was written before the
# trained world models existed and failed on its first run against them; remove an entry once its test passes
# (non-strict: a fixed test shows up as XPASS).
KNOWN_FAILING = {
    "notebooks/02_edit.ipynb::02_edit.ipynb": "not yet run to completion against the trained world (issue 4)",
    "notebooks/03_audit.ipynb::03_audit.ipynb": "not yet run to completion; depends on calibration (issue 5)",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = KNOWN_FAILING.get(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"known failure: {reason}", strict=False))
