"""Build ``smollm2_facts.jsonl`` / ``gemma3_facts.jsonl``: CounterFact-schema facts a real model knows.

Regenerate (from the repository root; about a minute on one idle CPU core for SmolLM2, four for Gemma):

    python -m obliviate.data.make_smollm2_facts            # rewrites obliviate/data/smollm2_facts.jsonl
    python -m obliviate.data.make_smollm2_facts --model gemma-3-270m   # rewrites obliviate/data/gemma3_facts.jsonl
    python -m obliviate.data.make_smollm2_facts --check    # exit 1 if the committed file differs
    python -m obliviate.data.make_smollm2_facts --set untuned   # rewrites obliviate/data/smollm2_facts_untuned.jsonl
    python -m obliviate.data.make_smollm2_facts --set fresh     # rewrites obliviate/data/smollm2_facts_fresh.jsonl

"Known" means: under the model's own BOS convention (none for SmolLM2, whose HF tokenizer adds none; a BOS for
Gemma, which expects one), the model's top-1 next token after the filled prompt is the first token of
" " + target_true. Both models are judged on the same candidates and templates, so their fact sets compare.
Candidates come from ``smollm2_sources.py`` (countryinfo capitals + hand-written relations); ``--set untuned`` builds
the second SmolLM2 set from ``smollm2_untuned_sources.py`` (other relations, written after ROME's settings were
chosen on the first: facts nobody tuned on), ``--set fresh`` the third from ``smollm2_fresh_sources.py`` (written
after ROME's plateau stop rule was frozen, to judge it: the untuned set had found the rule's first form wanting).

Deterministic: candidates are in a fixed order, a batched pass only shortlists and the final
known/unknown decision is an unbatched forward pass (no padding effects), and every random choice (target_new,
same-relation neighbours) uses a ``random.Random`` seeded by a string of the fact, which is stable across Python runs.
On different torch builds a near-tie could flip; ``--check`` tells you.

Per record, besides the CounterFact fields:
- ``neighborhood_kind``: "same_target" — prompts about OTHER subjects (any relation) whose
  true answer is also target_true, so an edit must leave them unchanged at that answer; or
  "same_relation" — no other known subject shares the answer, so prompts of the same relation
  about other subjects (their answers differ, see ``neighborhood_targets``).
- ``neighborhood_targets``: the true answer of each neighbourhood prompt, aligned with it.
Only facts the model knows are used as neighbours, so "unchanged" is checkable.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from obliviate.data import smollm2_fresh_sources as fresh
from obliviate.data import smollm2_sources as src
from obliviate.data import smollm2_untuned_sources as untuned

OUT = Path(__file__).with_name("smollm2_facts.jsonl")
OUTPUTS = {"smollm2-135m": OUT, "gemma-3-270m": Path(__file__).with_name("gemma3_facts.jsonl")}
"""The fact file of each registry model (`obliviate.models.REGISTRY_MODELS`)."""
UNTUNED_OUT = Path(__file__).with_name("smollm2_facts_untuned.jsonl")
"""The second SmolLM2 set (``--set untuned``)."""
FRESH_OUT = Path(__file__).with_name("smollm2_facts_fresh.jsonl")
"""The third SmolLM2 set (``--set fresh``)."""
SMOLLM2_ONLY_SETS = {"untuned": UNTUNED_OUT, "fresh": FRESH_OUT}
"""The extra SmolLM2 sets and their files."""
RELATIONS = {**src.RELATIONS, **untuned.RELATIONS, **fresh.RELATIONS}
"""Every relation any candidate set uses (their ids are disjoint)."""
N_NEIGHBOURS = 5
MIN_KNOWN_PER_RELATION = 5  # fewer cannot give every fact >= 2 same-relation neighbours


@dataclass(frozen=True)
class Candidate:
    relation_id: str
    subject: str
    article: bool  # the subject takes "the" in running text
    target: str

    @property
    def relation(self) -> src.Relation:
        return RELATIONS[self.relation_id]

    def fill(self, template: str) -> str:
        """A template with "{}" → the full prompt text for this subject."""
        return with_article(template, self.article).format(self.subject)

    @property
    def prompt(self) -> str:
        """The CounterFact "prompt": the relation template, article included, still with "{}"."""
        return with_article(self.relation.prompt, self.article)


def with_article(template: str, article: bool) -> str:
    """Put "the" before the subject slot ("The" at the start of a sentence)."""
    if not article:
        return template
    out = template.replace("{}", "the {}")
    return "The" + out[3:] if out.startswith("the {}") else out


def _split_article(subject: str) -> tuple[str, bool]:
    return (subject[4:], True) if subject.startswith("the ") else (subject, False)


def candidates() -> list[Candidate]:
    """Every candidate fact, in a fixed order (relation, then source order)."""
    from countryinfo import all_countries

    countries = []
    for info in all_countries():
        name, capital, region = info.name(), info.capital(), info.region()
        if not name or "(" in name or "," in name or name in src.COUNTRY_SKIP:
            continue
        if name.startswith("The "):  # countryinfo spells "The Bahamas", "The Gambia"
            name = name[4:]
        countries.append((name, capital, region))
    countries.sort()

    out: list[Candidate] = []
    for name, capital, _ in countries:
        if capital:
            out.append(Candidate("P36", name, src.takes_article(name), capital))
    by_hand = {**{c: "South America" for c in src.SOUTH_AMERICA}, **{c: "North America" for c in src.NORTH_AMERICA}}
    for name, _, region in countries:
        continent = by_hand.get(name) or (region if region in ("Africa", "Asia", "Europe", "Oceania") else None)
        if continent:
            out.append(Candidate("P30", name, src.takes_article(name), continent))
    out += pair_candidates((
        ("P131", src.LANDMARKS), ("P17", src.CITIES), ("P37", src.LANGUAGES), ("P159", src.COMPANIES),
        ("P112", src.FOUNDERS), ("P50", src.BOOKS), ("P170", src.PAINTINGS),
    ))
    seen = set()
    unique = []
    for c in out:
        if (c.relation_id, c.subject) not in seen:
            seen.add((c.relation_id, c.subject))
            unique.append(c)
    return unique


def pair_candidates(relations: Iterable[tuple[str, Iterable[tuple[str, str]]]]) -> list[Candidate]:
    """Candidates from (relation id, (subject, answer) pairs), in the order given; "the X" takes the article."""
    out = []
    for relation_id, pairs in relations:
        for subject, target in pairs:
            name, article = _split_article(subject)
            out.append(Candidate(relation_id, name, article, target))
    return out


def hand_written_set(source: Any) -> tuple[Callable[[], list[Candidate]], dict[str, src.Relation]]:
    """A hand-written source module's candidates (its PAIRS, relation then source order) and relations."""
    return partial(pair_candidates, source.PAIRS.items()), source.RELATIONS


