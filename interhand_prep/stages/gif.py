"""GIF previews of processed sequences, optionally with masks tinted over the images: the rendered
MANO masks (mask/; --overlay or --overlay mano), the masks refined against the images
(mask_cihp/ of refine_masks; --overlay refined) or the part labels (parts/ of render_mesh
--parts; --overlay parts, in the colours of parts.json). Every frame carries its camera and frame
number in the bottom-left corner; tinted masks have a key of the hands' colours in the top-left."""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import parts as part_table
from ..core.constants import HAND_COLORS
from ..core.errors import InputError
from ..core.fileio import write_bytes
from ..core.layout import SequenceLayout, decode_mask, tint_hands, gif_path, output_capture_dir, processed_sequences

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
    return tint_hands(image, mask, OVERLAY_ALPHA)


def overlay_parts(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """image HxWx3 uint8, part labels HxW uint8 -> image with each part's pixels tinted its colour."""
    out = image.astype(np.float32)
    hand = labels > 0
    colours = part_table.LABEL_COLOURS[labels[hand]].astype(np.float32)
    out[hand] = (1 - OVERLAY_ALPHA) * out[hand] + OVERLAY_ALPHA * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# The corner texts (the hands' key, the camera and frame) must read at 1x: a font of at least
# LABEL_MIN_PX pixels (Pillow's bitmap default is 11 px, its capitals 6), larger on larger frames.
LABEL_MIN_PX = 12
LABEL_MARGIN = 4  # px from the frame's edges


def label_size(height: int) -> int:
    """The corner texts' font size (px) on a frame `height` pixels tall."""
    return max(LABEL_MIN_PX, round(height / 32))


@functools.lru_cache(maxsize=None)
def label_font(size: int):
    """Pillow's own scalable font (Aileron) at `size` px; its bitmap font where Pillow lacks FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError, AttributeError):  # no FreeType, or Pillow < 10.1
        return ImageFont.load_default()


def frame_label(cam: str, frame: int) -> str:
    """The text in the corner of every GIF frame."""
    return f"cam{cam}  frame {frame}"


def _stroke(size: int) -> int:
    return max(1, size // 12)


def _text_box(text: str, size: int) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of `text` drawn at (0, 0), outline included."""
    from PIL import ImageDraw

    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return scratch.multiline_textbbox((0, 0), text, font=label_font(size), stroke_width=_stroke(size))


def _text(draw, xy: tuple[float, float], text: str, size: int, align: str) -> None:
    """White text outlined in black (readable on any image) at `xy`: its bottom-left corner
    (align "bottom-left") or its left end, centred vertically (align "left-middle")."""
    x0, y0, _, y1 = _text_box(text, size)
    y = xy[1] - y1 if align == "bottom-left" else xy[1] - (y0 + y1) / 2
    draw.multiline_text((xy[0] - x0, y), text, font=label_font(size), fill=(255, 255, 255),
                        stroke_width=_stroke(size), stroke_fill=(0, 0, 0))


def fitted_label(text: str, height: int, width: int) -> tuple[str, int]:
    """(text, font size) of a corner label that fits across a frame: on one line, else its parts
    (split at two spaces) on lines of their own, else smaller (narrow test frames only)."""
    size = label_size(height)
    room = width - 2 * LABEL_MARGIN
    lines = text.replace("  ", "\n")
    while True:
        for candidate in (text, lines):
            x0, _, x1, _ = _text_box(candidate, size)
            if x1 - x0 <= room or size <= 6:
                return candidate, size
        size -= 1


def label_box(shape: tuple[int, ...], text: str) -> tuple[int, int, int, int]:
    """The pixels (x0, y0, x1, y1, inclusive) that `draw_label` may change for `text` on a frame
    of `shape` (H, W, ...)."""
    text, size = fitted_label(text, shape[0], shape[1])
    x0, y0, x1, y1 = _text_box(text, size)
    return LABEL_MARGIN, shape[0] - LABEL_MARGIN - (y1 - y0), LABEL_MARGIN + (x1 - x0), shape[0] - LABEL_MARGIN


def draw_label(image: np.ndarray, text: str) -> np.ndarray:
    """`text` in the bottom-left corner (the camera and frame: `frame_label`)."""
    from PIL import ImageDraw

    text, size = fitted_label(text, image.shape[0], image.shape[1])
    canvas = Image.fromarray(image)
    _text(ImageDraw.Draw(canvas), (LABEL_MARGIN, image.shape[0] - LABEL_MARGIN), text, size, "bottom-left")
    return np.asarray(canvas)


def legend_rows(height: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(hand, swatch box (x0, y0, x1, y1), inclusive) of the key's rows in the top-left corner; on
    frames under 400 px tall (12 px text): swatches 11 px square, 14 px apart, from 4 px."""
    size = label_size(height)
    side, pitch = size - 2, size + 2
    return [(hand, (LABEL_MARGIN, LABEL_MARGIN + pitch * row, LABEL_MARGIN + side, LABEL_MARGIN + pitch * row + side))
            for row, hand in enumerate(("left", "right"))]


def legend_box(height: int) -> tuple[int, int, int, int]:
    """The pixels (x0, y0, x1, y1, inclusive) that `draw_legend` may change on a frame `height`
    pixels tall."""
    size = label_size(height)
    right = bottom = 0
    for hand, (_, y0, x1, y1) in legend_rows(height):
        left, top, end, low = _text_box(hand, size)   # the name: after the swatch, centred on it
        right = max(right, x1 + 4 + end - left)
        bottom = max(bottom, y1, math.ceil((y0 + y1 + 1 + low - top) / 2))
    return 0, 0, right + 1, bottom + 1


def draw_legend(image: np.ndarray) -> np.ndarray:
    """The hands' colours and names in the top-left corner (a key for the tinted previews)."""
    from PIL import ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for hand, (x0, y0, x1, y1) in legend_rows(image.shape[0]):
        draw.rectangle((x0, y0, x1, y1), fill=HAND_COLORS[hand], outline=(255, 255, 255))
        _text(draw, (x1 + 4, (y0 + y1 + 1) / 2), hand, label_size(image.shape[0]), "left-middle")
    return np.asarray(canvas)


def check_overlay(layout: SequenceLayout, overlay: bool | str | None) -> None:
    """A one-line error when the sequence has no masks of the kind --overlay asks for."""
    kind = overlay_kind(overlay)
    if kind is not None and not (layout.root / kind).is_dir():
        other = ", or use --overlay mano" if kind != OVERLAY_KINDS["mano"] else ""
        raise InputError(f"{layout.root}: no {DESCRIBED[kind]} to overlay; run {WRITTEN_BY[kind]} on it first{other}")


def sequence_frames_rgb(layout: SequenceLayout, cam: str, stride: int = 1, max_width: int | None = None,
                        overlay: bool | str | None = False) -> list[np.ndarray]:
    """The frames of one camera as RGB arrays, the camera and frame in a corner of each; `overlay`
    (mano, refined, parts; True: mano) tints masks over, with a key of the hands' colours."""
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
        array = draw_label(array, frame_label(cam, frame))
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
