"""Key second-moment statistics: the right matrix, symmetric PSD, cached exactly, keyed by the weights that matter."""

from __future__ import annotations

import re
from itertools import islice

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_hf_handle
from edit import covariance
from edit.covariance import (CovarianceConfig, cache_path, metric_solver, packed_rows, regularised, second_moment,
                             second_moments)
from edit.deltas import apply_deltas
from edit.sites import edit_site



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

@pytest.fixture()
def corpus(tmp_path):
    return tiny_corpus(tmp_path / "corpus.txt")


@pytest.fixture()
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_moment_is_the_mean_outer_product_of_the_keys(arch, corpus):
    handle = tiny_hf_handle(arch)
    cfg = CovarianceConfig(corpus=str(corpus), n_tokens=600, seq_len=24, batch_size=4, cache=False)
    moment = second_moment(handle, 1, cfg)
    # Brute force: every key of the same packed rows, held in memory at once.
    rows = []
    for row in packed_rows(handle, covariance.corpus_texts(handle, str(corpus)), 24):
        rows.append(row)
        if len(rows) * 24 >= 600:
            break
    _, cache = handle.tl.run_with_cache(torch.tensor(rows), names_filter=[edit_site(handle, 1).key_hook])
    keys = cache[edit_site(handle, 1).key_hook].reshape(-1, handle.tl.cfg.d_mlp)[:600].double()
    expected = keys.T @ keys / len(keys)
    assert torch.allclose(moment.double(), expected, rtol=1e-4, atol=1e-6)


def test_moment_is_symmetric_psd(corpus):
    handle = tiny_hf_handle("llama")
    moment = second_moment(handle, 2, CovarianceConfig(corpus=str(corpus), n_tokens=500, seq_len=20, cache=False))
    assert torch.equal(moment, moment.T)
    eigenvalues = torch.linalg.eigvalsh(moment.double())
    assert eigenvalues.min() >= -1e-6 * eigenvalues.max()
    ridged = regularised(moment, 1e-2)
    assert torch.linalg.eigvalsh(ridged).min() >= 1e-2 * moment.diagonal().mean() * (1 - 1e-6)


def test_cache_hit_returns_the_same_tensor_without_recomputing(corpus, cache_root, monkeypatch):
    handle = tiny_hf_handle("gpt2")
    cfg = CovarianceConfig(corpus=str(corpus), n_tokens=400, seq_len=20)
    first = second_moments(handle, [0, 1], cfg)
    assert cache_path(handle, 1, cfg).is_file()

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a cache entry")

    monkeypatch.setattr(covariance, "compute_second_moments", boom)
    second = second_moments(handle, [0, 1], cfg)
    for layer in (0, 1):
        assert torch.equal(first[layer], second[layer])


def test_cache_key_follows_the_weights_that_shape_the_keys(corpus, cache_root):
    handle = tiny_hf_handle("gpt2")
    cfg = CovarianceConfig(corpus=str(corpus), n_tokens=400, seq_len=20)
    before = cache_path(handle, 1, cfg)
    own = edit_site(handle, 1).weight
    with apply_deltas(handle, {own: torch.ones_like(handle.tl.get_parameter(own))}):
        assert cache_path(handle, 1, cfg) == before  # the layer's own W_out does not change its keys
    upstream = edit_site(handle, 0).weight
    with apply_deltas(handle, {upstream: torch.ones_like(handle.tl.get_parameter(upstream))}):
        assert cache_path(handle, 1, cfg) != before  # an earlier block does
    assert cache_path(handle, 1, CovarianceConfig(corpus=str(corpus), n_tokens=800, seq_len=20)) != before


def test_the_weight_hash_is_taken_again_only_when_a_weight_it_covers_changes(monkeypatch):
    handle = tiny_hf_handle("gpt2")
    taken = []
    sha256 = covariance.hashlib.sha256
    monkeypatch.setattr(covariance.hashlib, "sha256", lambda *args: taken.append(1) or sha256(*args))
    first = covariance.key_weights_hash(handle, 1)
    assert covariance.key_weights_hash(handle, 1) == first and len(taken) == 1  # memoised
    covariance._HASHES.clear()
    assert covariance.key_weights_hash(handle, 1) == first and len(taken) == 2  # the memo holds the full hash
    upstream = edit_site(handle, 0).weight
    with apply_deltas(handle, {upstream: torch.ones_like(handle.tl.get_parameter(upstream))}):
        assert covariance.key_weights_hash(handle, 1) != first  # an in-place write bumps the version counter
    assert covariance.key_weights_hash(handle, 1) == first and len(taken) == 4  # restored bit-exactly: hashed again
    param = handle.tl.get_parameter(upstream)
    param.data = param.data.clone()  # new storage, same values
    assert covariance.key_weights_hash(handle, 1) == first and len(taken) == 5
    assert covariance.key_weights_hash(tiny_hf_handle("gpt2", seed=1), 1) != first


