"""Second-moment statistics C = E[k kᵀ] of MLP down-projection inputs, computed offline and cached.

ROME's u = C⁻¹k* and MEMIT's (λC + KKᵀ)⁻¹ need the uncentred second moment of the keys over "typical" text
(kmeng01/rome ``rome/layer_stats.py``: ``SecondMoment`` over 100k Wikipedia texts, or a download of precomputed
statistics). Neither Wikipedia nor the download is reachable here, and missing/slow statistics are the references'
most reported problem, so C comes from a local corpus:

- ``world-filler`` (default for the world models): the world's held-out filler sentences, text the models never
  trained on, in the world's own language;
- ``stdlib-docstrings`` (default otherwise, e.g. SmolLM2): docstrings of the Python standard library of the
  running interpreter — several MB of edited English prose (with some code), identical on every machine with the
  same Python, and well over d_mlp = 1536 tokens. The world filler is a poor proxy for English, and SmolLM2 was
  trained on web text, textbooks and code, which docstrings resemble more than any other local text;
- ``place-mentions``: short neutral sentences that name the places ``countryinfo`` lists (every country, capital
  and province, ≈ 4,700 names; "The history of {} goes back a long time."), in a seeded order;
- ``stdlib-docstrings+place-mentions``: the two above interleaved paragraph by paragraph (≈ 2:1 in characters).
  The references' Wikipedia is full of named entities; docstrings name almost none, so C⁻¹ amplifies the
  directions every entity key shares and ROME's u = C⁻¹k* answers to other subjects as well (SmolLM2 layer 6:
  the median ratio (k_neighbour · u) / (k* · u) over same-answer neighbours 0.09, 90th percentile 0.50; with the
  mix 0.05 / 0.28, README "ROME on SmolLM2");
- ``world-mentions`` (world models): the held-out filler interleaved with short neutral sentences that name every
  subject of the model's own world (PLACE_SENTENCES' kind: "{} was mentioned in the report."), four names a
  paragraph — the world's stand-in for Wikipedia's named entities. The filler names no subject, so with it C knows
  nothing of the keys that subjects form and C⁻¹ amplifies what all of them share; MEMIT's erase of a 480-subject
  world's forget split then takes the kept subjects with it (docs/world-history.md, world v2, stop 33);
- a path to a UTF-8 text file (paragraphs separated by blank lines).

``exclude_subjects`` leaves named subjects out of any of these: world-mentions skips their names, and from every
other corpus a paragraph that names one is dropped. AlphaEdit uses it to keep the keys it must move out of the
"preserved" statistic (`edit.alphaedit`, ``c_without_edited_subjects``).

Texts are packed back-to-back into rows of `seq_len` tokens and streamed through the blocks up to the highest
layer needed; k kᵀ is accumulated in float64 and never more than one batch of activations is held. C is the mean
over tokens (the reference's ``SecondMoment.moment()``), so MEMIT's λ multiplies a per-token average.

The cache key is a hash of the weights that determine the keys (embeddings, blocks below L, and block L up to the
down-projection), the tokenizer, the corpus and its size: a changed model — e.g. an earlier edit applied in
memory — can never pick up stale statistics, and the unchanged model always hits. Files are safetensors under
``obliviate.paths.cache_subdir("stats")``, written atomically. `regularised` adds the ridge at use time.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from jaxtyping import Float

from edit.sites import edit_site
from obliviate.integrity import CacheIntegrityError, seal, verify
from obliviate.paths import cache_subdir
from obliviate.results import atomic_save_tensors, load_tensors

CACHE_VERSION = "1"


@dataclass
class CovarianceConfig:
    """How the key second moment C is estimated."""

    corpus: str = "auto"
    """'auto' (world-filler for world models, embedded or trained into a folder, else stdlib-docstrings),
    'world-filler', 'world-mentions', 'stdlib-docstrings', 'place-mentions', 'stdlib-docstrings+place-mentions',
    or a path to a text file."""
    n_tokens: int = 50_000
    """Tokens (key vectors) averaged: ~33 per key dimension for SmolLM2 (d_mlp 1536). The references average over
    100k Wikipedia texts, far more than a CPU affords; the ridge covers the poorly sampled directions."""
    seq_len: int = 128
    """Tokens per packed row (capped at the model's context)."""
    batch_size: int = 8
    """Rows per forward pass."""
    ridge: float = 1e-4
    """Added to C as ridge · mean(diag C) · I when C is used (stabilises C⁻¹ along unused directions)."""
    cache: bool = True
    """Read/write the statistics cache."""
    seed: int = 0
    """Seed of the corpus order."""
    exclude_subjects: tuple[str, ...] = ()
    """Subjects left out of the corpus: no world-mentions sentence names them, and any other corpus's paragraphs
    that name one (as a whole word) are dropped. Empty: the corpus as it is."""


def _stdlib_docstrings(seed: int) -> Iterator[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo")
    files = sorted(p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts))
    random.Random(seed).shuffle(files)
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    yield doc


PLACE_SENTENCES = (
    "{} is mentioned in many books.", "People often talk about {}.", "The history of {} goes back a long time.",
    "A report about {} was published last year.", "Many visitors come to {} every summer.",
    "There is a long article about {} in the encyclopedia.", "{} has changed a lot over the years.",
    "Little is known about the early days of {}.", "The name {} appears on old maps.", "Some people live in {}.",
)
"""Neutral frames for a place name: they say nothing about any attribute a fact set asks for."""


def place_names() -> list[str]:
    """Every country (title case), capital and province name ``countryinfo`` lists, sorted, without repeats."""
    import countryinfo

    names: set[str] = set()
    for country in countryinfo.all_countries():
        for getter in (country.name, country.capital, country.provinces):
            try:
                value = getter()
            except (KeyError, ValueError, AttributeError):  # a territory without a capital or provinces
                continue
            for name in [value] if isinstance(value, str) else (value or []):
                if isinstance(name, str) and name.strip():
                    names.add(name.strip().title() if getter == country.name else name.strip())
    return sorted(names)


def _place_mentions(seed: int) -> Iterator[str]:
    names = place_names()
    rng = random.Random(seed)
    rng.shuffle(names)
    for start in range(0, len(names), 4):
        yield " ".join(rng.choice(PLACE_SENTENCES).format(name) for name in names[start:start + 4])


def _interleaved(*sources: Iterator[str]) -> Iterator[str]:
    """One paragraph of each source in turn, until every source is spent."""
    live = list(sources)
    while live:
        for source in list(live):
            paragraph = next(source, None)
            if paragraph is None:
                live.remove(source)
            else:
                yield paragraph


def _world_filler() -> Iterator[str]:
    from obliviate.world import ensure_world

    path = ensure_world() / "filler_heldout.txt"
    yield from (line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


SUBJECT_SENTENCES = (
    "{} was mentioned in the report.", "The letter was addressed to {}.", "We talked about {} yesterday.",
    "A photo of {} hangs in the hall.", "Someone asked about {} this morning.", "The list includes {}.",
    "{} is on the guest list.", "Nobody has seen {} today.",
)
"""Neutral frames for a subject's name: no relation's word, so they say nothing a fact asks for."""


def model_world(handle) -> Path:
    """The world a world model was trained on: the folder its training_info.json names (when it still exists), else
    the cached default world."""
    import json

    from obliviate.world import ensure_world
    from obliviate.world.train import TRAINING_INFO

    hf_dir = getattr(handle, "hf_dir", None)
    info = Path(hf_dir) / TRAINING_INFO if hf_dir is not None else None
    if info is not None and info.is_file():
        world = Path(json.loads(info.read_text()).get("world_dir", ""))
        if (world / "facts.jsonl").is_file():
            return world
    return ensure_world()


def _subject_mentions(world: Path, seed: int, exclude: frozenset[str] = frozenset()) -> Iterator[str]:
    from obliviate.world.generate import load_world_facts

    names = sorted({r["requested_rewrite"]["subject"] for r in load_world_facts(world)} - exclude)
    if not names:  # every subject left out: nothing to mention (the filler still runs)
        return
    rng = random.Random(seed)
    while True:  # as many rounds over the names as the token budget asks for
        rng.shuffle(names)
        for start in range(0, len(names), 4):
            yield " ".join(rng.choice(SUBJECT_SENTENCES).format(name) for name in names[start:start + 4])


def _text_file(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    yield from (block.strip() for block in text.split("\n\n") if block.strip())


NAMED_CORPORA = ("auto", "world-filler", "world-mentions", "stdlib-docstrings", "place-mentions",
                 "stdlib-docstrings+place-mentions")
"""The corpora known by name (anything else must be a path to a text file)."""


def resolve_corpus(handle, corpus: str) -> str:
    """The concrete corpus name for 'auto'."""
    if corpus != "auto":
        return corpus
    return "world-filler" if is_world_model(handle) else "stdlib-docstrings"


def is_world_model(handle) -> bool:
    """A world model: an embedded name (world, world-retain, ...) or a folder `obliviate world train --out` wrote
    (it holds training_info.json). Such a model reads the world's language, and letter-by-letter docstrings would
    give it keys it never forms."""
    from obliviate.world.train import TRAINING_INFO

    hf_dir = getattr(handle, "hf_dir", None)
    return str(handle.name).startswith("world") or (hf_dir is not None and (Path(hf_dir) / TRAINING_INFO).is_file())


def _without_names(texts: Iterator[str], names: frozenset[str]) -> Iterator[str]:
    """The paragraphs of `texts` that name none of `names` as a whole word."""
    import re

    pattern = re.compile("|".join(rf"(?<!\w){re.escape(n)}(?!\w)" for n in sorted(names, key=len, reverse=True)))
    return (text for text in texts if not pattern.search(text))


def excluded_names(exclude_subjects: Sequence[str]) -> frozenset[str]:
    """The names `exclude_subjects` leaves out: distinct, blanks dropped (a blank would match every paragraph). The
    corpus, the cache key and the cache's metadata all read the exclusion through this."""
    return frozenset(n for n in exclude_subjects if n.strip())


def corpus_texts(handle, corpus: str, seed: int = 0, exclude_subjects: Sequence[str] = ()) -> Iterator[str]:
    """The texts of a corpus (see the module docstring), without any paragraph or mention of `exclude_subjects`."""
    corpus, exclude = resolve_corpus(handle, corpus), excluded_names(exclude_subjects)
    if corpus == "world-mentions":
        return _interleaved(_world_filler(), _subject_mentions(model_world(handle), seed, exclude))
    texts = _corpus_texts(corpus, seed)
    return _without_names(texts, exclude) if exclude else texts


def _corpus_texts(corpus: str, seed: int) -> Iterator[str]:
    if corpus == "world-filler":
        return _world_filler()
    if corpus == "stdlib-docstrings":
        return _stdlib_docstrings(seed)
    if corpus == "place-mentions":
        return _place_mentions(seed)
    if corpus == "stdlib-docstrings+place-mentions":
        return _interleaved(_stdlib_docstrings(seed), _place_mentions(seed))
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"covariance corpus {corpus!r}: not one of {', '.join(NAMED_CORPORA)} or an "
                                f"existing text file.")
    return _text_file(path)


def packed_rows(handle, texts: Iterator[str], seq_len: int) -> Iterator[list[int]]:
    """Token rows of exactly `seq_len` (BOS first when the model uses one): texts packed back to back with EOS
    between them, as pretraining packs documents."""
    tok = handle.tokenizer
    sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
    bos = [tok.bos_token_id] if handle.prepend_bos and tok.bos_token_id is not None else []
    width = seq_len - len(bos)
    buffer: list[int] = []
    for text in texts:
        buffer += tok(text, add_special_tokens=False)["input_ids"] + sep
        while len(buffer) >= width:
            yield bos + buffer[:width]
            buffer = buffer[width:]


def _feeds_keys(name: str, layer: int) -> bool:
    """Whether the weight `name` of a HookedTransformer reaches the keys at `layer` (the edited projection does not)."""
    parts = name.split(".")
    if parts[0] in ("unembed", "ln_final"):
        return False
    return not (parts[0] == "blocks" and (int(parts[1]) > layer or (int(parts[1]) == layer and parts[2] == "mlp"
                                                                    and parts[-1] in ("W_out", "b_out"))))


@dataclass(frozen=True)
class _HashStamp:
    """What a weight hash was taken of: the tensors themselves (weakly) and their in-place version counters."""

    tensors: tuple[weakref.ref, ...]
    versions: tuple[tuple[int, int], ...]
    digest: str

    def holds(self, tensors: Sequence[torch.Tensor]) -> bool:
        return len(tensors) == len(self.tensors) and all(ref() is t for ref, t in zip(self.tensors, tensors)) \
            and self.versions == _versions(tensors)


def _versions(tensors: Sequence[torch.Tensor]) -> tuple[tuple[int, int], ...]:
    return tuple((t._version, t.data_ptr()) for t in tensors)


_HASHES: dict[tuple[int, int], _HashStamp] = {}
"""key_weights_hash's last digest per (model, layer): an edit asks twice (C's cache, the word-key bank's), and
hashing the embedding costs 0.2 s on SmolLM2, 1 s on Gemma-3 (measured at stop 48)."""


def key_weights_hash(handle, layer: int) -> str:
    """sha256 of every weight the keys at `layer` depend on (and nothing downstream of them).

    Taken again only when one of those tensors changed: every in-place write (an applied delta, ``load_state_dict``,
    ``copy_``) bumps a tensor's version counter, a swapped ``.data`` moves its storage, and a replaced or freed
    tensor fails the identity check, so a memoised digest always describes the weights as they are now."""
    tl = handle.tl
    state = tl.state_dict()
    names = [name for name in sorted(state) if _feeds_keys(name, layer)]
    owned = dict(tl.named_parameters()) | dict(tl.named_buffers())
    memoable = all(name in owned for name in names)  # state_dict's tensors are fresh views: their ids say nothing
    tensors = [owned[name] if memoable else state[name] for name in names]
    key = (id(tl), layer)
    if memoable and key in _HASHES and _HASHES[key].holds(tensors):
        return _HASHES[key].digest
    digest = hashlib.sha256()
    for name, tensor in zip(names, tensors):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy())
    digest.update(edit_site(handle, layer).key_hook.encode())
    if memoable:
        _HASHES[key] = _HashStamp(tuple(weakref.ref(t) for t in tensors), _versions(tensors), digest.hexdigest())
    return digest.hexdigest()


def _cache_key(handle, layer: int, cfg: CovarianceConfig, weights: str) -> str:
    tok = handle.tokenizer
    ident = {"v": CACHE_VERSION, "weights": weights, "layer": layer, "corpus": resolve_corpus(handle, cfg.corpus),
             "n_tokens": cfg.n_tokens, "seq_len": _seq_len(handle, cfg), "seed": cfg.seed,
             "bos": bool(handle.prepend_bos), "vocab": len(tok), "tokenizer": type(tok).__name__}
    if excluded := excluded_names(cfg.exclude_subjects):  # absent otherwise: statistics cached before still hit
        ident["exclude_subjects"] = hashlib.sha256("\n".join(sorted(excluded)).encode()).hexdigest()
    corpus = Path(cfg.corpus).expanduser()
    if corpus.is_file():
        ident["corpus_sha"] = hashlib.sha256(corpus.read_bytes()).hexdigest()
    return hashlib.sha256(repr(sorted(ident.items())).encode()).hexdigest()


def _seq_len(handle, cfg: CovarianceConfig) -> int:
    return min(cfg.seq_len, int(handle.tl.cfg.n_ctx))


def cache_path(handle, layer: int, cfg: CovarianceConfig) -> Path:
    """Where C for (these weights, layer, corpus, sample count) is cached."""
    key = _cache_key(handle, layer, cfg, key_weights_hash(handle, layer))
    name = resolve_corpus(handle, cfg.corpus)
    name = name.replace("+", "_") if name in NAMED_CORPORA else "file"
    return cache_subdir("stats") / f"L{layer}_{name}_{cfg.n_tokens}_{key[:24]}.safetensors"


@torch.no_grad()
def compute_second_moments(handle, layers: Sequence[int], cfg: CovarianceConfig,
                           show_progress: bool = False) -> tuple[dict[int, torch.Tensor], int]:
    """E[k kᵀ] of the down-projection inputs at each layer over `cfg.n_tokens` corpus tokens (no cache)."""
    tl = handle.tl
    hooks = {layer: edit_site(handle, layer).key_hook for layer in layers}
    d_mlp = int(tl.cfg.d_mlp)
    sums = {layer: torch.zeros(d_mlp, d_mlp, dtype=torch.float64) for layer in layers}
    seq_len = _seq_len(handle, cfg)
    skip = 1 if handle.prepend_bos else 0  # the BOS position is not text
    rows = packed_rows(handle, corpus_texts(handle, cfg.corpus, cfg.seed, cfg.exclude_subjects), seq_len)
    count = 0
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.n_tokens, desc="key second moment", unit="tok")
    stop = max(layers) + 1
    while count < cfg.n_tokens:
        batch = []
        for row in rows:
            batch.append(row)
            if len(batch) == cfg.batch_size:
                break
        if not batch:
            break
        tokens = torch.tensor(batch, device=tl.cfg.device)
        _, cache = tl.run_with_cache(tokens, names_filter=list(hooks.values()), stop_at_layer=stop)
        take = min(cfg.n_tokens - count, tokens.shape[0] * (tokens.shape[1] - skip))
        for layer, hook in hooks.items():
            keys = cache[hook][:, skip:].reshape(-1, d_mlp)[:take].float()
            sums[layer] += (keys.T @ keys).double().cpu()
        count += take
        if bar is not None:
            bar.update(take)
    if bar is not None:
        bar.close()
    if count < cfg.n_tokens:
        raise ValueError(f"covariance corpus {resolve_corpus(handle, cfg.corpus)!r} has only {count} tokens; "
                         f"asked for {cfg.n_tokens}. Lower n_tokens or give a larger text file.")
    moments = {}
    for layer, total in sums.items():
        moment = total / count
        moments[layer] = ((moment + moment.T) / 2).float()
    return moments, count


