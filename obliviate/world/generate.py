"""Generate the fact world: CounterFact-schema facts, memorised secrets, filler text and world_info.json.

Everything follows from WorldConfig.seed through named random streams (one per part), so the same seed writes
byte-identical files and changing one part's recipe does not reshuffle the others. The record schema follows
CounterFact (kmeng01/rome ``counterfact.json``) plus obliviate's ``split``, ``relation_id``,
``trained_paraphrases`` / ``heldout_paraphrases``, ``cloze_trained`` and CounterFact's ``attribute_prompts``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from obliviate.world.atomic import atomic_folder
from obliviate.world.config import WorldConfig, world_options
from obliviate.world.filler import filler_sentences
from obliviate.world.memorised import WORDINGS, make_secrets
from obliviate.world.names import make_names, name_pieces
from obliviate.world.relations import RELATIONS

FACTS_FILE = "facts.jsonl"
SECRETS_FILE = "secrets.jsonl"
FILLER_TRAIN_FILE = "filler_train.txt"
FILLER_HELDOUT_FILE = "filler_heldout.txt"
INFO_FILE = "world_info.json"
WORLD_FILES = (FACTS_FILE, SECRETS_FILE, FILLER_TRAIN_FILE, FILLER_HELDOUT_FILE, INFO_FILE)


def _stream(seed: int, part: str) -> random.Random:
    # str seeds hash with sha512 in CPython, independent of PYTHONHASHSEED: stable across runs and machines
    return random.Random(f"obliviate-world/{seed}/{part}")


def _balanced(values: tuple[str, ...], n: int, rng: random.Random) -> list[str]:
    """n answers, each value used ⌊n/k⌋ or ⌈n/k⌉ times, in random order: a near-uniform prior by
    construction."""
    pool = [values[i % len(values)] for i in range(n)]
    rng.shuffle(pool)
    return pool


def _fact_records(subjects: list[str], splits: dict[str, str], cloze_subjects: set[str],
                  cfg: WorldConfig) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    answers: dict[str, dict[str, str]] = {}  # relation_id -> subject -> value
    for relation in RELATIONS:
        values = _balanced(relation.values, len(subjects), _stream(cfg.seed, f"answers/{relation.relation_id}"))
        answers[relation.relation_id] = dict(zip(subjects, values))
    rng = _stream(cfg.seed, "records")
    records = []
    for subject in subjects:
        for relation in RELATIONS:
            by_subject = answers[relation.relation_id]
            true = by_subject[subject]
            new = rng.choice([v for v in relation.values if v != true])
            same_true = [s for s in subjects if s != subject and by_subject[s] == true]
            same_new = [s for s in subjects if by_subject[s] == new]
            trained = [t.format(subject) for t in rng.sample(relation_trained(relation, cfg), cfg.trained_paraphrases)]
            heldout = [t.format(subject) for t in rng.sample(relation.heldout, cfg.heldout_paraphrases)]
            records.append({
                "case_id": len(records),
                "split": splits[subject],
                "relation_id": relation.relation_id,
                "requested_rewrite": {
                    "prompt": relation.cloze, "subject": subject,
                    "target_true": {"str": true}, "target_new": {"str": new},
                    "relation_id": relation.relation_id,
                },
                "paraphrase_prompts": trained + heldout,
                "neighborhood_prompts": [relation.cloze.format(s)
                                         for s in rng.sample(same_true, min(cfg.n_neighborhood, len(same_true)))],
                "attribute_prompts": [relation.cloze.format(s)
                                      for s in rng.sample(same_new, min(cfg.n_neighborhood, len(same_new)))],
                "generation_prompts": [t.format(subject) for t in relation.generation],
                "trained_paraphrases": trained,
                "heldout_paraphrases": heldout,
                "cloze_trained": subject in cloze_subjects,
            })
    return records, answers


def _frequency_prior(answers: dict[str, str]) -> dict[str, Any]:
    counts = Counter(answers.values())
    value, top = counts.most_common(1)[0]
    return {"majority_value": value, "share": top / len(answers)}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def build_world(cfg: WorldConfig, out_dir: Path) -> Path:
    """Write the world's files into `out_dir` (atomically) and return it."""
    names = make_names(cfg.n_subjects, _stream(cfg.seed, "names"))
    subjects = [n.text for n in names]
    n_forget = round(cfg.forget_fraction * len(subjects))
    forget = set(_stream(cfg.seed, "split").sample(subjects, n_forget))
    splits = {s: "forget" if s in forget else "retain" for s in subjects}
    retain = [s for s in subjects if s not in forget]
    cloze = set(_stream(cfg.seed, "cloze").sample(retain, round(cfg.cloze_share * len(retain))))

    records, answers = _fact_records(subjects, splits, cloze, cfg)
    secrets = make_secrets([(s, splits[s]) for s in subjects], cfg.n_forget_secrets,
                           cfg.n_secrets - cfg.n_forget_secrets, cfg.secret_digits, _stream(cfg.seed, "secrets"))
    filler_train = filler_sentences(cfg.n_filler_train, _stream(cfg.seed, "filler/train"),
                                    complete=cfg.complete_filler)
    filler_heldout = filler_sentences(cfg.n_filler_heldout, _stream(cfg.seed, "filler/heldout"),
                                      exclude=set(filler_train), complete=cfg.complete_filler)

    info = {
        "seed": cfg.seed,
        "config": world_options(cfg),
        "counts": {
            "subjects": len(subjects), "forget_subjects": n_forget, "retain_subjects": len(subjects) - n_forget,
            "relations": len(RELATIONS), "facts": len(records),
            "cloze_trained_subjects": len(cloze),
            "forget_facts": sum(r["split"] == "forget" for r in records),
            "retain_facts": sum(r["split"] == "retain" for r in records),
            "secrets": len(secrets), "forget_secrets": sum(s["split"] == "forget" for s in secrets),
            "retain_secrets": sum(s["split"] == "retain" for s in secrets),
            "filler_train_sentences": len(filler_train), "filler_heldout_sentences": len(filler_heldout),
            "filler_train_words": sum(len(s.split()) for s in filler_train),
            "filler_heldout_words": sum(len(s.split()) for s in filler_heldout),
        },
        "relations": {
            r.relation_id: {
                "name": r.name,
                "values": list(r.values),
                "cloze": r.cloze,
                "trained_templates": list(relation_trained(r, cfg)),
                "heldout_templates": list(r.heldout),
                "generation_templates": list(r.generation),
                "frequency_prior": _frequency_prior(answers[r.relation_id]),
            }
            for r in RELATIONS
        },
        "templates": "Every epoch, each subject of the variant gets a biography drawn anew: one sentence per "
                     "relation, in a random order, each from a random one of the relation's trained_templates "
                     "(template + ' ' + answer + '.'), the full name in every sentence. The cloze prompt is "
                     "trained only for the subjects whose records say cloze_trained (a share of the retain split). "
                     "heldout_templates never occur with any subject in training; generation_prompts are never "
                     "trained. Each record lists two trained templates (trained_paraphrases) and three held-out "
                     "ones (heldout_paraphrases).",
        "secrets": {
            "wordings": list(WORDINGS),
            "theta_m": cfg.theta_m,
            "theta_c": cfg.theta_c,
            "rule": "keep a key if mean per-token logP(memorised) > theta_m and logP(control), logP(control_b) "
                    "< theta_c (mean natural-log prob per token, first token unscored, no BOS)",
            "trained": "memorised texts only (every one for `world`; retain keys only for `world-retain`); "
                       "control and control_b are never trained",
        },
        "forget_subjects": sorted(forget),
        "name_pieces": name_pieces(names),
        "files": list(WORLD_FILES),
    }
    with atomic_folder(out_dir) as tmp:
        _write_jsonl(tmp / FACTS_FILE, records)
        _write_jsonl(tmp / SECRETS_FILE, secrets)
        (tmp / FILLER_TRAIN_FILE).write_text("\n".join(filler_train) + "\n")
        (tmp / FILLER_HELDOUT_FILE).write_text("\n".join(filler_heldout) + "\n")
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return Path(out_dir)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def load_world_facts(world_dir: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The world's fact records (CounterFact schema), optionally one split."""
    records = read_jsonl(Path(world_dir) / FACTS_FILE)
    return [r for r in records if split is None or r["split"] == split]


def load_secrets(world_dir: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The world's secret records, optionally one split."""
    records = read_jsonl(Path(world_dir) / SECRETS_FILE)
    return [r for r in records if split is None or r["split"] == split]


def load_world_info(world_dir: Path) -> dict[str, Any]:
    return json.loads((Path(world_dir) / INFO_FILE).read_text())


def relation_trained(relation, cfg: WorldConfig) -> tuple[str, ...]:
    """The biography templates a world built with `cfg` trains for `relation`."""
    return relation.trained + (relation.more_trained if cfg.more_templates else ())


def trained_templates(world_dir: Path) -> dict[str, list[str]]:
    """Relation id → the biography templates the world in `world_dir` trains (as its world_info.json records)."""
    return {rid: list(r["trained_templates"]) for rid, r in load_world_info(world_dir)["relations"].items()}


def load_filler(world_dir: Path, which: str = "heldout") -> list[str]:
    """Filler sentences: "train" (trained on) or "heldout" (never trained)."""
    name = {"train": FILLER_TRAIN_FILE, "heldout": FILLER_HELDOUT_FILE}[which]
    return [line for line in (Path(world_dir) / name).read_text().splitlines() if line]
