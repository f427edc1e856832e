"""The benchmark capture (40 cameras x 100 frames, both hands), generated once and reused."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interhand_prep.synthetic.capture import CaptureSpec, SequenceSpec, generate_capture  # noqa: E402
from interhand_prep.synthetic.hand import write_synthetic_mano  # noqa: E402

SEQ = "0266_dh_pray"


def bench_spec(num_cameras: int = 40, num_frames: int = 100) -> CaptureSpec:
    """Every portrait camera and frame is kept (no black or missing images): 40 x 100 keeps
    37 x 100 = 3,700 views, 20 x 30 keeps 540, as in the reference measurements."""
    return CaptureSpec(capture=0, split="train", num_cameras=num_cameras, seed=7, default_cases=False,
                       sequences=[SequenceSpec(SEQ, "both", num_frames)])


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/interhand_prep_bench"),
                   help="where the benchmark capture is generated (reused when present)")
    p.add_argument("--cameras", type=int, default=40)
    p.add_argument("--frames", type=int, default=100)
    return p


def ensure_capture(workdir: Path, num_cameras: int, num_frames: int) -> tuple[Path, Path]:
    """(basedir, mano_dir) of the benchmark capture, generating it if absent."""
    root = workdir / f"c{num_cameras}_f{num_frames}_all_kept"
    basedir, mano_dir = root / "IH", root / "mano"
    marker = root / "complete"
    if not marker.exists():
        print(f"generating {num_cameras} cameras x {num_frames} frames in {root} (once) ...", flush=True)
        start = time.perf_counter()
        generate_capture(basedir, mano_dir, bench_spec(num_cameras, num_frames), progress=True)
        marker.write_text("ok\n")
        print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)
    write_synthetic_mano(mano_dir)  # adds what an older generator did not write (the joint regressor)
    return basedir, mano_dir


def peak_rss_mb(children: bool = False) -> float:
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0