def second_moments(handle, layers: Sequence[int], cfg: CovarianceConfig | None = None,
                   show_progress: bool = False) -> dict[int, Float[torch.Tensor, "d_mlp d_mlp"]]:
    """C = E[k kᵀ] (float32, symmetric PSD, no ridge) per layer: from the cache, else computed in one pass."""
    cfg = cfg or CovarianceConfig()
    out: dict[int, torch.Tensor] = {}
    paths = {layer: cache_path(handle, layer, cfg) for layer in layers}
    missing = []
    for layer in layers:
        cached = _read_cached(paths[layer]) if cfg.cache and paths[layer].is_file() else None
        if cached is not None:
            out[layer] = cached
        else:
            missing.append(layer)
    if missing:
        start = time.perf_counter()
        computed, count = compute_second_moments(handle, missing, cfg, show_progress=show_progress)
        seconds = time.perf_counter() - start
        for layer, moment in computed.items():
            out[layer] = moment
            if cfg.cache:
                meta = {k: str(v) for k, v in asdict(cfg).items() if k != "exclude_subjects"}
                meta["exclude_subjects"] = str(len(excluded_names(cfg.exclude_subjects)))  # the key hashes the names
                meta.update(model=str(handle.name), layer=str(layer), tokens=str(count),
                            corpus_resolved=resolve_corpus(handle, cfg.corpus), seconds=f"{seconds:.2f}")
                atomic_save_tensors(paths[layer], {"moment": moment}, meta)
                seal(paths[layer])
    return {layer: out[layer] for layer in layers}


