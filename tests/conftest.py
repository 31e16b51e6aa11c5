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


def pytest_collection_modifyitems(config, items):
    """Longest files first, so the two workers of `make test` finish together.

    pytest-xdist (`--dist loadfile --no-loadscope-reorder`) hands out whole files in this order, and a worker holds
    its next file while it runs the current one. Left to the end, the notebooks (one long test each, 2–3 minutes)
    all went to whichever worker asked last while the other sat idle (measured: one worker ran all three, 447 s,
    after the other had stopped). Notebooks first, then files with a slow test, then the rest; the order within
    each class is the collection order, the same on every worker (xdist requires that)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}

    def weight(item) -> int:
        return 0 if item.path.suffix == ".ipynb" else 1 if item.path in slow_files else 2

    items.sort(key=weight)  # stable: the collection order within each class
