#!/usr/bin/env python
"""Regenerate the documentation's images from the demo data: docs/mask_depth.png and
docs/part_labels.png, each with its .svg (interhand_prep/figures.py, as the notebook draws them).

    interhand-prep demo --quiet            # the demo data under data/, when not there yet
    python tools/make_docs_figures.py      # [--basedir DIR] [--sequence NAME] [--out DIR]

The view is the notebook's default: camera 400002 if kept, else the first kept camera, and the
first kept frame of the demo's two-hand sequence.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS_FIGURES = ("mask_depth.png", "part_labels.png")
PANEL_INCHES = 3.2  # the panels' height: images of about 1000 px across, light for the README


def make_docs_figures(basedir: Path, out: Path, split: str = "train", capture: int = 0,
                      sequence: str = "0266_dh_pray", camera: str | None = None, frame: int | None = None) -> list[Path]:
    """Draw and save the docs' figures of one view of a processed sequence -> the files written."""
    import numpy as np
    from PIL import Image

    from interhand_prep import figures
    from interhand_prep.core.errors import InputError
    from interhand_prep.core.layout import SequenceLayout, decode_depth, decode_mask
    from interhand_prep.core.manifest import Manifest

    layout = SequenceLayout.for_sequence(basedir, split, capture, sequence)
    if not layout.cams_txt.is_file():
        raise InputError(f"{layout.root}: not a processed sequence (run `interhand-prep demo --quiet` first)")
    cams = layout.read_cams()
    camera = camera or ("400002" if "400002" in cams else cams[0])
    frame = frame if frame is not None else layout.read_frames()[0]
    parts_path = layout.parts(camera, frame)
    if not parts_path.is_file():
        raise InputError(f"{parts_path}: no part labels (the demo renders them; rerun `interhand-prep demo --quiet`)")
    depth_format = ((Manifest.read(layout.root).recipe("render_mesh") or {}).get("options") or {}).get("depth_format", "npy")
    image = np.asarray(Image.open(layout.image(camera, frame)).convert("RGB"))
    mask = decode_mask(layout.mask(camera, frame))
    depth = decode_depth(layout.depth(camera, frame, depth_format))[..., 0] if depth_format != "none" else None
    table = {row["label"]: row for row in json.loads(layout.parts_json.read_text())["parts"]}
    view = f"camera {camera}, frame {frame}"
    drawn = {"mask_depth.png": figures.mask_depth(image, mask, depth, title=f"{view}: rendered mask and depth",
                                                  panel=PANEL_INCHES),
             "part_labels.png": figures.part_labels(image, decode_mask(parts_path), table, title=f"{view}: part labels",
                                                    panel=PANEL_INCHES)}
    written = []
    for name in DOCS_FIGURES:
        problems = figures.figure_problems(drawn[name])
        if problems:
            raise InputError(f"{name} breaks the figure rules: " + "; ".join(problems))
        png, svg = figures.save_figure(drawn[name], out / name)
        shrink_png(png)
        written += [png, svg]
    return written


def shrink_png(path: Path) -> None:
    """Re-encode a PNG with a palette of 256 colours (the figures' flat colours survive; the file
    shrinks to about half, lighter for the README), keeping its dpi."""
    import io

    from PIL import Image

    from interhand_prep.core.fileio import write_bytes

    with Image.open(path) as image:
        dpi = image.info.get("dpi")
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True, **({"dpi": dpi} if dpi else {}))
    write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    from interhand_prep.core.errors import InputError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--basedir", type=Path, default=REPO / "data/InterHand2.6M_30fps")
    parser.add_argument("--split", default="train")
    parser.add_argument("--capture", type=int, default=0)
    parser.add_argument("--sequence", default="0266_dh_pray")
    parser.add_argument("--camera", default=None, help="default: 400002 if kept, else the first kept camera")
    parser.add_argument("--frame", type=int, default=None, help="default: the first kept frame")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder of the images (default: docs/)")
    args = parser.parse_args(argv)
    try:
        written = make_docs_figures(args.basedir, args.out, args.split, args.capture, args.sequence, args.camera,
                                    args.frame)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
