#!/usr/bin/env python
"""How close hand masks come to the true hand on a synthetic fit_error capture (not run in CI).

    python benchmarks/bench_refine.py [--cameras 40] [--frames 100] [--workdir DIR] [--json OUT.json]
    python benchmarks/bench_refine.py --cameras 12 --frames 20        # the accuracy figures

Generates once under --workdir a capture with the fit_error appearance (interhand_prep.synthetic:
the images show a true hand 3.5-6.5 mm off the annotated MANO fit, with forearms, sleeves, a
patterned shirt behind, shaded skin; true masks under <basedir>/synthetic_truth/), with an
interacting sequence (both hands), a right-hand and a left-hand sequence (each sequence its own
shirt, lights and fit error), every case kept (no black frames, no missing images). Then runs
`interhand-prep get-annots` (--hand-type auto, --keep-landscape) and `render-mesh` on each sequence
into <root>/out, so that mask/ exists, and scores against the truth, per view (views whose truth
shows no hand are left out, and counted):

  mano      mask/ as rendered from the annotated MANO mesh;
  grabcut   plain GrabCut seeded by the MANO mask, as LiveHand refines InterHand2.6M masks: on a
            crop around the MANO mask, GC_FGD = the mask eroded by --erode-px, GC_PR_FGD = the rest
            of the mask, GC_PR_BGD = a band of --band-px around it, GC_BGD elsewhere, 5 iterations
            from the mask (cv2.GC_INIT_WITH_MASK); each hand pixel takes the label of the nearest
            MANO hand pixel; a view where GrabCut keeps nothing keeps the MANO mask;
  cihp      mask_cihp/ of the sequence, written by `interhand-prep refine-masks` (run here, timed as a
            whole command, unless --no-refine); the views where it is more than 0.02 IoU below
            MANO although mask_quality.csv does not say it kept MANO's mask are counted.

The refine-masks timing here covers small sequences, where start-up and each camera's colour models
weigh most; bench_refine_speed.py times the command on a 40 x 100 capture (views/s, median of 3).

Metrics (refine_metrics.py): label-aware IoU and boundary F-score with a 2 px tolerance, mean over
views, per camera kind (colour, mono) and overall. Prints a table; --json writes the numbers.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from common import parser
from refine_metrics import score_view, summarize

from interhand_prep.core import dataset
from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture, truth_mask_path
from interhand_prep.synthetic.hand import write_synthetic_mano

SEQUENCES = [("0266_dh_pray", "both"), ("0051_dinosaur", "right"), ("0007_thumbup_normal", "left")]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def refine_spec(num_cameras: int, num_frames: int, seed: int) -> CaptureSpec:
    return CaptureSpec(capture=0, split="train", num_cameras=num_cameras, seed=seed, default_cases=False,
                       appearance="fit_error", sequences=[SequenceSpec(n, h, num_frames) for n, h in SEQUENCES])


def ensure_capture(workdir: Path, num_cameras: int, num_frames: int, seed: int) -> tuple[Path, Path, dict]:
    """(basedir, mano_dir, generation record) of the benchmark capture, generated if absent."""
    root = workdir / f"refine_c{num_cameras}_f{num_frames}_s{seed}"
    basedir, mano_dir = root / "IH", root / "mano"
    record_path = root / "generation.json"
    if not record_path.exists():
        print(f"generating {num_cameras} cameras x {num_frames} frames x {len(SEQUENCES)} sequences (fit_error) "
              f"in {root} (once) ...", flush=True)
        start = time.perf_counter()
        manifest = generate_capture(basedir, mano_dir, refine_spec(num_cameras, num_frames, seed), progress=True)
        seconds = time.perf_counter() - start
        errors = [e for frames in manifest.true_joint_errors.values() for hands in frames.values()
                  for e in hands.values()]
        record = {"seconds": seconds, "views": sum(1 for _ in (basedir / "images").rglob("*.jpg")),
                  "true_joint_error_mm": {"mean": float(np.mean(errors)), "min": float(np.min(errors)),
                                          "max": float(np.max(errors))}}
        record_path.write_text(json.dumps(record, indent=1))
        print(f"generated in {seconds:.1f} s", flush=True)
    write_synthetic_mano(mano_dir)
    return basedir, mano_dir, json.loads(record_path.read_text())


def run_pipeline(basedir: Path, mano_dir: Path, out: Path, seq: str, refine: bool) -> float:
    """get-annots, render-mesh and (with `refine`) refine-masks, whole commands as a user runs them
    -> the seconds of refine-masks (0 when it did not run or found nothing to do)."""
    common = ["--capture", "0", "--seq", seq, "--basedir", str(basedir), "--mano-dir", str(mano_dir),
              "--out-root", str(out), "--hand-type", "auto", "--quiet"]
    commands = [["get-annots", "--keep-landscape"], ["render-mesh", "--depth-format", "none"]]
    seconds = 0.0
    for command in commands + ([["refine-masks"]] if refine else []):
        cmd = [sys.executable, "-m", "interhand_prep", *command, *common]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=ENV)
        if proc.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        if command[0] == "refine-masks" and "nothing to do" not in proc.stdout:
            seconds = time.perf_counter() - start
    return seconds


def kept_views(root: Path) -> set[tuple[str, int]]:
    """(camera, frame) of the views where mask_quality.csv says a hand kept its MANO mask."""
    path = root / "mask_quality.csv"
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {(r["camera"], int(r["frame"])) for r in csv.DictReader(f) if r["status"].startswith("kept_mano_")}


def grabcut(image: np.ndarray, mano: np.ndarray, erode_px: int, band_px: int, margin_px: int = 10,
            iterations: int = 5) -> np.ndarray:
    """Plain GrabCut seeded by the MANO mask (labels 0/100/200) -> a label mask of the same size."""
    import cv2
    from scipy.ndimage import distance_transform_edt

    hand = mano > 0
    if not hand.any():
        return mano.copy()
    h, w = mano.shape
    ys, xs = np.nonzero(hand)
    pad = band_px + margin_px
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    crop = hand[y0:y1, x0:x1].astype(np.uint8)
    disk = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    sure = cv2.erode(crop, disk(erode_px), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    band = cv2.dilate(crop, disk(band_px)) > 0
    gc = np.full(crop.shape, cv2.GC_BGD, np.uint8)
    gc[band] = cv2.GC_PR_BGD
    gc[crop > 0] = cv2.GC_PR_FGD
    gc[sure] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    img = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])  # RGB -> BGR, as OpenCV reads images
    try:
        cv2.grabCut(img, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return mano.copy()
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if not fg.any():
        return mano.copy()
    mano_crop = mano[y0:y1, x0:x1]
    _, (iy, ix) = distance_transform_edt(mano_crop == 0, return_indices=True)
    out = np.zeros_like(mano)
    out[y0:y1, x0:x1] = np.where(fg, mano_crop[iy, ix], 0)
    return out


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "P") else im)


def score_one(job: tuple) -> tuple:
    """(seq, cam, frame, rgb, {method: ViewScore or None})."""
    seq, cam, frame, rgb, paths, erode_px, band_px = job
    truth = _read(paths["truth"])
    mano = _read(paths["mano"])
    out = {"mano": score_view(mano, truth)}
    if out["mano"] is None:
        return seq, cam, frame, rgb, {}
    image = _read(paths["image"])
    out["grabcut"] = score_view(grabcut(image, mano, erode_px, band_px), truth)
    if "cihp" in paths:
        out["cihp"] = score_view(_read(paths["cihp"]), truth)
    return seq, cam, frame, rgb, out


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=11, help="the capture's seed (default 11)")
    p.add_argument("--erode-px", type=int, default=5, help="GrabCut: sure hand = MANO mask eroded by this (default 5)")
    p.add_argument("--band-px", type=int, default=15, help="GrabCut: probable background band width (default 15)")
    p.add_argument("--workers", type=int, default=0, help="scoring processes (default: one per core)")
    p.add_argument("--json", type=Path, help="write the numbers to this file")
    p.add_argument("--no-refine", action="store_true", help="do not run refine-masks (score mask_cihp/ only if there)")
    args = p.parse_args()
    basedir, mano_dir, record = ensure_capture(args.workdir, args.cameras, args.frames, args.seed)
    out = basedir.parent / "out"
    start = time.perf_counter()
    refine_seconds = sum(run_pipeline(basedir, mano_dir, out, seq, not args.no_refine) for seq, _ in SEQUENCES)
    pipeline_seconds = time.perf_counter() - start
    table = dataset.read_camera_table(dataset.PACKAGED_CAMERA_TABLE)
    jobs = []
    for seq, _ in SEQUENCES:
        root = out / "train" / "Capture0" / seq
        for mask in sorted((root / "mask").glob("cam*/image*.png")):
            cam, frame = mask.parent.name[3:], int(mask.stem[5:])
            paths = {"mano": mask, "truth": truth_mask_path(basedir, "train", 0, seq, cam, frame),
                     "image": dataset.image_path(basedir, "train", 0, seq, cam, frame)}
            cihp = root / "mask_cihp" / mask.parent.name / mask.name
            if cihp.exists():
                paths["cihp"] = cihp
            jobs.append((seq, cam, frame, bool(table[cam].rgb), paths, args.erode_px, args.band_px))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers or os.cpu_count()) as pool:
        results = list(pool.map(score_one, jobs, chunksize=8))
    score_seconds = time.perf_counter() - start
    unscored = sum(1 for r in results if not r[4])
    kept = {seq: kept_views(out / "train" / "Capture0" / seq) for seq, _ in SEQUENCES}
    # views whose refined mask is more than 0.02 IoU below MANO's though no hand of it kept MANO's
    worse = [(r[0], r[1], r[2]) for r in results if r[4].get("cihp") and r[4].get("mano")
             and r[4]["cihp"].iou < r[4]["mano"].iou - 0.02 and (r[1], r[2]) not in kept[r[0]]]
    methods = [m for m in ("mano", "grabcut", "cihp") if any(m in r[4] for r in results)]
    summary = {}
    for method in methods:
        summary[method] = {}
        for kind, keep in (("colour", lambda rgb: rgb), ("mono", lambda rgb: not rgb), ("all", lambda rgb: True)):
            summary[method][kind] = summarize([r[4][method] for r in results if method in r[4] and keep(r[3])])
    print(f"\n{len(jobs)} views with a MANO mask ({args.cameras} cameras x {args.frames} frames x {len(SEQUENCES)} "
          f"sequences); {unscored} left out (the truth shows no hand). Generation: {record['seconds']:.0f} s; "
          f"true-vs-annotated joint error {record['true_joint_error_mm']['mean']:.2f} mm mean "
          f"({record['true_joint_error_mm']['min']:.2f}-{record['true_joint_error_mm']['max']:.2f}); pipeline "
          f"{pipeline_seconds:.0f} s, scoring {score_seconds:.0f} s")
    if refine_seconds:
        refined_views = sum(1 for r in results if "cihp" in r[4]) + unscored
        print(f"refine-masks: {refined_views} views in {refine_seconds:.1f} s (whole commands, {len(SEQUENCES)} "
              f"sequences): {refined_views / refine_seconds:.1f} views/s")
    if any("cihp" in r[4] for r in results):
        print(f"refined views more than 0.02 IoU below MANO without a kept_mano status: {len(worse)}"
              + (f" (e.g. {worse[:3]})" if worse else ""))
    print(f"{'method':8} {'cameras':7} {'views':>6} {'IoU':>6} {'bF@2px':>7} {'bP':>6} {'bR':>6}")
    for method in methods:
        for kind, s in summary[method].items():
            print(f"{method:8} {kind:7} {s['views']:6d} {s['iou']:6.3f} {s['boundary_f']:7.3f} "
                  f"{s['boundary_precision']:6.3f} {s['boundary_recall']:6.3f}")
    if args.json:
        per_view = [{"seq": r[0], "cam": r[1], "frame": r[2], "rgb": r[3],
                     **{m: (vars(s) if s else None) for m, s in r[4].items()}} for r in results]
        args.json.write_text(json.dumps({"cameras": args.cameras, "frames": args.frames, "seed": args.seed,
                                         "grabcut": {"erode_px": args.erode_px, "band_px": args.band_px},
                                         "generation": record, "views_with_mask": len(jobs),
                                         "views_without_true_hand": unscored, "summary": summary,
                                         "refine_seconds": refine_seconds, "refined_worse_than_mano": worse,
                                         "per_view": per_view}, indent=1))


if __name__ == "__main__":
    main()
