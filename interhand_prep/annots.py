"""The get_annots stage: cameras, kept frames, MANO parameters and vertices of one sequence."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import dataset
from .dataset import InterHandDataset, probe_image
from .errors import InputError
from .fileio import sequence_lock
from .layout import SequenceLayout
from .mano import canonical_params, easymocap_params, mano_layer

HAND_TYPES = {"right": ("right",), "left": ("left",), "both": ("right", "left")}


def hands_of(hand_type: str) -> tuple[str, ...]:
    try:
        return HAND_TYPES[hand_type]
    except KeyError:
        raise InputError(f"unknown hand type {hand_type!r}; expected one of {', '.join(HAND_TYPES)}") from None


@dataclass
class SequenceSelector:
    """The options every stage shares: which sequence, where the data and the outputs are."""

    capture: int
    seq: str
    split: str = "train"
    basedir: Path = Path("data/InterHand2.6M_30fps")
    mano_dir: Path = Path("data/mano")
    hand_type: str = "right"
    out_root: Path | None = None
    overwrite: bool = False

    @property
    def hands(self) -> tuple[str, ...]:
        return hands_of(self.hand_type)

    @property
    def layout(self) -> SequenceLayout:
        return SequenceLayout.for_sequence(self.basedir, self.split, self.capture, self.seq, self.out_root)

    @property
    def name(self) -> str:
        return f"{self.split}/Capture{self.capture}/{self.seq}"


@dataclass
class AnnotsOptions:
    keep_landscape: bool = False
    keep_black_frames: bool = False
    cameras_csv: Path | None = None


@dataclass
class AnnotsResult:
    """What get_annots did, for the summary."""

    layout: SequenceLayout
    hands: tuple[str, ...]
    cameras: list[str] = field(default_factory=list)
    dropped_cameras: dict[str, str] = field(default_factory=dict)
    cameras_without_images: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    dropped_frames: dict[int, str] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        if self.skipped:
            return (f"{self.layout.root}: annotations already complete ({len(self.frames)} frames, "
                    f"{len(self.cameras)} cameras); skipped (pass --overwrite to redo)")
        lines = [f"{self.layout.root}",
                 f"  cameras: {len(self.cameras)} kept, {len(self.dropped_cameras)} dropped"
                 + "".join(f"\n    cam{c}: {r}" for c, r in sorted(self.dropped_cameras.items(), key=lambda x: int(x[0])))
                 + (f"\n    {len(self.cameras_without_images)} camera(s) of camera.json have no images here"
                    if self.cameras_without_images else ""),
                 f"  frames:  {len(self.frames)} kept, {len(self.dropped_frames)} dropped"]
        reasons = Counter(self.dropped_frames.values())
        for reason, count in sorted(reasons.items(), key=lambda x: -x[1]):
            frames = sorted(f for f, r in self.dropped_frames.items() if r == reason)
            lines.append(f"    {count:5d} x {reason}: frame{'s' if count > 1 else ''} {frame_ranges(frames)}")
        lines.append(f"  hands:   {', '.join(self.hands)};  {self.seconds:.2f} s")
        return "\n".join(lines)


def frame_ranges(frames: list[int]) -> str:
    """Sorted frame ids as compact ranges: [3, 4, 5, 9] -> '3-5, 9'."""
    parts, start = [], None
    for i, frame in enumerate(frames):
        if start is None:
            start = frame
        if i + 1 == len(frames) or frames[i + 1] != frame + 1:
            parts.append(str(start) if start == frame else f"{start}-{frame}")
            start = None
    return ", ".join(parts)


def _probe_cameras(images: dict[str, dict[int, str]], seq_dir: Path) -> dict[str, dataset.ImageProbe]:
    """One DCT-scaled decode per camera (a few more when its first images are black)."""
    probes = {}
    for cam, frames in images.items():
        ordered = sorted(frames)
        for frame in (ordered[0], ordered[len(ordered) // 2], ordered[-1]):
            probe = probe_image(seq_dir / f"cam{cam}" / frames[frame])
            if not probe.black:
                break
        probes[cam] = probe
    return probes


def _camera_flags(images, seq_dir: Path, cameras_csv: Path | None) -> dict[str, dataset.CameraFlags]:
    if cameras_csv is None:
        return {cam: dataset.CameraFlags(portrait=p.portrait, rgb=p.rgb or p.black)
                for cam, p in _probe_cameras(images, seq_dir).items()}
    table = dataset.read_camera_table(cameras_csv)
    missing = [cam for cam in images if cam not in table]
    if missing:
        raise InputError(f"{cameras_csv}: no row for camera(s) {', '.join(missing)}")
    return {cam: table[cam] for cam in images}


def select_frames(images: dict[str, dict[int, str]], cameras: list[str], mano, hands: tuple[str, ...],
                  ) -> tuple[list[int], dict[int, str]]:
    """Frames present in every kept camera and with MANO for every requested hand.

    mano : CaptureMano. Returns the candidates (sorted) and {dropped frame: reason}.
    """
    dropped = {}
    all_frames = sorted(set().union(*(images[c].keys() for c in cameras)))
    in_all = []
    for frame in all_frames:
        lacking = [c for c in cameras if frame not in images[c]]
        if lacking:
            dropped[frame] = f"image missing in cam{lacking[0]}" + (f" and {len(lacking) - 1} more" if len(lacking) > 1 else "")
        else:
            in_all.append(frame)
    has = {hand: mano.has(in_all, hand) for hand in hands}
    kept = []
    for k, frame in enumerate(in_all):
        no_mano = [h for h in hands if not has[h][k]]
        if no_mano:
            dropped[frame] = f"no MANO for the {' and '.join(no_mano)} hand"
        else:
            kept.append(frame)
    return kept, dropped


def run(sel: SequenceSelector, opts: AnnotsOptions | None = None, progress: bool = True) -> AnnotsResult:
    """Run get_annots for one sequence; see README for the outputs."""
    InterHandDataset(sel.basedir, sel.split).sequence_dir(sel.capture, sel.seq)  # a clear error first
    with sequence_lock(sel.layout.root):
        return _run(sel, opts, progress)


def _run(sel: SequenceSelector, opts: AnnotsOptions | None, progress: bool) -> AnnotsResult:
    opts = opts or AnnotsOptions()
    start = time.perf_counter()
    hands = sel.hands
    ds = InterHandDataset(sel.basedir, sel.split)
    seq_dir = ds.sequence_dir(sel.capture, sel.seq)
    layout = sel.layout
    result = AnnotsResult(layout=layout, hands=hands)
    if layout.annots.is_file() and not sel.overwrite:
        result.skipped = True
        result.cameras, result.frames = layout.read_cams(), layout.read_frames()
        return result

    for hand in hands:  # fail before any image work if a model is missing or wrong
        mano_layer(sel.mano_dir, hand)
    images = ds.sequence_images(sel.capture, sel.seq)
    all_cameras = ds.capture_cameras(sel.capture)
    no_params = [cam for cam in images if cam not in all_cameras.ids]
    if no_params:
        raise InputError(f"{ds.files.camera}: no parameters for camera(s) {', '.join('cam' + c for c in no_params)} "
                         f"of {seq_dir}")
    result.cameras_without_images = [c for c in all_cameras.ids if c not in images]
    flags = _camera_flags(images, seq_dir, opts.cameras_csv)
    kept_cams = []
    for cam in sorted(images, key=int):
        if not flags[cam].portrait and not opts.keep_landscape:
            result.dropped_cameras[cam] = "landscape (pass --keep-landscape to keep)"
        else:
            kept_cams.append(cam)
    if not kept_cams:
        raise InputError(f"{seq_dir}: no camera left after filtering ({len(result.dropped_cameras)} landscape)")

    mano = ds.capture_mano(sel.capture)
    frames, dropped = select_frames(images, kept_cams, mano, hands)
    if not opts.keep_black_frames and frames:
        rgb_cams = [c for c in kept_cams if flags[c].rgb]
        pairs = [(f, c) for f in frames for c in rgb_cams]
        black = dataset.black_images(seq_dir / f"cam{c}" / images[c][f] for f, c in pairs)
        black_frames = {}
        for (f, c), is_black in zip(pairs, black):
            if is_black:
                black_frames.setdefault(f, c)
        for f, c in black_frames.items():
            dropped[f] = f"all black in an RGB camera (first: cam{c})"
        frames = [f for f in frames if f not in black_frames]
    result.dropped_frames = dict(sorted(dropped.items()))
    if not frames:
        reasons = Counter(dropped.values()).most_common(3)
        raise InputError(f"{seq_dir}: no frame left for the {'+'.join(hands)} hand(s); dropped "
                         + "; ".join(f"{n} x {r}" for r, n in reasons))

    _write_outputs(sel, layout, all_cameras.subset(kept_cams), frames, mano, images, progress)
    result.cameras, result.frames = kept_cams, frames
    result.seconds = time.perf_counter() - start
    return result


def _write_outputs(sel: SequenceSelector, layout: SequenceLayout, cameras, frames: list[int], mano,
                   images: dict, progress: bool) -> None:
    from tqdm import tqdm

    # every hand's entries are checked and posed before anything is written
    posed = {}
    for hand in sel.hands:
        pose, shape, trans = mano.arrays(frames, hand)
        layer = mano_layer(sel.mano_dir, hand)
        posed[hand] = (pose, shape, trans, layer, layer(pose, shape, trans))
    for hand, (pose, shape, trans, layer, out) in posed.items():
        params = easymocap_params(pose, shape, trans, out.joints[:, 0], layer.model.hands_mean)
        bar = tqdm(frames, desc=f"{sel.seq} {hand} params+vertices", unit="frame", disable=not progress, leave=False)
        for i, frame in enumerate(bar):
            layout.write_params(layout.params(hand, frame), {k: v[i] for k, v in params.items()})
            layout.write_vertices(layout.vertices(hand, frame), out.vertices[i])
        layout.write_params(layout.tpose_params(hand), canonical_params(layer.model.hands_mean, shape[0], out.joints[0, 0]))
    if sel.out_root is not None:
        _link_cameras(layout, sel, images)
    layout.write_ids(layout.cams_txt, cameras.ids)
    layout.write_ids(layout.frames_txt, frames)
    layout.write_annots(cameras, frames)  # last: its presence marks the stage complete


def _link_cameras(layout: SequenceLayout, sel: SequenceSelector, images: dict) -> None:
    """cam<id> symbolic links (relative) from the output folder to the image folders."""
    source_dir = dataset.InterHandDataset(sel.basedir, sel.split).sequence_dir(sel.capture, sel.seq)
    layout.root.mkdir(parents=True, exist_ok=True)
    for cam in images:
        link = layout.camera_dir(cam)
        target = Path(os.path.relpath((source_dir / f"cam{cam}").resolve(), layout.root.resolve()))
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            if not link.is_symlink():
                raise InputError(f"{link}: exists and is not a link to the images; remove it or pick another --out-root")
            link.unlink()
        tmp = link.with_name(f".{link.name}.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
