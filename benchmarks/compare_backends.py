#!/usr/bin/env python
"""How far OSMesa's and EGL's masks and depth maps of one sequence differ (a report, not a test).

    python benchmarks/compare_backends.py [--seq 0266_dh_pray] [--capture 0] [--split train]
        [--basedir data/InterHand2.6M_30fps] [--mano-dir data/mano] [--hand-type right]
        [--all-cameras] [--osmesa-whole] [--views] [--keep DIR]

Renders the sequence (default: the demo's two-hand sequence) with render_mesh on OSMesa (which
draws a crop around the hands) and on EGL (whole images), each in a subprocess of its own (a
process fixes its OpenGL platform at the first pyrender import) into a temporary --out-root, and
prints per view that differs and in total: mask pixels that differ, whether they are all edge
pixels (within 1 px of a label boundary: some 8-neighbour has another label in the same mask),
label swaps (100 <-> 200) against outline changes (0 <-> a hand), and the largest depth difference
where both cover a pixel. --osmesa-whole also renders OSMesa without crops (HandViewRenderer with
`crops = False`, in a third subprocess, both hands from get_annots' vertices) and compares it with
both, which separates the crop's share of the differences from the backend's. The outputs go to a
temporary folder (--keep DIR to keep them); as with any run, get_annots may create its annotation
cache beside the annotation files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from interhand_prep.core.layout import SequenceLayout  # noqa: E402

JUMP_M = 0.002  # a depth step larger than this between neighbours is a discontinuity (an occluding edge)

# A child renders on one platform: get_annots and render_mesh into an --out-root, or (whole) the
# views of that folder with HandViewRenderer and crops off, saved as one npz.
CHILD = r"""
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
from interhand_prep.core import gl_platform
gl_platform.select_platform(args["backend"])
from interhand_prep.core.options import RenderOptions
from interhand_prep.core.selection import SequenceSelector
from interhand_prep.stages import get_annots, render_mesh
sel = SequenceSelector(capture=args["capture"], seq=args["seq"], split=args["split"], basedir=Path(args["basedir"]),
                       mano_dir=Path(args["mano_dir"]), hand_type=args["hand_type"], out_root=Path(args["out"]))
get_annots.run(sel, progress=False)
start = time.perf_counter()
if not args["whole"]:
    result = render_mesh.run(sel, RenderOptions(backend=args["backend"], render_workers=1, depth_format="npy",
                                                all_cameras=args["all_cameras"]), progress=False)
    print(json.dumps({"views": result.rendered, "backend": result.backend, "seconds": time.perf_counter() - start}))
    sys.exit(0)
import numpy as np
from PIL import Image
from interhand_prep.core import gl_renderer
from interhand_prep.core.mano import load_mano_model
layout = sel.layout
cams = layout.read_cameras()
views = []
for c, cam in enumerate(cams.ids):
    width, height = Image.open(sorted(layout.camera_dir(cam).glob("image*.jpg"))[0]).size
    views.append(gl_renderer.ViewCamera(cam, cams.K[c], cams.R[c], cams.T[c].reshape(3), width, height))
faces = {h: load_mano_model(sel.mano_dir, h).faces for h in ("left", "right")}
out = {}
with gl_renderer.HandViewRenderer(views) as renderer:
    renderer.crops = False
    for view in views:
        for frame in layout.read_frames():
            meshes = {h: (np.load(layout.vertices(h, frame)), faces[h]) for h in faces if layout.vertices(h, frame).is_file()}
            renderer.set_hands((view.width, view.height), meshes)
            out[f"mask_{view.cam_id}_{frame}"], out[f"depth_{view.cam_id}_{frame}"] = renderer.render(view.cam_id)
np.savez(layout.root / "whole.npz", **out)
print(json.dumps({"views": len(out) // 2, "backend": args["backend"] + " (whole images)",
                  "seconds": time.perf_counter() - start}))
