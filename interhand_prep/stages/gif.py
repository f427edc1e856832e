"""GIF previews of processed sequences, optionally with masks tinted over the images: the rendered
MANO masks (mask/; --overlay or --overlay mano), the masks refined against the images
(mask_cihp/ of refine_masks; --overlay refined) or the part labels (parts/ of render_mesh
--parts; --overlay parts, in the colours of parts.json)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import parts as part_table
from ..core.constants import HAND_COLORS
from ..core.errors import InputError
from ..core.fileio import write_bytes
from ..core.layout import MASK_LABELS, SequenceLayout, decode_mask, gif_path, output_capture_dir, processed_sequences

DEFAULT_CAMERA = "400002"
OVERLAY_ALPHA = 0.5  # tint colours: HAND_COLORS, blended at this weight over the image
# --overlay: the view kind tinted over the images; the script that writes each
OVERLAY_KINDS = {"mano": "mask", "refined": "mask_cihp", "parts": "parts"}
WRITTEN_BY = {"mask": "render_mesh.py", "mask_cihp": "refine_masks.py", "parts": "render_mesh.py --parts"}
DESCRIBED = {"mask": "rendered masks (mask/)", "mask_cihp": "refined masks (mask_cihp/)",
             "parts": "part labels (parts/)"}


def overlay_kind(overlay: bool | str | None) -> str | None:
    """--overlay's value (also True: mano, False or None: none) -> the view kind tinted, or None."""
    if overlay is None or overlay is False:
        return None
    choice = "mano" if overlay is True else overlay
    if choice not in OVERLAY_KINDS:
        raise InputError(f"unknown --overlay {overlay!r}; expected one of {', '.join(OVERLAY_KINDS)}")
    return OVERLAY_KINDS[choice]


def overlay_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image HxWx3 uint8, mask HxW uint8 labels -> image with each hand's pixels tinted."""
    out = image.astype(np.float32)
    for hand, label in MASK_LABELS.items():
        sel = mask == label
        out[sel] = (1 - OVERLAY_ALPHA) * out[sel] + OVERLAY_ALPHA * np.array(HAND_COLORS[hand], np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_parts(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """image HxWx3 uint8, part labels HxW uint8 -> image with each part's pixels tinted its colour."""
    out = image.astype(np.float32)
    hand = labels > 0
    colours = part_table.LABEL_COLOURS[labels[hand]].astype(np.float32)
    out[hand] = (1 - OVERLAY_ALPHA) * out[hand] + OVERLAY_ALPHA * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_legend(image: np.ndarray) -> np.ndarray:
    """The hands' colours and names in the top-left corner (a small key for the tinted previews)."""
    from PIL import ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for row, hand in enumerate(("left", "right")):
        y = 4 + 14 * row
        draw.rectangle((4, y, 14, y + 10), fill=HAND_COLORS[hand], outline=(255, 255, 255))
        draw.text((18, y - 1), hand, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    return np.asarray(canvas)


def check_overlay(layout: SequenceLayout, overlay: bool | str | None) -> None:
    """A one-line error when the sequence has no masks of the kind --overlay asks for."""
    kind = overlay_kind(overlay)
    if kind is not None and not (layout.root / kind).is_dir():
        other = ", or use --overlay mano" if kind != OVERLAY_KINDS["mano"] else ""
        raise InputError(f"{layout.root}: no {DESCRIBED[kind]} to overlay; run {WRITTEN_BY[kind]} on it first{other}")


def sequence_frames_rgb(layout: SequenceLayout, cam: str, stride: int = 1, max_width: int | None = None,
                        overlay: bool | str | None = False) -> list[np.ndarray]:
    """The frames of one camera as RGB arrays; `overlay` (mano, refined; True: mano) tints masks over."""
    kind = overlay_kind(overlay)
    check_overlay(layout, overlay)
    frames = layout.read_frames()[::stride]
    images = []
    for frame in frames:
        path = layout.image(cam, frame)
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable image ({exc})") from None
        array = np.asarray(image)
        if kind is not None:
            mpath = layout.view(kind, cam, frame, "png")
            if not mpath.is_file():
                raise InputError(f"{mpath}: no mask to overlay (run {WRITTEN_BY[kind]} first)")
            tint = overlay_parts if kind == "parts" else overlay_mask
            array = tint(array, decode_mask(mpath))
        if max_width and array.shape[1] > max_width:
            height = round(array.shape[0] * max_width / array.shape[1])
            array = np.asarray(Image.fromarray(array).resize((max_width, height), Image.Resampling.BILINEAR))
        if kind is not None and kind != "parts":  # parts: 32 colours, their key is parts.json
            array = draw_legend(array)
        images.append(array)
    return images


def write_gif(path: Path, images: list[np.ndarray], fps: float) -> None:
    frames = [Image.fromarray(a) for a in images]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    write_bytes(path, buf.getvalue())


def make_capture_gifs(basedir: Path, split: str, capture: int, out_root: Path | None = None, cam: str | None = None,
                      fps: float = 30.0, stride: int = 1, max_width: int | None = None,
                      overlay: bool | str | None = False, seqs: list[str] | None = None,
                      progress: bool = True) -> list[Path]:
    """One GIF per processed sequence of the capture -> the GIF paths.

    The camera is `cam`, else 400002 when kept, else the first kept camera. `overlay`: None or
    False, the images alone; "mano" (or True), the rendered masks tinted over; "refined", the
    refined ones; "parts", the part labels (every sequence must have them: checked before any GIF
    is written).
    GIFs go to <out_root or basedir>/gif/<split>/Capture<N>/<seq>/cam<id>.gif.
    """
    from tqdm import tqdm

    if fps <= 0 or stride < 1:
        raise InputError(f"--fps must be positive and --stride at least 1 (got {fps}, {stride})")
    capture_root = output_capture_dir(basedir, split, capture, out_root)
    if not capture_root.is_dir():
        raise InputError(f"{capture_root}: capture folder not found")
    seqs = seqs or processed_sequences(capture_root)
    if not seqs:
        raise InputError(f"{capture_root}: no processed sequence (run get_annots.py first)")
    overlay_kind(overlay)
    for seq in seqs:
        check_overlay(SequenceLayout.for_sequence(basedir, split, capture, seq, out_root), overlay)
    written = []
    for seq in tqdm(seqs, desc=f"GIFs Capture{capture}", unit="seq", disable=not progress):
        layout = SequenceLayout.for_sequence(basedir, split, capture, seq, out_root)
        cams = layout.read_cams()
        chosen = cam or (DEFAULT_CAMERA if DEFAULT_CAMERA in cams else cams[0])
        if chosen not in cams:
            raise InputError(f"{layout.cams_txt}: camera {chosen} is not among the kept cameras of {seq}")
        images = sequence_frames_rgb(layout, chosen, stride, max_width, overlay)
        path = gif_path(out_root or basedir, split, capture, seq, chosen)
        write_gif(path, images, fps)
        written.append(path)
    return written


def main(args) -> int:
    """gif / gif.py"""
    paths = make_capture_gifs(args.basedir, args.split, args.capture, out_root=args.out_root, cam=args.cam, fps=args.fps,
                              stride=args.stride, max_width=args.max_width, overlay=args.overlay, seqs=args.seq,
                              progress=not args.quiet)
    print(f"{len(paths)} GIF(s):")
    for path in paths:
        print(f"  {path}")
    return 0