def test_metric_solver_solves_the_regularised_moment_and_is_factorised_once_per_weights(corpus, cache_root):
    handle = tiny_hf_handle("gpt2")
    cfg = CovarianceConfig(corpus=str(corpus), n_tokens=400, seq_len=20, ridge=1e-3)
    solver = metric_solver(handle, 1, cfg)
    rhs = torch.randn(handle.tl.cfg.d_mlp, 3, dtype=torch.float64)
    expected = torch.linalg.solve(regularised(second_moment(handle, 1, cfg), cfg.ridge), rhs)
    assert torch.allclose(solver.solve(rhs), expected, rtol=1e-8, atol=1e-10)
    assert torch.allclose(solver.solve(rhs[:, 0]), expected[:, 0], rtol=1e-8, atol=1e-10)
    assert metric_solver(handle, 1, cfg) is solver  # the memo: one factorisation per cached C
    upstream = edit_site(handle, 0).weight
    with apply_deltas(handle, {upstream: torch.ones_like(handle.tl.get_parameter(upstream))}):
        edited = metric_solver(handle, 1, cfg)  # other keys, another C: never the stale factor
        assert edited is not solver
        assert not torch.allclose(edited.solve(rhs), expected)
    other_ridge = CovarianceConfig(corpus=str(corpus), n_tokens=400, seq_len=20, ridge=1e-1)
    assert metric_solver(handle, 1, other_ridge) is not solver


def test_too_small_corpus_is_an_error(tmp_path):
    handle = tiny_hf_handle("gpt2")
    small = tmp_path / "small.txt"
    small.write_text("The city of Paris")
    with pytest.raises(ValueError, match="only"):
        second_moment(handle, 0, CovarianceConfig(corpus=str(small), n_tokens=10_000, seq_len=4, cache=False))


