"""The provenance manifest of a processed sequence (prep.json), and the staleness rule.

Each stage records what it did: its recipe (the options that change its outputs, the identity of
every input it read: MANO files by SHA-256, annotation files by size and modification time, the
image folders by a digest of their listing, per-frame digests of the files later stages consume),
plus paths, counts and times. A stage is stale when the recipe it would run with differs from the
recorded one, and the difference is what the log names. Reading never fails: a missing,
unreadable, older-format or hand-edited manifest is reported and makes every stage stale.

Layout of prep.json:
    {"format": "interhand-prep manifest", "version": 1, "package_version": "...",
     "stages": {"get_annots": {...}, "prepare_blend_weights": {...}, "render_mesh": {...}},
     "checksum": sha256 of the rest (catches hand edits)}
and each stage record:
    {"recipe": {...compared...}, "inputs": {...paths and sizes, for people and check_seq...},
     "result": {...counts...}, "started": "...", "finished": "...", "seconds": 1.2}
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from .fileio import write_text
from .layout import MANIFEST_NAME

FORMAT = "interhand-prep manifest"
FORMAT_VERSION = 1


def _checksum(data: dict) -> str:
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Manifest:
    """The manifest of one sequence folder; `problem` says why an existing file was not used."""

    path: Path
    stages: dict[str, dict] = field(default_factory=dict)
    problem: str | None = None

    @classmethod
    def read(cls, root: str | Path) -> "Manifest":
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            return cls(path, problem="no manifest" if not path.exists() else "manifest is not a file")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return cls(path, problem=f"unreadable manifest ({type(exc).__name__})")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return cls(path, problem="not a manifest of this tool")
        if data.get("version") != FORMAT_VERSION:
            return cls(path, problem=f"manifest format version {data.get('version')!r}, expected {FORMAT_VERSION}")
        if data.get("checksum") != _checksum(data):
            return cls(path, problem="manifest was edited by hand (checksum mismatch)")
        stages = data.get("stages")
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            return cls(path, problem="manifest has no stage records")
        return cls(path, stages=stages)

    def stage(self, name: str) -> dict | None:
        return self.stages.get(name)

    def recipe(self, name: str) -> dict | None:
        record = self.stages.get(name)
        return record.get("recipe") if isinstance(record, dict) else None

    def record(self, name: str, record: dict) -> None:
        """Store a stage's record and write the manifest atomically."""
        self.stages[name] = record
        self._write()

    def _write(self) -> None:
        data = {"format": FORMAT, "version": FORMAT_VERSION, "package_version": __version__,
                "stages": self.stages}  # in the order the stages first ran here
        data["checksum"] = _checksum(data)
        write_text(self.path, json.dumps(data, indent=1) + "\n")
        self.problem = None

    def stale_reason(self, stage: str, recipe: dict) -> str | None:
        """Why `stage` must run given (the compared keys of) the recipe it would run with, or None
        when they match the recorded ones."""
        if self.problem:
            return self.problem
        old = self.recipe(stage)
        if not isinstance(old, dict):
            return f"{stage} has not run here before"
        diff = changes({k: old.get(k) for k in recipe}, recipe)  # the keys the caller compares
        return "changed: " + "; ".join(diff) if diff else None


def stage_record(recipe: dict, inputs: dict, result: dict, started: float) -> dict:
    finished = time.time()
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))
    return {"recipe": recipe, "inputs": inputs, "result": result, "started": stamp(started),
            "finished": stamp(finished), "seconds": round(finished - started, 3)}


def changes(old: Any, new: Any, prefix: str = "", limit: int = 3) -> list[str]:
    """What differs between two recipes, as short phrases ('option voxel_size: 0.025 -> 0.05')."""
    out: list[str] = []
    _diff(old, new, prefix, out)
    if len(out) > limit:
        out = out[:limit] + [f"and {len(out) - limit} more"]
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:18] + "..." + text[-18:]


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in new:
                out.append(f"{name} removed")
            elif key not in old:
                out.append(f"{name} added")
            else:
                _diff(old[key], new[key], name, out)
    elif old != new:
        out.append(f"{prefix}: {_short(old)} -> {_short(new)}")


def digest(*parts: bytes) -> str:
    """A short content digest (16 hex digits of SHA-1) of byte strings."""
    h = hashlib.sha1()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def file_digest(*paths: Path) -> str | None:
    """digest() of the files' bytes, or None if one is missing or unreadable."""
    try:
        return digest(*(Path(p).read_bytes() for p in paths))
    except OSError:
        return None


def file_identity(path: Path) -> dict:
    """Path, size and modification time of an input file (what annotation files are tracked by);
    size and time are None when it is missing (the stage then fails with its own clear message)."""
    try:
        stat = Path(path).stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size = mtime = None
    return {"path": str(Path(path).resolve()), "size": size, "mtime_ns": mtime}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
