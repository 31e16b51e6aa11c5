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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny tensors: on a shared 2-core machine a second thread only adds
    spin-waiting (40x slower here). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def gemma3_handle():
    from obliviate.models import load

    return load("gemma-3-270m")