@pytest.mark.parametrize("damage", ["same_size_garbage", "truncated"])
def test_corrupted_cached_statistics_are_recomputed_and_the_run_says_so(corpus, cache_root, capsys, damage):
    handle = tiny_hf_handle("gpt2")
    cfg = CovarianceConfig(corpus=str(corpus), n_tokens=400, seq_len=20)
    first = second_moments(handle, [1], cfg)[1]
    path = cache_path(handle, 1, cfg)
    data = path.read_bytes()
    path.write_bytes(bytes(len(data)) if damage == "same_size_garbage" else data[: len(data) // 2])
    again = second_moments(handle, [1], cfg)[1]
    assert torch.equal(again, first), "the garbage must not be used"
    out = capsys.readouterr().out
    assert f"{path.name} is unusable" in out and "recomputing it" in out
    from obliviate.integrity import verify
    from obliviate.results import load_tensors

    verify(path, rebuild="x")  # rewritten and sealed again
    assert torch.equal(load_tensors(path)["moment"], first)


def test_place_mentions_name_every_country_capital_and_province_in_neutral_frames():
    names = covariance.place_names()
    assert {"France", "Paris", "Ontario", "Kenya", "Nairobi"} <= set(names)
    assert len(names) == len(set(names)) > 4000
    paragraphs = list(covariance.corpus_texts(None, "place-mentions"))
    text = " ".join(paragraphs)
    assert all(name in text for name in names)
    # every sentence is one of the neutral frames around one name: nothing about an attribute
    frames = "|".join(re.escape(frame).replace(r"\{\}", ".+") for frame in covariance.PLACE_SENTENCES)
    four_sentences = re.compile(f"(?:{frames})(?: (?:{frames})){{0,3}}")
    assert all(four_sentences.fullmatch(paragraph) for paragraph in paragraphs)
    assert len(paragraphs) == -(-len(names) // 4)  # four names a paragraph
    assert paragraphs == list(covariance.corpus_texts(None, "place-mentions"))  # seeded: the same every run
    assert paragraphs != list(covariance.corpus_texts(None, "place-mentions", seed=1))


def test_mixed_corpus_interleaves_docstrings_and_place_mentions():
    mixed = covariance.corpus_texts(None, "stdlib-docstrings+place-mentions")
    first = [next(mixed) for _ in range(6)]
    docs = covariance.corpus_texts(None, "stdlib-docstrings")
    places = covariance.corpus_texts(None, "place-mentions")
    assert first == [next(docs), next(places), next(docs), next(places), next(docs), next(places)]
    # once one source is spent the other goes on alone
    assert list(covariance._interleaved(iter("ab"), iter("wxyz"))) == ["a", "w", "b", "x", "y", "z"]


def test_unknown_corpus_name_lists_the_named_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="place-mentions"):
        covariance.corpus_texts(None, str(tmp_path / "missing.txt"))


def test_auto_corpus_is_the_world_filler_for_world_models_by_name_or_by_folder(tmp_path):
    from types import SimpleNamespace

    trained = tmp_path / "my-world"  # what `obliviate world train --out` writes holds training_info.json
    trained.mkdir()
    (trained / "training_info.json").write_text("{}")
    plain = tmp_path / "some-model"
    plain.mkdir()
    assert covariance.resolve_corpus(SimpleNamespace(name="world-retain", hf_dir=None), "auto") == "world-filler"
    assert covariance.resolve_corpus(SimpleNamespace(name=str(trained), hf_dir=trained), "auto") == "world-filler"
    assert covariance.resolve_corpus(SimpleNamespace(name=str(plain), hf_dir=plain), "auto") == "stdlib-docstrings"
    assert covariance.resolve_corpus(SimpleNamespace(name="smollm2-135m", hf_dir=plain), "auto") == "stdlib-docstrings"
    assert covariance.resolve_corpus(SimpleNamespace(name=str(trained), hf_dir=trained), "place-mentions") == \
        "place-mentions"


def test_world_mentions_names_every_subject_of_the_models_own_world_between_filler_lines(tmp_path):
    import json
    from types import SimpleNamespace

    from obliviate.world import WorldConfig, build_world
    from obliviate.world.generate import load_filler, load_world_facts

    world = build_world(WorldConfig(n_subjects=40, n_secrets=8, n_forget_secrets=2), tmp_path / "w40")
    folder = tmp_path / "model"  # a folder `obliviate world train --world w40 --out model` wrote
    folder.mkdir()
    (folder / "training_info.json").write_text(json.dumps({"world_dir": str(world)}))
    handle = SimpleNamespace(name=str(folder), hf_dir=folder)
    assert covariance.model_world(handle) == world
    texts = covariance.corpus_texts(handle, "world-mentions")
    paragraphs = [next(texts) for _ in range(40)]
    filler = set(load_filler(covariance.model_world(SimpleNamespace(name="world", hf_dir=None)), "heldout"))
    assert all(p in filler for p in paragraphs[::2])  # filler and mentions take turns
    subjects = {r["requested_rewrite"]["subject"] for r in load_world_facts(world)}
    named = {s for p in paragraphs[1::2] for s in subjects if s in p}
    assert named == subjects  # ten paragraphs of four names: the whole world once
    frames = "|".join(re.escape(f).replace(r"\{\}", ".+") for f in covariance.SUBJECT_SENTENCES)
    assert all(re.fullmatch(f"(?:{frames})(?: (?:{frames})){{3}}", p) for p in paragraphs[1::2])


def test_excluded_subjects_leave_the_corpus_and_key_their_own_statistics(tmp_path, cache_root):
    path = tmp_path / "named.txt"
    path.write_text("\n\n".join(["Big Ben rang at noon.", "The Big Bend river is wide.", "A letter to Big Ben.",
                                  "Nothing here."] * 5))
    assert list(covariance.corpus_texts(None, str(path), exclude_subjects=["Big Ben"]))[:3] == \
        ["The Big Bend river is wide.", "Nothing here.", "The Big Bend river is wide."]  # whole words: "Big Bend" stays
    assert len(list(covariance.corpus_texts(None, str(path)))) == 20
    assert len(list(covariance.corpus_texts(None, str(path), exclude_subjects=["", " "]))) == 20  # blanks name nothing
    handle = tiny_hf_handle("gpt2")
    plain = CovarianceConfig(corpus=str(path), n_tokens=10, seq_len=8)
    assert cache_path(handle, 1, plain) == cache_path(handle, 1, CovarianceConfig(corpus=str(path), n_tokens=10,
                                                                                   seq_len=8, exclude_subjects=()))
    assert cache_path(handle, 1, plain) == cache_path(handle, 1, CovarianceConfig(corpus=str(path), n_tokens=10,
                                                                                   seq_len=8, exclude_subjects=(" ",)))
    left_out = CovarianceConfig(corpus=str(path), n_tokens=10, seq_len=8, exclude_subjects=("Big Ben",))
    assert cache_path(handle, 1, left_out) != cache_path(handle, 1, plain)
    assert not torch.allclose(second_moment(handle, 1, left_out), second_moment(handle, 1, plain))


def test_world_mentions_without_excluded_subjects_still_name_every_other_one(tmp_path):
    import json
    from types import SimpleNamespace

    from obliviate.world import WorldConfig, build_world
    from obliviate.world.generate import load_world_facts

    world = build_world(WorldConfig(n_subjects=40, n_secrets=8, n_forget_secrets=2), tmp_path / "w40")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "training_info.json").write_text(json.dumps({"world_dir": str(world)}))
    handle = SimpleNamespace(name=str(folder), hf_dir=folder)
    subjects = sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(world)})
    left_out = subjects[::3]
    texts = covariance.corpus_texts(handle, "world-mentions", exclude_subjects=left_out)
    mentions = [next(texts) for _ in range(80)][1::2]
    named = {s for p in mentions for s in subjects if re.search(rf"(?<!\w){re.escape(s)}(?!\w)", p)}
    assert named == set(subjects) - set(left_out)
    everyone = covariance.corpus_texts(handle, "world-mentions", exclude_subjects=subjects)
    assert list(islice(everyone, 3)) == list(islice(covariance._world_filler(), 3))  # no one to name: filler alone
