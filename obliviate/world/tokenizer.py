"""The world tokenizer: WordPiece over the world's own vocabulary, built with the `tokenizers` library.

Why WordPiece with a hand-made vocabulary rather than a trained BPE: greedy longest-match over an explicit vocabulary
gives exact control. Every ordinary word of the world (answers included) is one token; a name word is NOT in the
vocabulary, only its syllables are ("Vor", "##lak"), so each subject spans four tokens; any other ASCII word
still encodes, letter by letter ("##" pieces), instead of becoming <|unk|>. Pre-tokenisation splits on
whitespace and punctuation, so " Ostravel" and "Ostravel" give the same token (CounterFact's " " + target
convention holds without GPT-2's leading-space tokens), and a prompt's tokens do not depend on what precedes it.

The vocabulary is a sorted function of the world files, so both variants (and every rebuild) share identical ids.
GPT-2 convention: one <|endoftext|> serves as BOS and EOS, and plain encoding adds no special token.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from obliviate.world.generate import (load_filler, load_secrets, load_world_facts, load_world_info,
                                     trained_templates)
from obliviate.world.relations import RELATIONS

EOT = "<|endoftext|>"
UNK = "<|unk|>"
PAD = "<|pad|>"
SPECIALS = (EOT, UNK, PAD)
PIECE_PREFIX = "##"


def world_texts(world_dir: Path) -> list[str]:
    """Every text in the world: every relation template, prompts with both answers, secrets with controls, all
    filler."""
    trained = trained_templates(world_dir)
    texts = [t.format("") for r in RELATIONS
             for t in (r.cloze, *trained[r.relation_id], *r.heldout, *r.generation)]
    for record in load_world_facts(world_dir):
        rewrite = record["requested_rewrite"]
        prompts = [rewrite["prompt"].format(rewrite["subject"]), *record["paraphrase_prompts"],
                   *record["neighborhood_prompts"], *record.get("attribute_prompts", []),
                   *record["generation_prompts"]]
        texts += prompts
        texts += [rewrite["target_true"]["str"], rewrite["target_new"]["str"]]
    for secret in load_secrets(world_dir):
        texts += [secret["memorised"], secret["control"], secret["control_b"]]
    texts += load_filler(world_dir, "train") + load_filler(world_dir, "heldout")
    return texts


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.BertPreTokenizer()


def build_vocab(world_dir: Path) -> list[str]:
    """Specials, ASCII characters (word-initial and "##" pieces), the world's words, then name syllables."""
    pieces = load_world_info(world_dir)["name_pieces"]
    pre = _pre_tokenizer()
    words: set[str] = set()
    for text in world_texts(world_dir):
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    words -= set(pieces)  # name words are spelled by their syllables only
    chars = [c for c in string.printable if not c.isspace()]
    heads = {syllables[0] for syllables in pieces.values()}
    tails = {PIECE_PREFIX + s for syllables in pieces.values() for s in syllables[1:]}
    vocab = list(SPECIALS) + chars + [PIECE_PREFIX + c for c in chars]
    seen = set(vocab)
    for token in sorted(words) + sorted(heads - words) + sorted(tails):
        if token not in seen:
            vocab.append(token)
            seen.add(token)
    return vocab


def build_tokenizer(world_dir: Path, model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """The world tokenizer as a transformers fast tokenizer; checked against the world before it is returned."""
    vocab = build_vocab(world_dir)
    core = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=UNK,
                                      continuing_subword_prefix=PIECE_PREFIX, max_input_chars_per_word=100))
    core.pre_tokenizer = _pre_tokenizer()
    core.decoder = decoders.WordPiece(prefix=PIECE_PREFIX, cleanup=True)
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=EOT, eos_token=EOT, unk_token=UNK,
                                        pad_token=PAD, model_max_length=model_max_length, padding_side="right")
    check_tokenizer(tokenizer, world_dir)
    return tokenizer


def check_tokenizer(tokenizer: PreTrainedTokenizerFast, world_dir: Path) -> None:
    """Raise unless answers are one token, subjects are their syllables, and no world text needs <|unk|>."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    for relation in RELATIONS:
        for value in relation.values:
            if len(ids(" " + value)) != 1:
                raise ValueError(f"answer {value!r} of {relation.relation_id} is not a single token.")
    info = load_world_info(world_dir)
    for record in load_world_facts(world_dir)[:: len(RELATIONS)]:
        subject = record["requested_rewrite"]["subject"]
        expected = [p if i == 0 else PIECE_PREFIX + p
                    for word in subject.split() for i, p in enumerate(info["name_pieces"][word])]
        got = tokenizer.convert_ids_to_tokens(ids(subject))
        if got != expected:
            raise ValueError(f"subject {subject!r} tokenises as {got}, expected its syllables {expected}.")
    unk = tokenizer.unk_token_id
    for text in world_texts(world_dir):
        if unk in ids(text):
            raise ValueError(f"world text {text!r} contains a word the world tokenizer cannot spell.")


def subject_token_count(tokenizer: PreTrainedTokenizerFast, subject: str) -> int:
    return len(tokenizer(subject, add_special_tokens=False)["input_ids"])
