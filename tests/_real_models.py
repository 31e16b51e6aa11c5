"""Checks shared by the real-model tests (SmolLM2, Gemma 3): TransformerLens equals Hugging Face, and which packaged
facts both call top-1."""

from __future__ import annotations

from collections import Counter

import torch


def max_tl_hf_gap(handle, text: str) -> float:
    """Max |TL − HF| logit on `text`, after checking both see the same tokens."""
    ids = handle.tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(handle.tl.to_tokens(text), ids), (handle.tl.to_tokens(text), ids)
    with torch.no_grad():
        return (handle.tl(ids) - handle.hf(ids).logits).abs().max().item()


def known_counts(handle, facts, *, bos: bool) -> Counter[str]:
    """Per relation: facts whose answer's first token is top-1 under HF and under TL (`bos`: the model's BOS).

    Right-padded batches: with causal attention the real positions never see the pads, so the logits at each
    prompt's last real token are those of the unpadded prompt. Only those positions are unembedded (the vocabulary
    dominates otherwise); sorted by length so batches carry little padding."""
    tl, hf, tok = handle.tl, handle.hf, handle.tokenizer
    known: Counter[str] = Counter()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prefix = [tok.bos_token_id] if bos else []
    rows_all = [prefix + tok(f.text, add_special_tokens=False)["input_ids"] for f in facts]
    order = sorted(range(len(facts)), key=lambda i: len(rows_all[i]))
    for start in range(0, len(order), 32):
        idx = order[start:start + 32]
        rows = [rows_all[i] for i in idx]
        width = max(map(len, rows))
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        pick = (torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows]))
        with torch.no_grad():
            hf_top = hf.lm_head(hf.model(ids).last_hidden_state[pick]).argmax(-1)
            tl_last = tl(ids, stop_at_layer=tl.cfg.n_layers)[pick][:, None]  # residual after the last block
            tl_top = tl.unembed(tl.ln_final(tl_last))[:, 0].argmax(-1)
        for i, h, t in zip(idx, hf_top.tolist(), tl_top.tolist()):
            answer = tok(" " + facts[i].target_true, add_special_tokens=False)["input_ids"][0]
            known[facts[i].relation_id] += int(h == answer and t == answer)
    return known


def assert_mlp_weights_map_both_ways(handle, arch: str) -> None:
    """The TL↔HF map of the gated MLP's weights (first and last block) gives back the same tensors both ways."""
    from obliviate.tl_wrap import hf_to_tl_tensor, tl_to_hf_tensor

    hf_state, tl_state = handle.hf.state_dict(), handle.tl.state_dict()
    for i in (0, handle.tl.cfg.n_layers - 1):
        for tl_name in (f"blocks.{i}.mlp.W_out", f"blocks.{i}.mlp.W_in", f"blocks.{i}.mlp.W_gate"):
            hf_name, w = tl_to_hf_tensor(tl_name, tl_state[tl_name], arch)
            assert torch.equal(w, hf_state[hf_name])
            assert torch.equal(hf_to_tl_tensor(hf_name, hf_state[hf_name], arch)[1], tl_state[tl_name])