"""


def render(backend: str, out: Path, args, whole: bool = False) -> dict:
    spec = {"backend": backend, "out": str(out), "capture": args.capture, "seq": args.seq, "split": args.split,
            "basedir": str(args.basedir.resolve()), "mano_dir": str(args.mano_dir.resolve()),
            "hand_type": "both" if whole else args.hand_type, "all_cameras": args.all_cameras, "whole": whole}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{backend}: rendering failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Views:
    """Masks and depth maps of one rendering: render_mesh's files, or an npz of whole images."""

    def __init__(self, root: Path, npz: Path | None = None):
        self.layout = SequenceLayout(root)
        self.npz = np.load(npz) if npz else None

    def get(self, cam: str, frame: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.npz is not None:
            key = f"{cam}_{frame}"
            return (self.npz[f"mask_{key}"], self.npz[f"depth_{key}"]) if f"mask_{key}" in self.npz else None
        path = self.layout.mask(cam, frame)
        if not path.is_file():
            return None
        return np.asarray(Image.open(path)), np.load(self.layout.depth(cam, frame, "npy"))[..., 0]


def edges(mask: np.ndarray) -> np.ndarray:
    """Pixels with an 8-neighbour of another label (within 1 px of a label boundary)."""
    padded = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    out = np.zeros(mask.shape, bool)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + h, dx:dx + w] != mask
    return out


def depth_jumps(depth: np.ndarray, step_m: float = JUMP_M) -> np.ndarray:
    """Pixels within 1 px of a depth discontinuity: an 8-neighbour more than `step_m` nearer or
    farther, or without a hand."""
    padded = np.pad(depth, 1, mode="edge")
    h, w = depth.shape
    out = np.zeros(depth.shape, bool)
    for dy in range(3):
        for dx in range(3):
            other = padded[dy:dy + h, dx:dx + w]
            out |= (np.abs(other - depth) > step_m) | ((other > 0) != (depth > 0))
    return out


