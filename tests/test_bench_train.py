"""bench/bench_train.py: the GELU forms it times are the ones the models run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"
_SPEC = importlib.util.spec_from_file_location("bench_train", _PATH)
bench_train = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_train)


def test_the_timed_gelu_forms_are_the_activations_transformers_runs():
    from transformers.activations import ACT2FN

    x = torch.linspace(-70, 30, 2001)
    for name, form in bench_train.GELU_FORMS.items():
        assert torch.allclose(form(x), ACT2FN[name](x), atol=1e-6), name
    # the tanh forms are one function; exact GELU is another (so timing it is not timing gelu_new)
    assert torch.allclose(bench_train.GELU_FORMS["gelu_new"](x), bench_train.GELU_FORMS["gelu_pytorch_tanh"](x),
                          atol=1e-5)
    assert not torch.allclose(bench_train.GELU_FORMS["gelu_new"](x), bench_train.GELU_FORMS["gelu"](x), atol=1e-5)
    assert bench_train.forward_backward_ms(bench_train.GELU_FORMS["gelu"], torch.randn(64, 64), repeats=2) > 0
