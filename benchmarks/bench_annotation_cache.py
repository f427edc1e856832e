#!/usr/bin/env python
"""First-run and cached cost of the annotations at real scale, for get_annots.py on one sequence.

    python benchmarks/bench_annotation_cache.py [--mano-frames 1300000] [--data-gb 2.0]

Builds, beside the benchmark capture, a split whose MANO_NeuralAnnot holds --mano-frames frames (both
hands, spread over 10 captures; Capture0 holds the benchmark sequence's real entries) and whose
data JSON is at least --data-gb GB, then times get_annots.py twice: the first run streams the
JSON into the per-capture cache, the second loads the cache. Reports wall time, peak memory
(RSS of the get_annots process) and the cached annotation loading time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from common import SEQ, ensure_capture, parser

REPO = Path(__file__).resolve().parents[1]
CAPTURES = 10


def write_big_mano(path: Path, real: dict, total_frames: int, rng) -> None:
    """{capture: {frame: {"right": {...}, "left": {...}}}} with `total_frames` frames, streamed out."""
    per_capture = total_frames // CAPTURES
    with open(path, "wb") as f:
        f.write(b"{")
        for capture in range(CAPTURES):
            records = dict(real) if capture == 0 else {}
            start = 1_000_000  # filler frame ids, away from the real ones
            f.write(orjson.dumps(str(capture)) + b":{")
            first = True
            for chunk in range(0, per_capture - len(records), 20000):
                n = min(20000, per_capture - len(records) - chunk)
                values = rng.normal(scale=0.3, size=(n, 2, 61)).round(6).tolist()
                body = {str(start + chunk + k): {hand: {"pose": v[h][:48], "shape": v[h][48:58], "trans": v[h][58:]}
                                                 for h, hand in enumerate(("right", "left"))} for k, v in enumerate(values)}
                text = orjson.dumps(body)[1:-1]
                f.write((b"" if first else b",") + text)
                first = False
            if records:
                f.write((b"" if first else b",") + orjson.dumps(records)[1:-1])
            f.write(b"}" + (b"," if capture < CAPTURES - 1 else b""))
        f.write(b"}")


def write_big_data(path: Path, gigabytes: float) -> None:
    """A COCO-style data JSON of at least `gigabytes` GB (never read by the stages, measured anyway)."""
    target = int(gigabytes * 1e9)
    image = {"id": 0, "file_name": "Capture0/0000_neutral_relaxed/cam400002/image0563.jpg", "width": 334, "height": 512,
             "capture": 0, "subject": 0, "seq_name": "0000_neutral_relaxed", "camera": "400002", "frame_idx": 563}
    annot = {"id": 0, "image_id": 0, "bbox": [33.5, 164.9, 185.0, 142.7], "joint_valid": [[1]] * 42,
             "hand_type": "right", "hand_type_valid": 1}
    written = 0
    with open(path, "wb") as f:
        f.write(b'{"images": [')
        n = 0
        while written < target * 0.35:
            chunk = b",".join(orjson.dumps({**image, "id": n + k, "frame_idx": n + k}) for k in range(50000))
            f.write((b"," if n else b"") + chunk)
            written += len(chunk)
            n += 50000
        f.write(b'], "annotations": [')
        m = 0
        while written < target:
            chunk = b",".join(orjson.dumps({**annot, "id": m + k, "image_id": m + k}) for k in range(50000))
            f.write((b"," if m else b"") + chunk)
            written += len(chunk)
            m += 50000
        f.write(b"]}")


def timed_run(cmd: list[str]) -> tuple[float, float, str]:
    """Run `cmd` in a wrapper that reports its peak RSS -> (seconds, peak MB, stdout)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(p.stdout); print(p.stderr, file=sys.stderr); "
               "print('@@', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
               "sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stdout + proc.stderr)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@")][-1].split()
    return float(marker[1]), float(marker[2]), proc.stdout


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--mano-frames", type=int, default=1_300_000, help="frames in the MANO_NeuralAnnot file")
    p.add_argument("--data-gb", type=float, default=2.0)
    args = p.parse_args()
    basedir, mano_dir = ensure_capture(args.workdir, args.cameras, args.frames)
    big = args.workdir / f"big_{args.mano_frames}"
    ann = big / "IH" / "annotations" / "train"
    ann.mkdir(parents=True, exist_ok=True)
    if not (big / "IH" / "images").exists():
        (big / "IH" / "images").symlink_to((basedir / "images").resolve())
    src = basedir / "annotations" / "train"
    (ann / "InterHand2.6M_train_camera.json").write_bytes((src / "InterHand2.6M_train_camera.json").read_bytes())
    mano_file = ann / "InterHand2.6M_train_MANO_NeuralAnnot.json"
    data_file = ann / "InterHand2.6M_train_data.json"
    if not mano_file.exists():
        start = time.perf_counter()
        real = json.loads((src / "InterHand2.6M_train_MANO_NeuralAnnot.json").read_text())["0"]
        write_big_mano(mano_file.with_suffix(".tmp"), real, args.mano_frames, np.random.default_rng(0))
        mano_file.with_suffix(".tmp").rename(mano_file)
        print(f"wrote {mano_file} ({mano_file.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s", flush=True)
    if not data_file.exists():
        write_big_data(data_file.with_suffix(".tmp"), args.data_gb)
        data_file.with_suffix(".tmp").rename(data_file)
        print(f"wrote {data_file} ({data_file.stat().st_size / 1e9:.2f} GB)", flush=True)
    cache = ann / ".interhand_prep_cache"
    for f in cache.glob("*"):
        f.unlink()
    out = args.workdir / "cache_out"
    cmd = [sys.executable, str(REPO / "get_annots.py"), "--capture", "0", "--seq", SEQ, "--hand-type", "both",
           "--basedir", str(big / "IH"), "--mano-dir", str(mano_dir), "--out-root", str(out), "--quiet", "--overwrite"]
    first_s, first_mb, _ = timed_run(cmd)
    cached_s, cached_mb, _ = timed_run(cmd)
    sys.path.insert(0, str(REPO))
    from interhand_prep.core.dataset import InterHandDataset

    start = time.perf_counter()
    ds = InterHandDataset(big / "IH", "train")
    ds.capture_cameras(0)
    ds.capture_mano(0)
    loading = time.perf_counter() - start
    print(f"MANO_NeuralAnnot {mano_file.stat().st_size / 1e9:.2f} GB ({args.mano_frames} frames, both hands), "
          f"data {data_file.stat().st_size / 1e9:.2f} GB")
    print(f"get_annots.py first run (builds the cache): {first_s:.1f} s, peak RSS {first_mb:.0f} MB")
    print(f"get_annots.py cached run: {cached_s:.2f} s, peak RSS {cached_mb:.0f} MB; "
          f"annotation loading (cameras + MANO of the capture) {loading * 1000:.0f} ms; "
          f"cache {sum(f.stat().st_size for f in cache.glob('*')) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