def _read_cached(path: Path) -> torch.Tensor | None:
    """The cached moment, or None (it is then recomputed) when the file is corrupted or unreadable, saying so."""
    from safetensors import SafetensorError

    try:
        verify(path, rebuild="a recomputation (automatic)")
        return load_tensors(path)["moment"]
    except (CacheIntegrityError, SafetensorError, KeyError) as error:
        print(f"covariance: {path.name} is unusable ({type(error).__name__}: {error}); recomputing it")
        return None


def second_moment(handle, layer: int, cfg: CovarianceConfig | None = None,
                  show_progress: bool = False) -> Float[torch.Tensor, "d_mlp d_mlp"]:
    """C = E[k kᵀ] at one layer (see `second_moments`)."""
    return second_moments(handle, [layer], cfg, show_progress=show_progress)[layer]


class Solver(Protocol):
    """What ROME's u needs of C: (C + ridge)⁻¹ applied to a vector or to columns (`MetricSolver`, or C with
    preserved keys added, `edit.word_keys.PreservingSolver`)."""

    def solve(self, rhs: Float[torch.Tensor, "d *n"]) -> Float[torch.Tensor, "d *n"]: ...


@dataclass(frozen=True)
class MetricSolver:
    """Solves (C + ridge) x = b from one LU factorisation of the regularised C (float64)."""

    lu: Float[torch.Tensor, "d d"]
    pivots: torch.Tensor

    def solve(self, rhs: Float[torch.Tensor, "d *n"]) -> Float[torch.Tensor, "d *n"]:
        """(C + ridge)⁻¹ rhs, in float64; `rhs` is a vector or a matrix of columns."""
        column = rhs.double()[:, None] if rhs.dim() == 1 else rhs.double()
        out = torch.linalg.lu_solve(self.lu, self.pivots, column)
        return out[:, 0] if rhs.dim() == 1 else out


