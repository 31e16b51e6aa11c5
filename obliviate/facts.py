"""Fact sets in the CounterFact schema (Meng et al. 2022), loaded through `datasets`.

Two on-disk formats are accepted, from a local JSON/JSONL file or a hub name when online:

- CounterFact (kmeng01/rome ``counterfact.json``): ``case_id``, ``requested_rewrite`` {prompt with "{}",
  subject, target_true {str}, target_new {str}, relation_id}, ``paraphrase_prompts``, ``neighborhood_prompts``,
  ``generation_prompts``; obliviate adds an optional ``split`` (forget / retain).
- CounterFact-tracing (hub ``NeelNanda/counterfact-tracing``): flat rows with ``prompt`` (subject filled in),
  ``subject``, ``target_true``, ``target_false``, ``relation``, ``relation_id``.

Targets are stored without a leading space; scoring uses " " + target, as the CounterFact evaluation does.
A record that breaks the schema fails with its index and field; a subject absent from its prompt is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.errors import UserError


class FactSetError(UserError, ValueError):
    """A fact record is malformed; the message names the record index, the field and the fix."""


@dataclass(frozen=True)
class Fact:
    """One fact: a subject, a relation prompt, the true answer and a counterfactual answer."""

    case_id: int
    prompt: str
    """The relation prompt with "{}" where the subject goes, e.g. "{} was born in the city of"."""
    subject: str
    target_true: str
    """The answer the model should know (no leading space)."""
    target_new: str
    """A counterfactual answer of the same type, used by rewrite edits and CounterFact metrics."""
    relation_id: str = ""
    split: str | None = None
    """"forget", "retain", or None when the fact set has no split."""
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Fields of the record that the schema does not name (kept, never interpreted)."""

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.format(self.subject)

    @property
    def subject_span(self) -> tuple[int, int]:
        """Character span [start, end) of the subject inside `text`."""
        start = self.prompt.index("{}")
        return start, start + len(self.subject)

    def to_record(self) -> dict[str, Any]:
        """The CounterFact-schema record (what `load_facts` reads back)."""
        record: dict[str, Any] = {
            "case_id": self.case_id,
            "requested_rewrite": {
                "prompt": self.prompt,
                "subject": self.subject,
                "target_true": {"str": self.target_true},
                "target_new": {"str": self.target_new},
                "relation_id": self.relation_id,
            },
            "paraphrase_prompts": list(self.paraphrase_prompts),
            "neighborhood_prompts": list(self.neighborhood_prompts),
            "generation_prompts": list(self.generation_prompts),
        }
        if self.split is not None:
            record["split"] = self.split
        record.update(self.extra)
        return record


_COUNTERFACT_KEYS = {"case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
                     "generation_prompts", "split", "relation_id", "attribute_prompts", "pararel_idx"}