CANDIDATE_SETS = {"shipped": (candidates, src.RELATIONS), "untuned": hand_written_set(untuned),
                  "fresh": hand_written_set(fresh)}
"""Each candidate set: its candidates and its relations."""


def answer_token_id(tokenizer: Any, target: str) -> int:
    """First token of " " + target: what the model must predict (CounterFact convention)."""
    return int(tokenizer(" " + target, add_special_tokens=False)["input_ids"][0])


def prompt_ids(tokenizer: Any, text: str, bos: bool) -> list[int]:
    """Token ids of `text`, with the BOS in front when the model's convention has one."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids] if bos else ids


@torch.no_grad()
def next_token_logits(model: Any, tokenizer: Any, text: str, bos: bool = False) -> Float[torch.Tensor, " vocab"]:
    """HF next-token logits after ``text`` (unbatched)."""
    return model(torch.tensor([prompt_ids(tokenizer, text, bos)])).logits[0, -1]


@torch.no_grad()
def batched_top1(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 32, bos: bool = False) -> list[int]:
    """Top-1 next token per text, right-padded batches (positions unchanged, pads never attended)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[int] = []
    for start in range(0, len(texts), batch_size):
        rows = [prompt_ids(tokenizer, t, bos) for t in texts[start:start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(r) - 1 for r in rows])
        out += logits[torch.arange(len(rows)), last].argmax(-1).tolist()
    return out


def _target_new(c: Candidate, pool: list[str], tokenizer: Any) -> str:
    """A same-type wrong answer whose first token differs from the true one."""
    true_tok = answer_token_id(tokenizer, c.target)
    options = [t for t in pool if t != c.target and answer_token_id(tokenizer, t) != true_tok]
    return random.Random(f"target_new|{c.relation_id}|{c.subject}").choice(options)