def compare(name: str, a: Views, b: Views, views: list[tuple[str, int]], show: bool) -> dict:
    total = {"views": 0, "views_differing": 0, "pixels": 0, "edge_pixels": 0, "swaps": 0, "outline": 0,
             "max_depth_m": 0.0, "max_smooth_depth_m": 0.0, "covered": 0, "depth_pixels": 0, "far_pixels": 0,
             "far_at_jumps": 0, "missing": 0}
    steps = []
    lines = []
    for cam, frame in views:
        va, vb = a.get(cam, frame), b.get(cam, frame)
        if va is None or vb is None:
            total["missing"] += 1
            continue
        (ma, da), (mb, db) = va, vb
        total["views"] += 1
        diff = ma != mb
        both = (da > 0) & (db > 0)
        step = np.abs(da.astype(np.float64) - db)
        depth_step = float(step[both].max()) if both.any() else 0.0
        jumps = depth_jumps(da) | depth_jumps(db)
        smooth = both & ~jumps
        far = both & (step > JUMP_M)
        total["max_depth_m"] = max(total["max_depth_m"], depth_step)
        total["max_smooth_depth_m"] = max(total["max_smooth_depth_m"], float(step[smooth].max()) if smooth.any() else 0.0)
        total["covered"] += int(both.sum())
        total["depth_pixels"] += int((both & (da != db)).sum())
        total["far_pixels"] += int(far.sum())
        total["far_at_jumps"] += int((far & jumps).sum())
        steps.append(step[smooth])
        if not diff.any():
            continue
        edge = diff & (edges(ma) | edges(mb))
        swaps = int((diff & (ma > 0) & (mb > 0)).sum())
        total["views_differing"] += 1
        total["pixels"] += int(diff.sum())
        total["edge_pixels"] += int(edge.sum())
        total["swaps"] += swaps
        total["outline"] += int(diff.sum()) - swaps
        if show:
            where = ", ".join(f"(x {x}, y {y}) {ma[y, x]}->{mb[y, x]}" for y, x in np.argwhere(diff)[:4])
            lines.append(f"  cam{cam} frame {frame}: {int(diff.sum())} px ({int(edge.sum())} on edges, {swaps} label "
                         f"swaps); {where}")
    print(f"\n{name}:")
    if lines:
        print("\n".join(lines))
    all_edge = total["pixels"] == total["edge_pixels"]
    print(f"  total: {total['views_differing']} of {total['views']} views differ, {total['pixels']} mask pixels "
          f"({'all' if all_edge else 'NOT all'} edge pixels: {total['edge_pixels']}; {total['swaps']} label swaps, "
          f"{total['outline']} outline changes)" + (f"; {total['missing']} views missing in one" if total["missing"] else ""))
    steps = np.concatenate(steps) if steps else np.zeros(1)
    print(f"  depth, where both cover a pixel: differs on {total['depth_pixels']} of {total['covered']} pixels; away "
          f"from occluding edges (no neighbour {JUMP_M * 1000:g}+ mm off) median {np.median(steps) * 1000:.4f} mm, "
          f"99.9% {np.quantile(steps, 0.999) * 1000:.4f} mm, max {total['max_smooth_depth_m'] * 1000:.4f} mm; "
          f"{total['far_pixels']} pixels differ by more than {JUMP_M * 1000:g} mm ({total['far_at_jumps']} of them within "
          f"1 px of an occluding edge), the largest {total['max_depth_m'] * 1000:.2f} mm")
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", default="0266_dh_pray")
    p.add_argument("--capture", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--basedir", type=Path, default=REPO / "data" / "InterHand2.6M_30fps")
    p.add_argument("--mano-dir", type=Path, default=REPO / "data" / "mano")
    p.add_argument("--hand-type", default="right", help="as render-mesh's --hand-type (default right, as the demo)")
    p.add_argument("--all-cameras", action="store_true", help="also the cameras get_annots filters out (landscape)")
    p.add_argument("--osmesa-whole", action="store_true", help="also OSMesa without crops (third subprocess)")
    p.add_argument("--views", action="store_true", help="a line per differing view")
    p.add_argument("--keep", type=Path, help="render into this folder and keep it (default: a temporary folder)")
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="compare_backends_"))
    runs = {}
    for backend in ("osmesa", "egl"):
        start = time.perf_counter()
        info = render(backend, work / backend, args)
        print(f"{backend}: {info['views']} views rendered by {info['backend']} in {info['seconds']:.1f} s "
              f"({time.perf_counter() - start:.1f} s with start-up and get_annots)", flush=True)
        runs[backend] = Views(_sequence_root(work / backend, args))
    if args.osmesa_whole:
        info = render("osmesa", work / "osmesa_whole", args, whole=True)
        print(f"osmesa whole images: {info['views']} views in {info['seconds']:.1f} s", flush=True)
        root = _sequence_root(work / "osmesa_whole", args)
        runs["osmesa_whole"] = Views(root, root / "whole.npz")
    layout = runs["osmesa"].layout
    cams = layout.read_cams()
    frames = layout.read_frames()
    views = [(c, f) for c in cams for f in frames]
    if args.all_cameras:
        extra = sorted({p.parent.name[3:] for p in (layout.root / "mask").glob("cam*/*.png")} - set(cams), key=int)
        views += [(c, f) for c in extra for f in frames]
    print(f"\n{args.seq}: {len(views)} views ({len(cams)} cameras x {len(frames)} frames"
          + (", with the landscape cameras" if args.all_cameras else "") + f"); outputs in {work}"
          + ("" if args.keep else " (removed at the end)"))
    compare("OSMesa (crops) vs EGL (whole images)", runs["osmesa"], runs["egl"], views, args.views)
    if args.osmesa_whole:
        both_hand_views = [(c, f) for c, f in views if c in cams]
        compare("OSMesa crops vs OSMesa whole images (same backend)", runs["osmesa"], runs["osmesa_whole"],
                both_hand_views, args.views)
        compare("OSMesa whole images vs EGL whole images", runs["osmesa_whole"], runs["egl"], both_hand_views,
                args.views)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _sequence_root(out_root: Path, args) -> Path:
    return out_root / args.split / f"Capture{args.capture}" / args.seq


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