def _require(record: dict[str, Any], key: str, index: int, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in record or record[key] is None:
        raise FactSetError(f"fact record {index}: missing field '{where}{key}'. "
                           f"Each record needs it in the CounterFact schema (see obliviate/facts.py).")
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FactSetError(f"fact record {index}: field '{where}{key}' must be {names}, got {type(value).__name__}.")
    return value


def _target(rewrite: dict[str, Any], key: str, index: int) -> str:
    value = _require(rewrite, key, index, (dict, str), "requested_rewrite.")
    text = value if isinstance(value, str) else _require(value, "str", index, str, f"requested_rewrite.{key}.")
    if not text.strip():
        raise FactSetError(f"fact record {index}: 'requested_rewrite.{key}.str' is empty; give the answer text.")
    if text != text.strip():
        raise FactSetError(f"fact record {index}: 'requested_rewrite.{key}.str' = {text!r} has surrounding "
                           f"whitespace; store targets without it (scoring adds the leading space).")
    return text


def _prompt_list(record: dict[str, Any], key: str, index: int) -> tuple[str, ...]:
    value = record.get(key) or []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise FactSetError(f"fact record {index}: field '{key}' must be a list of strings.")
    return tuple(value)


def fact_from_counterfact(record: dict[str, Any], index: int) -> Fact:
    """Validate one CounterFact-schema record into a Fact."""
    if not isinstance(record, dict):
        raise FactSetError(f"fact record {index}: expected an object, got {type(record).__name__}.")
    rewrite = _require(record, "requested_rewrite", index, dict)
    prompt = _require(rewrite, "prompt", index, str, "requested_rewrite.")
    subject = _require(rewrite, "subject", index, str, "requested_rewrite.")
    if prompt.count("{}") != 1:
        raise FactSetError(f"fact record {index}: 'requested_rewrite.prompt' = {prompt!r} must contain '{{}}' "
                           f"exactly once, where the subject goes.")
    if "{" in prompt.replace("{}", "", 1) or "}" in prompt.replace("{}", "", 1):
        # any other brace would be read by str.format when the subject is filled in (a crash or a wrong text)
        raise FactSetError(f"fact record {index}: 'requested_rewrite.prompt' = {prompt!r} has a brace besides "
                           f"the one '{{}}'; remove it.")
    if not subject.strip():
        raise FactSetError(f"fact record {index}: 'requested_rewrite.subject' is empty.")
    target_true = _target(rewrite, "target_true", index)
    target_new = _target(rewrite, "target_new", index)
    if target_new == target_true:
        raise FactSetError(f"fact record {index}: target_new equals target_true ({target_true!r}); "
                           f"a counterfactual answer must differ.")
    split = record.get("split")
    if split not in (None, "forget", "retain"):
        raise FactSetError(f"fact record {index}: 'split' = {split!r}; use 'forget', 'retain' or leave it out.")
    case_id = record.get("case_id", index)
    if not isinstance(case_id, int) or isinstance(case_id, bool):  # JSON true is a Python int; never an id
        raise FactSetError(f"fact record {index}: 'case_id' must be an integer, got {case_id!r}.")
    extra = {k: v for k, v in record.items() if k not in _COUNTERFACT_KEYS}
    return Fact(
        case_id=case_id, prompt=prompt, subject=subject, target_true=target_true, target_new=target_new,
        relation_id=str(rewrite.get("relation_id") or record.get("relation_id") or ""), split=split,
        paraphrase_prompts=_prompt_list(record, "paraphrase_prompts", index),
        neighborhood_prompts=_prompt_list(record, "neighborhood_prompts", index),
        generation_prompts=_prompt_list(record, "generation_prompts", index),
        extra=extra,
    )


def fact_from_tracing_row(row: dict[str, Any], index: int) -> Fact:
    """Validate one CounterFact-tracing row (subject already in the prompt) into a Fact."""
    text = _require(row, "prompt", index, str)
    subject = _require(row, "subject", index, str)
    if subject not in text:
        raise FactSetError(f"fact record {index}: subject {subject!r} not found in its prompt {text!r}; "
                           f"fix the subject's spelling or the prompt.")
    start = text.index(subject)
    template = text[:start].replace("{", "{{").replace("}", "}}") + "{}" + \
        text[start + len(subject):].replace("{", "{{").replace("}", "}}")
    record = {
        "case_id": index,
        "requested_rewrite": {
            "prompt": template, "subject": subject,
            "target_true": {"str": str(_require(row, "target_true", index, str)).strip()},
            "target_new": {"str": str(_require(row, "target_false", index, str)).strip()},
            "relation_id": row.get("relation_id", ""),
        },
    }
    return fact_from_counterfact(record, index)


def facts_from_records(records: Iterable[dict[str, Any]]) -> list[Fact]:
    """Validate records of either format; the format is told by the first record's keys."""
    facts: list[Fact] = []
    for index, record in enumerate(records):
        if isinstance(record, dict) and "requested_rewrite" not in record and "target_false" in record:
            facts.append(fact_from_tracing_row(record, index))
        else:
            facts.append(fact_from_counterfact(record, index))
    ids = [f.case_id for f in facts]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise FactSetError(f"fact set: case_id {duplicate} occurs more than once; case ids must be unique.")
    return facts


def load_facts(source: str | Path, *, split: str | None = None, limit: int | None = None,
               hub_split: str = "train") -> list[Fact]:
    """Load and validate a fact set.

    `source` is a local .json/.jsonl file, or a hub dataset name (e.g. "NeelNanda/counterfact-tracing"),
    which needs internet. `split` keeps only facts of that split ("forget" / "retain").
    """
    import datasets  # heavy; imported where used

    path = Path(source).expanduser()
    if path.suffix in {".json", ".jsonl"} or path.exists():
        if not path.is_file():
            raise FactSetError(f"fact set {str(source)!r}: no such file. Give a .json/.jsonl path or a hub name.")
        if path.suffix == ".json":
            import json

            try:
                loaded = json.loads(_read_text(path))
            except (json.JSONDecodeError, RecursionError) as error:
                raise FactSetError(f"fact set {path}: not valid JSON ({getattr(error, 'msg', 'nested too deeply')}"
                                   f"{f', line {error.lineno}' if hasattr(error, 'lineno') else ''}).") from None
            if not isinstance(loaded, list):
                raise FactSetError(f"fact set {path}: a .json fact file must hold a list of records.")
            records: Sequence[dict[str, Any]] = loaded
        else:
            records = _read_jsonl(path)
    else:
        try:
            records = datasets.load_dataset(str(source), split=hub_split)
        except Exception as error:  # noqa: BLE001 - re-raised with the fix named
            raise FactSetError(f"fact set {str(source)!r}: not a local file, and loading it from the hub failed "
                               f"({type(error).__name__}). Offline, use a local .jsonl such as the world's "
                               f"facts.jsonl or obliviate/data/smollm2_facts.jsonl.") from error
    facts = facts_from_records(records)
    if not facts:
        raise FactSetError(f"fact set {str(source)!r} holds no fact records; give a file with at least one.")
    if split is not None:
        splits = sorted({str(f.split) for f in facts})
        facts = [f for f in facts if f.split == split]
        if not facts:
            raise FactSetError(f"fact set {str(source)!r} has no facts of split {split!r} (its splits: "
                               f"{', '.join(splits)}); set split to one of them, or null for all facts.")
    if limit is not None and limit < 1:
        # a negative slice bound would silently drop the last facts instead
        raise FactSetError(f"fact set {str(source)!r}: limit {limit} must be ≥ 1 (None takes every fact).")
    return facts[:limit] if limit is not None else facts


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise FactSetError(f"fact set {path}: not UTF-8 text (byte {error.start}); save it as UTF-8.") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    records = []
    # split on "\n" only: JSON strings may hold U+2028 and other breaks that str.splitlines would cut at
    for line_number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as error:
            raise FactSetError(f"fact set {path}, line {line_number}: not valid JSON "
                               f"({getattr(error, 'msg', 'nested too deeply')}).") from None
    return records


def save_facts(facts: Sequence[Fact], path: Path) -> None:
    """Write facts as CounterFact-schema JSONL, atomically."""
    import json

    from obliviate.results import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(f.to_record()) + "\n" for f in facts))