def _neighbours(c: Candidate, known: list[Candidate]) -> tuple[str, list[str], list[str]]:
    others = [k for k in known if k.subject != c.subject]
    same_target = [k for k in others if k.target == c.target]
    if len(same_target) >= 2:
        # same relation first: the closest test of specificity
        same_target.sort(key=lambda k: k.relation_id != c.relation_id)
        chosen, kind = same_target[:N_NEIGHBOURS], "same_target"
    else:
        pool = [k for k in others if k.relation_id == c.relation_id and k.target != c.target]
        chosen = random.Random(f"neighbours|{c.relation_id}|{c.subject}").sample(pool, min(N_NEIGHBOURS, len(pool)))
        kind = "same_relation"
    return kind, [k.fill(k.relation.prompt) for k in chosen], [k.target for k in chosen]


def build(model: Any, tokenizer: Any, *, bos: bool = False, log=print, candidate_set: str = "shipped",
          ) -> list[dict[str, Any]]:
    """All CounterFact records for the candidates the model knows (`bos`: the model's BOS convention)."""
    make_candidates, relations = CANDIDATE_SETS[candidate_set]
    cands = make_candidates()
    # Batched pass to shortlist (fast), then the decision on an unbatched pass (the way the
    # known-fact check is defined), so padding can never admit a fact.
    tops = batched_top1(model, tokenizer, [c.fill(c.relation.prompt) for c in cands], bos=bos)
    shortlist = [c for c, top in zip(cands, tops) if top == answer_token_id(tokenizer, c.target)]
    known = [
        c for c in shortlist
        if int(next_token_logits(model, tokenizer, c.fill(c.relation.prompt), bos).argmax())
        == answer_token_id(tokenizer, c.target)
    ]
    if len(known) != len(shortlist):
        log(f"note: {len(shortlist) - len(known)} shortlisted facts failed the unbatched check")
    have = Counter(c.relation_id for c in known)
    known = [c for c in known if have[c.relation_id] >= MIN_KNOWN_PER_RELATION]
    total = Counter(c.relation_id for c in cands)
    for rid, rel in relations.items():
        dropped = "" if have[rid] >= MIN_KNOWN_PER_RELATION else f"  (dropped: < {MIN_KNOWN_PER_RELATION} known)"
        log(f"{rid:5s} {rel.name:18s} known {have[rid]:4d} / {total[rid]:4d}{dropped}")
    log(f"total known {len(known)} / {len(cands)}")

    pools = {rid: sorted({c.target for c in cands if c.relation_id == rid}) for rid in relations}
    records = []
    for case_id, c in enumerate(known):
        kind, n_prompts, n_targets = _neighbours(c, known)
        if len(n_prompts) < 2:
            raise RuntimeError(f"{c}: fewer than 2 neighbourhood prompts ({n_prompts})")
        records.append({
            "case_id": case_id,
            "relation_id": c.relation_id,
            "requested_rewrite": {
                "prompt": c.prompt,
                "subject": c.subject,
                "target_true": {"str": c.target},
                "target_new": {"str": _target_new(c, pools[c.relation_id], tokenizer)},
                "relation_id": c.relation_id,
            },
            "paraphrase_prompts": [c.fill(t) for t in c.relation.paraphrases],
            "neighborhood_prompts": n_prompts,
            "neighborhood_kind": kind,
            "neighborhood_targets": n_targets,
            "generation_prompts": [c.fill(t) for t in c.relation.generations],
        })
    return records


def render(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(OUTPUTS))
    parser.add_argument("--out", type=Path, default=None, help="default: the model's packaged fact file")
    parser.add_argument("--set", dest="candidate_set", default="shipped", choices=sorted(CANDIDATE_SETS),
                        help="untuned / fresh: the second / third SmolLM2 set (smollm2_untuned_sources.py / "
                             "smollm2_fresh_sources.py)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machines)")
    args = parser.parse_args(argv)

    from obliviate.models import default_prepend_bos, load

    torch.set_num_threads(args.threads)
    if args.candidate_set in SMOLLM2_ONLY_SETS and args.model != "smollm2-135m":
        parser.error(f"--set {args.candidate_set} is one of SmolLM2's sets; use --model smollm2-135m.")
    args.out = args.out or SMOLLM2_ONLY_SETS.get(args.candidate_set) or OUTPUTS[args.model]
    handle = load(args.model)
    text = render(build(handle.hf, handle.tokenizer, bos=default_prepend_bos(args.model, handle.tokenizer),
                        candidate_set=args.candidate_set))
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print("up to date" if same else f"{args.out} differs from a fresh build")
        return 0 if same else 1
    tmp = args.out.with_suffix(".jsonl.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)  # atomic: readers never see half a file
    print(f"wrote {args.out} ({text.count(chr(10))} facts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
