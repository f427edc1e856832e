"""Part labels: which bone of which hand a vertex, a face or a pixel belongs to.

A part per MANO joint. A vertex belongs to the joint of its largest skinning weight (the first
of equal ones), a face to the part most of its three vertices belong to (three different parts:
the lowest joint index). HandAvatar's PairOF partitions the MANO surface the same way.

Labels (the pixels of parts/cam<id>/image<frame>.png):
    0                background
    1 + j            the right hand's joint j
    17 + j           the left hand's joint j
with MANO's joint order j: 0 wrist/palm, 1-3 index, 4-6 middle, 7-9 little, 10-12 ring,
13-15 thumb (each finger from the palm outwards). `PART_TABLE` is the one table of them; it is
written beside the outputs as parts.json.
"""

from __future__ import annotations

import json

import numpy as np

from .layout import MASK_LABELS

PARTS_PER_HAND = 16
FIRST_LABEL = {"right": 1, "left": 1 + PARTS_PER_HAND}
NUM_LABELS = 1 + 2 * PARTS_PER_HAND  # with background

# MANO's joints in order, and the colour of each in figures (RGB, right hand): a hue per finger,
# lighter towards the tip; the left hand's are the same hues darker (`_left_colour`).
_JOINTS = (
    ("palm", (128, 128, 128)),
    ("index proximal", (0, 90, 160)), ("index middle", (40, 130, 210)), ("index distal", (120, 185, 245)),
    ("middle proximal", (0, 120, 80)), ("middle middle", (30, 170, 110)), ("middle distal", (120, 220, 170)),
    ("little proximal", (150, 40, 140)), ("little middle", (200, 80, 190)), ("little distal", (240, 160, 235)),
    ("ring proximal", (170, 120, 0)), ("ring middle", (220, 170, 20)), ("ring distal", (250, 215, 110)),
    ("thumb proximal", (170, 50, 30)), ("thumb middle", (220, 90, 60)), ("thumb distal", (250, 160, 140)),
)


def _left_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(round(0.6 * c)) for c in rgb)


def part_label(hand: str, joint: int) -> int:
    """The label of `hand`'s part of MANO joint `joint` (0-15)."""
    if not 0 <= joint < PARTS_PER_HAND:
        raise ValueError(f"joint {joint} is not a MANO joint (0-{PARTS_PER_HAND - 1})")
    return FIRST_LABEL[hand] + int(joint)


# One row per label: label, hand ("" for the background), MANO joint (-1 for the background), name,
# display colour (RGB).
PART_TABLE: tuple[dict, ...] = (
    {"label": 0, "hand": "", "joint": -1, "name": "background", "color": [0, 0, 0]},
    *({"label": part_label(hand, j), "hand": hand, "joint": j, "name": f"{hand} {name}",
       "color": list(colour if hand == "right" else _left_colour(colour))}
      for hand in ("right", "left") for j, (name, colour) in enumerate(_JOINTS)),
)

# label -> the MASK_LABELS value of its hand (0 for the background)
LABEL_TO_MASK = np.zeros(256, np.uint8)
for _row in PART_TABLE[1:]:
    LABEL_TO_MASK[_row["label"]] = MASK_LABELS[_row["hand"]]
# label -> display colour, (256, 3) uint8 (labels outside the table: magenta, loud in a figure)
LABEL_COLOURS = np.tile(np.array([255, 0, 255], np.uint8), (256, 1))
for _row in PART_TABLE:
    LABEL_COLOURS[_row["label"]] = _row["color"]


def vertex_parts(weights: np.ndarray) -> np.ndarray:
    """Skinning weights V x 16 -> the joint of each vertex's largest weight, (V,) int64 (0-15;
    the lowest joint among equal largest weights)."""
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[1] != PARTS_PER_HAND:
        raise ValueError(f"expected skinning weights of shape (V, {PARTS_PER_HAND}), got {weights.shape}")
    return np.argmax(weights, axis=1).astype(np.int64)


def face_parts(faces: np.ndarray, vertex_part: np.ndarray) -> np.ndarray:
    """Faces F x 3 (vertex indices) and the vertices' joints (V,) -> each face's joint, (F,) int64:
    the joint of at least two of its vertices, else the lowest of the three."""
    a, b, c = np.asarray(vertex_part)[np.asarray(faces)].T
    return np.where((a == b) | (a == c), a, np.where(b == c, b, np.minimum(np.minimum(a, b), c))).astype(np.int64)


def parts_to_mask(parts: np.ndarray) -> np.ndarray:
    """A part-label image (H, W) uint8 -> the hand mask it implies (0, 100 left, 200 right)."""
    return LABEL_TO_MASK[np.asarray(parts, dtype=np.uint8)]


def parts_json() -> str:
    """parts.json: the label table, with the labelling rule, as a JSON document."""
    return json.dumps({
        "rule": "vertex: the MANO joint of its largest skinning weight (lowest joint on ties); face: the part "
                "of at least two of its vertices, else the lowest joint of the three; pixel: the part of the "
                "nearest face through its centre",
        "labels": "0 background, 1 + joint for the right hand, 17 + joint for the left hand",
        "parts": list(PART_TABLE),
    }, indent=1) + "\n"
