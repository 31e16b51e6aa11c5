"""One run folder and one results schema for every stage.

A run folder holds, per stage, ``<stage>.json`` (the stage record below) and ``<stage>/`` (its artefacts:
safetensors tensors, PNG plots, JSON side files). The record carries the config, package versions, seeds,
timings, metrics and the artefact list, so a result can be reproduced and compared without the code that made it.

Every write is atomic: the bytes go to a temporary file in the same folder, are flushed, then renamed over the
target, so a crash never leaves a half-written result that a re-run would mistake for a finished stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import secrets
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from obliviate.errors import MissingInputError, UserError

SCHEMA_VERSION = 1
TRACKED_PACKAGES = ("obliviate", "torch", "transformers", "transformer-lens", "sae-lens", "nnsight",
                    "concept-erasure", "datasets", "scikit-learn", "numpy", "safetensors")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename in the same folder.

    The temp file is created with mode 0666 filtered by the user's umask, as `open()` would create it
    (tempfile.mkstemp makes 0600, which would leave results and the shared cache unreadable to others).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    handle = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tensors, numpy values, paths and tuples → plain JSON values (NaN/inf → None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(payload), indent=2, sort_keys=False) + "\n")


def atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (never pickles), with the same bytes for the same input."""
    from safetensors.torch import save

    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, _sorted_metadata(save(contiguous, metadata=dict(metadata or {}))))


def _sorted_metadata(blob: bytes) -> bytes:
    """Rewrite a safetensors header with its metadata keys sorted.

    safetensors serialises metadata from a Rust HashMap, so its key order (and the file's bytes) change from one
    save to the next although the tensors are equal. Offsets count from the end of the header, so only the header
    (padded with spaces to 8 bytes, as safetensors pads it) is rewritten.
    """
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + size])
    metadata = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + size:]


def atomic_save_figure(figure: Any, path: Path, **savefig: Any) -> Path:
    """Save a matplotlib figure as PNG through the atomic writer (a crash never leaves half a figure)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, plus Python and platform."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class StageRecord:
    """What one stage wrote: the single results schema shared by locate, edit and audit."""

    stage: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    """Stage-level figures (e.g. mean recall); per-target details go in `targets`."""
    targets: list[dict[str, Any]] = field(default_factory=list)
    """One entry per target fact / secret, keyed by case_id or key_id."""
    artefacts: list[str] = field(default_factory=list)
    """Paths relative to the run folder."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds per named step."""
    seeds: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    inputs: dict[str, Any] = field(default_factory=dict)
    """What the result depends on (see `stage_inputs`); a re-run whose inputs differ re-runs the stage."""
    schema_version: int = SCHEMA_VERSION
    finished_at: str = ""


# settings that change how a run looks, never what it computes: a change to them re-runs nothing
COSMETIC_KEYS = ("show_progress",)


def stage_inputs(config: Any, **sections: Any) -> dict[str, Any]:
    """A stage's inputs: the run-wide fields of `config` (a RunConfig) plus the named sections, as plain JSON.

    A downstream stage passes the inputs of the record it reads (e.g. edit passes locate's), so a change upstream
    re-runs every stage after it.
    """
    shared = {name: getattr(config, name) for name in ("model", "facts", "split", "limit", "seed", "device")}
    return _plain({**shared, **sections})


def _plain(value: Any) -> Any:
    """JSON-normal form (tuples → lists, as a record read back has them) without the cosmetic keys."""
    value = to_jsonable(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in COSMETIC_KEYS}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Dotted paths where two inputs differ, as 'path: old → new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    if old == new:
        return []
    return [f"{where or 'inputs'}: {json.dumps(old)} → {json.dumps(new)}"]


class RunLockedError(UserError, RuntimeError):
    """Another live process is writing this run folder."""


LOCK_FILE = ".lock"


class RunDir:
    """A run folder: the config beside the results, one record per stage, skip-if-done unless forced."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def record_path(self, stage: str) -> Path:
        return self.root / f"{stage}.json"

    def artefact_dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_done(self, stage: str) -> bool:
        path = self.record_path(stage)
        if not path.is_file():
            return False
        try:
            return bool(json.loads(path.read_text()).get("finished_at"))
        except json.JSONDecodeError:
            return False

    def should_skip(self, stage: str, inputs: dict[str, Any], *, force: bool = False) -> bool:
        """True when `stage` finished with these inputs; says why it runs again when its inputs changed."""
        if force or not self.is_done(stage):
            return False
        stored = self.read(stage).get("inputs")
        if stored == inputs:
            print(f"{stage}: already finished in {self.root} (use --force to re-run)")
            return True
        changes = _differences(stored, inputs) if stored else ["its record predates input tracking"]
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        print(f"{stage}: the config changed since it finished ({shown}); re-running it")
        return False

    def inputs(self, stage: str) -> dict[str, Any] | None:
        """The inputs a finished stage ran with (None when it has not finished)."""
        return self.read(stage).get("inputs") if self.is_done(stage) else None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one run: a second run refuses, naming the pid that holds it.

        The lock is an flock on ``.lock``, which holds the owner's pid. The kernel drops an flock when its process
        dies, so the lock of a killed run (kill -9 included) is taken over by the next run, which says so; a pid
        left in the file is only ever read for messages, never trusted.
        """
        import fcntl

        handle = open(self.root / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(f"run folder {self.root} is in use by pid {holder}; wait for that run to end or "
                                 f"stop it, or give another --out.") from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            print(f"run folder {self.root}: taking over the lock of pid {previous}, which is no longer running")
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # an empty file: the run ended normally, nothing to take over
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def write_config(self, config: Any) -> None:
        atomic_write_json(self.root / "config.json", {"config": config, "versions": package_versions()})

    def write(self, record: StageRecord) -> Path:
        record.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        path = self.record_path(record.stage)
        atomic_write_json(path, record)
        return path

    def read(self, stage: str) -> dict[str, Any]:
        path = self.record_path(stage)
        if not path.is_file():
            raise MissingInputError(f"run {self.root}: no {stage}.json yet; run `obliviate {stage}` first.")
        return json.loads(path.read_text())

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to timings[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
