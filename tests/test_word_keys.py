"""The vocabulary key bank and ROME's preserved nearest-word keys (edit.word_keys, RomeConfig.neighbour_keys)."""

from __future__ import annotations

import pytest
import torch

from _edit_tiny import tiny_corpus, tiny_facts, tiny_hf_handle
from edit.covariance import CovarianceConfig, MetricSolver
from edit.rome import RomeConfig, rome_edit
from edit.sites import edit_site
from edit.word_keys import PreservingSolver, WordKeys, kin_moment, vocabulary_words, word_keys
from obliviate.config import from_dict
from obliviate.config.loader import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Vocab:
    def __init__(self, tokens):
        self.tokens = tokens

    def get_vocab(self):
        return {token: i for i, token in enumerate(self.tokens)}


def test_vocabulary_words_takes_marked_whole_words_in_id_order():
    tok = _Vocab(["Ġthe", "Ġcountry", "ing", "Ġcity", "▁river", "▁city", "Ġab", "Ġcafé", "Ġx2yz", "island"])
    assert vocabulary_words(tok) == ["country", "city", "river"]  # short, non-ASCII, non-letters, unmarked: out
    assert vocabulary_words(tok, limit=2) == ["country", "city"]
    assert vocabulary_words(_Vocab(["the", "Paris", "river", "x1"])) == ["Paris", "river"]  # word-level vocabulary


def test_preserving_solver_is_the_solve_with_the_kept_keys_added():
    torch.manual_seed(0)
    a = torch.randn(12, 12, dtype=torch.float64)
    c = a @ a.T + 0.5 * torch.eye(12, dtype=torch.float64)
    kept = torch.randn(5, 12)
    solver = PreservingSolver.build(MetricSolver(*torch.linalg.lu_factor(c)), kept, weight=3.0)
    full = c + 3.0 / 5 * kept.double().T @ kept.double()
    rhs = torch.randn(12, 3)
    assert torch.allclose(solver.solve(rhs), torch.linalg.solve(full, rhs.double()), atol=1e-9)
    assert torch.allclose(solver.solve(rhs[:, 0]), torch.linalg.solve(full, rhs[:, 0].double()), atol=1e-9)


def test_nearest_ranks_by_centred_cosine_and_leaves_out_the_subjects_words():
    keys = torch.tensor([[1.0, 0.0, 1.0], [0.9, 0.1, 1.0], [0.0, 1.0, 1.0], [-1.0, 0.0, 1.0]])
    bank = WordKeys(words=["Paris", "Lyon", "Tower", "Rome"], keys=keys.half(), mean=keys.mean(0))
    assert bank.nearest(torch.tensor([1.0, 0.0, 1.0]), 2, bank.inside(["Eiffel Tower"])) == [0, 1]
    assert bank.nearest(torch.tensor([1.0, 0.0, 1.0]), 2, bank.inside(["Paris Hilton"])) == [1, 2]


def test_word_keys_are_the_keys_in_a_frame_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_hf_handle("gpt2")
    bank = word_keys(handle, 1)
    assert "Paris" in bank.words and "Tower" in bank.words and "the" not in bank.words
    assert bank.keys.shape == (len(bank.words), handle.tl.cfg.d_mlp)
    again = word_keys(handle, 1, cache=False)  # read from the model again: the same keys
    assert torch.equal(again.keys, bank.keys)
    assert list((tmp_path / "stats").glob("L1_wordkeys_*.safetensors"))


