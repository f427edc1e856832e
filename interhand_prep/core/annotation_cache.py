"""Per-capture binary caches of the split-level annotation JSON files.

The 30 fps annotation files are huge (a MANO_NeuralAnnot of ~1.3 million frames, gigabytes of
text). Each is parsed at most once per split: streamed with ijson's C backend (one capture in
memory at a time) into one small .npz per capture, keyed by the source file's size and
modification time, and rebuilt when the source changes. Concurrent processes (process.sh --jobs)
build under a file lock, so the first builds and the others wait, then load.

Cache folder: <annotations>/<split>/.interhand_prep_cache/, or, when that is not writable,
$XDG_CACHE_HOME/interhand_prep/<hash of the annotation folder>/.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import HANDS, JOINTS_PER_HAND
from .errors import InputError
from .fileio import atomic_path, write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MANO_FIELDS = {"pose": 48, "shape": 10, "trans": 3}
MANO_WIDTH = sum(MANO_FIELDS.values())
# status of a hand's entry in a frame
NULL, OK, MALFORMED = 0, 1, 2
builds = 0  # caches built by this process (tests check that concurrent runs build once)


def cache_dir(source: Path) -> Path:
    """Where the caches of the annotation files in `source`'s folder live."""
    preferred = source.parent / ".interhand_prep_cache"
    try:
        preferred.mkdir(exist_ok=True)
        probe = preferred / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return preferred
    except OSError:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "interhand_prep"
        digest = hashlib.sha1(str(source.parent.resolve()).encode()).hexdigest()[:16]
        folder = base / digest
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def source_key(source: Path) -> dict:
    stat = source.stat()
    return {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": CACHE_VERSION}


@contextlib.contextmanager
def _locked(folder: Path, name: str):
    with open(folder / f".{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process builds it: say so, and how long the wait was
            start = time.perf_counter()
            log.info("annotation cache %s: waiting for another process building it in %s", name, folder)
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the process ends, whatever happens
            log.info("annotation cache %s: waited %.1f s", name, time.perf_counter() - start)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _meta_path(folder: Path, kind: str) -> Path:
    return folder / f"{kind}.meta.json"


def _is_current(folder: Path, kind: str, source: Path) -> bool:
    meta = _meta_path(folder, kind)
    if not meta.is_file():
        return False
    try:
        stored = json.loads(meta.read_text())
    except ValueError:
        return False
    return {k: stored.get(k) for k in ("source", "size", "mtime_ns", "version")} == source_key(source)


def _stream_captures(source: Path):
    """Yield (capture key, capture record) of a {capture: {...}} JSON file, one capture in memory."""
    import ijson

    try:
        backend = ijson.get_backend("yajl2_c")
    except ImportError:  # pragma: no cover - the pinned wheels ship the C backend
        backend = ijson
    with open(source, "rb") as f:
        try:
            yield from backend.kvitems(f, "", use_float=True)
        except (ijson.JSONError, ijson.IncompleteJSONError, ValueError) as exc:
            # yajl's message shows the offending text and points at it; keep it, on one line
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"{source}: not valid JSON ({detail})") from None


def _ensure(source: Path, kind: str, build_one, stream=None) -> Path:
    """Build the per-capture caches of `source` if missing or stale; -> the cache folder.
    `stream(source)` yields (capture key, capture record); default: a {capture: {...}} file."""
    if not source.is_file():
        raise InputError(f"{source}: annotation file not found")
    folder = cache_dir(source)
    if _is_current(folder, kind, source):
        return folder
    with _locked(folder, kind):
        if _is_current(folder, kind, source):  # built by another process while we waited
            return folder
        global builds
        builds += 1
        start = time.perf_counter()
        log.info("annotation cache %s: building from %s into %s (once per annotation file)", kind, source, folder)
        _meta_path(folder, kind).unlink(missing_ok=True)
        captures = []
        for capture, record in (stream or _stream_captures)(source):
            if stream is None and not isinstance(record, dict):
                raise InputError(f"{source}: capture {capture} is not an object")
            with atomic_path(folder / f"{kind}_{capture}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **build_one(source, capture, record))
            captures.append(str(capture))
        write_text(_meta_path(folder, kind), json.dumps({**source_key(source), "captures": captures}))
        log.info("annotation cache %s: built in %.1f s (%d captures)", kind, time.perf_counter() - start, len(captures))
    return folder


def _load(source: Path, kind: str, capture: int, build_one, what: str, stream=None) -> dict[str, np.ndarray]:
    folder = _ensure(source, kind, build_one, stream)
    captures = json.loads(_meta_path(folder, kind).read_text())["captures"]
    if str(capture) not in captures:
        raise InputError(f"{source}: no {what} for capture {capture} (it has {', '.join(captures) or 'none'})")
    with np.load(folder / f"{kind}_{capture}.npz") as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------------------------------------
# MANO_NeuralAnnot


def frame_rows(table_frames: np.ndarray, frames) -> np.ndarray:
    """Row of each of `frames` in the sorted `table_frames`, -1 where absent."""
    index = np.searchsorted(table_frames, frames)
    index = np.clip(index, 0, max(len(table_frames) - 1, 0))
    found = (len(table_frames) > 0) & (table_frames[index] == np.asarray(frames))
    return np.where(found, index, -1)


@dataclass
class CaptureMano:
    """The MANO parameters of one capture.

    frames : N int64 (sorted), params[hand] : Nx61 float64 (pose 48, shape 10, trans 3; metres),
    status[hand] : N uint8 (NULL, OK, MALFORMED), problems : {"<frame> <hand>": reason}.
    """

    source: str
    frames: np.ndarray
    params: dict[str, np.ndarray]
    status: dict[str, np.ndarray]
    problems: dict[str, str]

    def rows(self, frames) -> np.ndarray:
        return frame_rows(self.frames, frames)

    def has(self, frames, hand: str) -> np.ndarray:
        """Whether each frame has a (non-null) entry for `hand` (malformed ones count: they fail loudly later)."""
        rows = self.rows(frames)
        return (rows >= 0) & (self.status[hand][np.maximum(rows, 0)] != NULL)

    def arrays(self, frames: list[int], hand: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pose Nx48, shape Nx10, trans Nx3 of `frames`, with a clear error for a bad entry."""
        rows = self.rows(frames)
        for frame, row in zip(frames, rows):
            if row < 0 or self.status[hand][row] == NULL:
                raise InputError(f"{self.source}: frame {frame} has no MANO parameters for the {hand} hand")
            if self.status[hand][row] == MALFORMED:
                raise InputError(f"{self.source}: frame {frame} {hand} hand: {self.problems[f'{frame} {hand}']}")
        values = self.params[hand][rows]
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            frame = frames[int(np.argmax(bad))]
            raise InputError(f"{self.source}: frame {frame} {hand} hand: parameters contain NaN or infinity")
        return values[:, :48], values[:, 48:58], values[:, 58:]


def _mano_capture(source: Path, capture: str, record: dict) -> dict[str, np.ndarray]:
    frames = np.array(sorted(int(f) for f in record), dtype=np.int64)
    out: dict[str, np.ndarray] = {"frames": frames}
    problems = {}
    for hand in HANDS:
        params = np.full((len(frames), MANO_WIDTH), np.nan)
        status = np.zeros(len(frames), np.uint8)
        for row, frame in enumerate(frames):
            entry = record[str(frame)]
            value = entry.get(hand) if isinstance(entry, dict) else None
            if not value:
                continue
            try:
                parts = [np.asarray(value[key], dtype=np.float64).ravel() for key in MANO_FIELDS]
            except (KeyError, TypeError, ValueError) as exc:
                status[row], problems[f"{frame} {hand}"] = MALFORMED, f"missing or non-numeric field ({exc})"
                continue
            wrong = [f"'{k}' has {p.size} values, expected {n}" for (k, n), p in zip(MANO_FIELDS.items(), parts) if p.size != n]
            if wrong:
                status[row], problems[f"{frame} {hand}"] = MALFORMED, wrong[0]
                continue
            params[row] = np.concatenate(parts)
            status[row] = OK
        out[f"{hand}_params"], out[f"{hand}_status"] = params, status
    out["problems"] = np.array(json.dumps(problems))
    return out


def load_capture_mano(source: Path, capture: int) -> CaptureMano:
    data = _load(Path(source), "mano", capture, _mano_capture, "MANO parameters")
    return CaptureMano(source=str(source), frames=data["frames"],
                       params={h: data[f"{h}_params"] for h in HANDS}, status={h: data[f"{h}_status"] for h in HANDS},
                       problems=json.loads(str(data["problems"])))


# ---------------------------------------------------------------------------------------------
# joint_3d.json

HAND_JOINTS = {"right": slice(0, 21), "left": slice(21, 42)}  # rows of world_coord / joint_valid


@dataclass
class CaptureJoints:
    """The annotated 3D joints of one capture (InterHand2.6M_<split>_joint_3d.json).

    frames : N int64 (sorted), world : Nx42x3 float64 (world millimetres; right hand rows 0-20,
    left 21-41), valid : Nx42 bool, status : N uint8 (OK or MALFORMED), problems : {frame: reason}.
    """

    source: str
    frames: np.ndarray
    world: np.ndarray
    valid: np.ndarray
    status: np.ndarray
    problems: dict[str, str]

    def arrays(self, frames: list[int], hand: str) -> tuple[np.ndarray, np.ndarray]:
        """world Fx21x3 (mm) and valid Fx21 of one hand; a frame absent from the file has no valid joint.
        A malformed entry of a requested frame is a one-line error naming the file."""
        rows = frame_rows(self.frames, frames)
        for frame, row in zip(frames, rows):
            if row >= 0 and self.status[row] == MALFORMED:
                raise InputError(f"{self.source}: frame {frame}: {self.problems[str(frame)]}")
        world = np.full((len(frames), JOINTS_PER_HAND, 3), np.nan)
        valid = np.zeros((len(frames), JOINTS_PER_HAND), bool)
        present = rows >= 0
        world[present] = self.world[rows[present], HAND_JOINTS[hand]]
        valid[present] = self.valid[rows[present], HAND_JOINTS[hand]]
        return world, valid & np.isfinite(world).all(axis=2)


def _joints_capture(source: Path, capture: str, record: dict) -> dict[str, np.ndarray]:
    frames = np.array(sorted(int(f) for f in record), dtype=np.int64)
    world = np.full((len(frames), 42, 3), np.nan)
    valid = np.zeros((len(frames), 42), bool)
    status = np.full(len(frames), OK, np.uint8)
    problems = {}
    for row, frame in enumerate(frames):
        entry = record[str(frame)]
        try:
            coords = np.asarray(entry["world_coord"], dtype=np.float64)
            flags = np.asarray(entry["joint_valid"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            status[row], problems[str(frame)] = MALFORMED, f"joint entry without numeric world_coord and joint_valid ({exc})"
            continue
        if coords.shape != (42, 3) or flags.shape not in ((42,), (42, 1)):  # joint_valid comes both ways
            status[row], problems[str(frame)] = MALFORMED, (f"world_coord has shape {coords.shape} and joint_valid "
                                                            f"{flags.shape}, expected (42, 3) and (42,) or (42, 1)")
            continue
        world[row], valid[row] = coords, flags.reshape(42) > 0
    return {"frames": frames, "world": world, "valid": valid, "status": status, "problems": np.array(json.dumps(problems))}


def load_capture_joints(source: Path, capture: int) -> CaptureJoints:
    data = _load(Path(source), "joints", capture, _joints_capture, "joint annotations")
    return CaptureJoints(source=str(source), frames=data["frames"], world=data["world"], valid=data["valid"],
                         status=data["status"], problems=json.loads(str(data["problems"])))


# ---------------------------------------------------------------------------------------------
# camera.json


def _camera_capture(source: Path, capture: str, record: dict) -> dict[str, np.ndarray]:
    try:
        ids = sorted(record["campos"], key=int)
        return {"ids": np.array(ids), **{key: np.array([record[key][i] for i in ids], dtype=np.float64)
                                           for key in ("campos", "camrot", "focal", "princpt")}}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: malformed camera record of capture {capture} ({exc})") from None


def load_capture_cameras(source: Path, capture: int) -> dict:
    """{"campos": {id: [3]}, "camrot": {id: 3x3}, "focal": {id: [2]}, "princpt": {id: [2]}} of one capture."""
    data = _load(Path(source), "camera", capture, _camera_capture, "cameras")
    ids = [str(i) for i in data["ids"]]
    return {key: {i: data[key][k] for k, i in enumerate(ids)} for key in ("campos", "camrot", "focal", "princpt")}


# ---------------------------------------------------------------------------------------------
# *_data.json (COCO): the annotated hand box of every image


def _stream_image_boxes(source: Path):
    """Yield (capture key, rows (seq, camera, frame, bbox or None)) of a COCO data.json: its
    images, then its annotations, streamed (the file is several GB for a real split)."""
    import ijson

    try:
        backend = ijson.get_backend("yajl2_c")
    except ImportError:  # pragma: no cover - the pinned wheels ship the C backend
        backend = ijson
    images: dict[int, tuple[int, str, str, int]] = {}
    boxes: dict[int, list] = {}
    try:
        with open(source, "rb") as f:
            for image in backend.items(f, "images.item", use_float=True):
                images[int(image["id"])] = (int(image["capture"]), str(image["seq_name"]), str(image["camera"]),
                                            int(image["frame_idx"]))
        with open(source, "rb") as f:
            for annotation in backend.items(f, "annotations.item", use_float=True):
                boxes[int(annotation["image_id"])] = annotation.get("bbox")
    except (ijson.JSONError, ijson.IncompleteJSONError, ValueError) as exc:
        raise InputError(f"{source}: not valid JSON ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    except (KeyError, TypeError) as exc:
        raise InputError(f"{source}: an image entry lacks id, capture, seq_name, camera or frame_idx ({exc})") from None
    per_capture: dict[int, list] = {}
    for image_id, (capture, seq, cam, frame) in images.items():
        per_capture.setdefault(capture, []).append((seq, cam, frame, boxes.get(image_id)))
    for capture in sorted(per_capture):
        yield str(capture), per_capture[capture]


def _boxes_capture(source: Path, capture: str, rows: list) -> dict[str, np.ndarray]:
    seqs = sorted({seq for seq, _, _, _ in rows})
    index = {seq: k for k, seq in enumerate(seqs)}
    bbox = np.full((len(rows), 4), np.nan)
    for k, (_, _, _, box) in enumerate(rows):
        try:
            if box is not None and len(box) == 4:
                bbox[k] = np.asarray(box, dtype=np.float64)
        except (TypeError, ValueError):
            pass  # not a box: NaN, "not annotated"
    return {"seqs": np.array(seqs, dtype=str), "seq": np.array([index[r[0]] for r in rows], dtype=np.int64),
            "camera": np.array([int(r[1]) for r in rows], dtype=np.int64),
            "frame": np.array([r[2] for r in rows], dtype=np.int64), "bbox": bbox}


@dataclass
class CaptureBoxes:
    """The annotated box (x, y, w, h, pixels) of each image of a capture, from data.json."""

    seqs: np.ndarray
    seq: np.ndarray
    camera: np.ndarray
    frame: np.ndarray
    bbox: np.ndarray

    def box(self, seq: str, cam: str, frame: int) -> np.ndarray | None:
        """x, y, w, h of the image's annotated box, or None where it has none (or no positive area)."""
        found = np.flatnonzero(self.seqs == seq)
        if not len(found):
            return None
        rows = np.flatnonzero((self.seq == found[0]) & (self.camera == int(cam)) & (self.frame == int(frame)))
        if not len(rows):
            return None
        box = self.bbox[rows[0]]
        return box.copy() if np.isfinite(box).all() and box[2] > 0 and box[3] > 0 else None


def load_capture_boxes(source: Path, capture: int) -> CaptureBoxes:
    data = _load(Path(source), "boxes", capture, _boxes_capture, "images", stream=_stream_image_boxes)
    return CaptureBoxes(seqs=data["seqs"], seq=data["seq"], camera=data["camera"], frame=data["frame"],
                        bbox=data["bbox"])