_SOLVERS: dict[tuple[str, float], MetricSolver] = {}
_MAX_SOLVERS = 4  # 4 × 1,536² float64 factors ≈ 75 MB on SmolLM2


def metric_solver(handle, layer: int, cfg: CovarianceConfig | None = None,
                  show_progress: bool = False) -> MetricSolver:
    """The solver for `regularised(second_moment(...), cfg.ridge)`, factorised once per process for each cached C
    (the reference ROME keeps C⁻¹ per layer in memory the same way, ``inv_mom2_cache``). The memo is keyed by the
    cache file's path, which hashes the weights the keys depend on, so an edited model never gets a stale factor."""
    cfg = cfg or CovarianceConfig()
    key = (str(cache_path(handle, layer, cfg)), cfg.ridge) if cfg.cache else None
    if key is not None and key in _SOLVERS and Path(key[0]).is_file():
        return _SOLVERS[key]
    moment = second_moment(handle, layer, cfg, show_progress=show_progress)
    solver = MetricSolver(*torch.linalg.lu_factor(regularised(moment, cfg.ridge)))
    if key is not None:
        while len(_SOLVERS) >= _MAX_SOLVERS:
            _SOLVERS.pop(next(iter(_SOLVERS)))
        _SOLVERS[key] = solver
    return solver


def regularised(moment: Float[torch.Tensor, "d d"], ridge: float) -> Float[torch.Tensor, "d d"]:
    """C + ridge · mean(diag C) · I, in float64 (the form the solves use)."""
    moment = moment.double()
    scale = moment.diagonal().mean().clamp(min=1e-12)
    return moment + ridge * scale * torch.eye(moment.shape[0], dtype=moment.dtype)