def test_rome_with_neighbour_keys_moves_the_kept_words_less(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_hf_handle("gpt2")
    corpus = tiny_corpus(tmp_path / "corpus.txt")
    fact = tiny_facts()[0]  # the Eiffel Tower
    cov = CovarianceConfig(corpus=str(corpus), n_tokens=1500, seq_len=24, cache=False)
    base = dict(covariance=cov, context_lengths=[(5, 2)], steps=3, every_template_key=True)
    plain = rome_edit(handle, fact, 1, RomeConfig(**base))
    kept = rome_edit(handle, fact, 1, RomeConfig(**base, neighbour_keys=4, neighbour_weight=10.0))
    words = kept.metrics["kept_words"]
    assert len(words) == 4 and not {"Eiffel", "Tower"} & set(words)
    bank = word_keys(handle, 1)
    rows = [bank.words.index(w) for w in words]
    reach = {name: (bank.keys[rows].float() @ r.vectors["u"]).abs() / torch.dot(r.vectors["k_star"], r.vectors["u"])
             for name, r in (("plain", plain), ("kept", kept))}
    assert reach["kept"].mean() < 0.5 * reach["plain"].mean()
    assert "kept_words" not in plain.metrics
    assert torch.dot(kept.vectors["k_star"], kept.vectors["u"]) > 0  # the edit itself still reaches its key


@pytest.mark.parametrize("params, field", [({"neighbour_keys": -1}, "neighbour_keys"),
                                           ({"neighbour_weight": 0.0}, "neighbour_weight"),
                                           ({"neighbour_keys": 8, "mom2_adjustment": False}, "neighbour_keys")])
def test_neighbour_keys_refused_at_load(params, field):
    with pytest.raises(ConfigError, match=f"params.{field}"):
        from_dict(RomeConfig, params, where="params")


def test_the_registered_rome_records_the_words_it_kept_for_each_target(tmp_path, monkeypatch):
    from edit.result import EditRequest, run_method

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_hf_handle("gpt2")
    cov = CovarianceConfig(corpus=str(tiny_corpus(tmp_path / "corpus.txt")), n_tokens=1500, seq_len=24, cache=False)
    request = EditRequest(targets=tiny_facts()[:2], goal="rewrite", layers=[1])
    kept = run_method("rome", handle, request, RomeConfig(covariance=cov, context_lengths=[(5, 2)], steps=2,
                                                          neighbour_keys=3))
    words = kept.metrics["kept_words"]
    assert sorted(words) == [0, 1] and all(len(w) == 3 for w in words.values())
    assert not {"Eiffel", "Tower"} & set(words[0])  # the subject's own name is never kept off its edit
    plain = run_method("rome", handle, request, RomeConfig(covariance=cov, context_lengths=[(5, 2)], steps=2))
    assert "kept_words" not in plain.metrics


def test_kin_moment_keeps_each_word_once_and_never_an_edited_subjects_words():
    words = ["Paris", "London", "Rome", "Tower", "river"]
    keys = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    bank = WordKeys(words=words, keys=keys, mean=torch.zeros(2))
    moment, kept = kin_moment(bank, torch.tensor([[1.0, 0.05], [0.95, 0.0]]), ["Big Ben", "the Tower"], 2, 3.0)
    assert kept == [["Paris", "London"], ["Paris", "London"]]  # Tower: inside a subject of the batch
    rows = keys[:2].double()
    assert torch.allclose(moment, 1.5 * rows.T @ rows)  # weight / count per kept word, each word once


def test_memit_with_neighbour_keys_moves_the_kept_words_less(tmp_path, monkeypatch):
    from edit.memit import MemitConfig, memit_edit

    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    handle = tiny_hf_handle("gpt2")
    cov = CovarianceConfig(corpus=str(tiny_corpus(tmp_path / "corpus.txt")), n_tokens=1500, seq_len=24, cache=False)
    base = dict(covariance=cov, context_lengths=[(5, 2)], steps=3, mom2_update_weight=5.0)
    facts = tiny_facts()[:2]
    plain = memit_edit(handle, facts, [1], MemitConfig(**base), goal="rewrite")
    kept = memit_edit(handle, facts, [1], MemitConfig(**base, neighbour_keys=4, neighbour_weight=10.0),
                      goal="rewrite")
    words = kept.metrics["kept_words"]
    assert sorted(words) == [0, 1] and "kept_words" not in plain.metrics
    assert not {"Eiffel", "Tower", "Big", "Ben"} & {w for ws in words.values() for w in ws}
    bank = word_keys(handle, 1)
    rows = [bank.words.index(w) for ws in words.values() for w in ws]
    weight = edit_site(handle, 1).weight
    moved = {name: (bank.keys[rows].float() @ r.deltas[weight]).norm(dim=1).mean() for name, r in
             (("plain", plain), ("kept", kept))}
    assert moved["kept"] < 0.5 * moved["plain"]
    own = kept.vectors["keys_L1"] @ kept.deltas[weight]  # the edited keys still get most of their update
    assert own.norm() > 0.5 * (plain.vectors["keys_L1"] @ plain.deltas[weight]).norm()


@pytest.mark.parametrize("params, field", [({"neighbour_keys": -1}, "neighbour_keys"),
                                           ({"neighbour_weight": 0.0}, "neighbour_weight")])
def test_memit_neighbour_keys_refused_at_load(params, field):
    from edit.memit import MemitConfig

    with pytest.raises(ConfigError, match=f"params.{field}"):
        from_dict(MemitConfig, params, where="params")
