"""The figures of a processed sequence (the notebooks' figures and the docs' images): one function
per figure, arrays in and a matplotlib Figure out; `save_figure` writes a PNG at 150 dpi on an
opaque background with an SVG beside it; `figure_problems` checks a figure against the rules every
figure keeps (no text box over another, an opaque background, colour-map ends that stand out from
what they are drawn over).

Units as everywhere: world and camera coordinates in metres, images in pixels. InterHand2.6M's world
y points down (as the images' rows do); the figures say so where they draw it.

matplotlib is imported by this module only: the command-line tools do not need it (it comes with
requirements-dev.txt, for the notebooks and tests).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

try:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap, to_rgba
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import Bbox
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("interhand_prep.figures needs matplotlib (python -m pip install -r requirements-dev.txt)") from exc

from .core.constants import HAND_COLORS
from .core.fileio import atomic_path
from .core.layout import MASK_LABELS, tint_hands

DPI = 150                       # every PNG; figures are also drawn at it, so text extents match the file
FACECOLOR = "white"             # opaque: the figures go on dark and light pages alike
MIN_CONTRAST = 3.0              # WCAG 2.1 SC 1.4.11 (non-text contrast): graphics against adjacent colours
OVERLAP_TOLERANCE_PX = 1.0      # text boxes may touch (antialiasing), not overlap by more
KEPT, FILTERED = "#333333", "#E69F00"  # cameras kept / filtered: dark grey and orange, apart from the hands
THRESHOLD = "#D55E00"           # --max-joint-error and the annotated joints (Okabe-Ito vermilion)
TICK_SIZE, LABEL_SIZE, SMALL = 8, 9, 7  # points: tick labels, axis labels, camera labels and dense legends
# Depth: near is bright (yellow) and far is a mid blue-green, both at least MIN_CONTRAST from the dark
# backdrop of the images (viridis from 1.0 down to 0.4; viridis at 0 would vanish into it)
DEPTH_RANGE = (1.0, 0.4)


def hand_rgb(hand: str) -> np.ndarray:
    """A hand's colour (HAND_COLORS) as matplotlib's 0-1 RGB."""
    return np.array(HAND_COLORS[hand], float) / 255


def depth_colormap() -> ListedColormap:
    """The colour map of depth: low values (near) bright, high values (far) a mid blue-green."""
    colours = matplotlib.colormaps["viridis"](np.linspace(*DEPTH_RANGE, 256))
    return ListedColormap(colours, name="depth").with_extremes(bad=(0, 0, 0, 0))


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A Figure (inches) at DPI on an opaque background, with its own Agg canvas (no pyplot: a
    notebook shows it by displaying it, and nothing accumulates in pyplot's figure list)."""
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor=FACECOLOR, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> tuple[Path, Path]:
    """Write `fig` as a PNG at DPI (`path`; RGB, no alpha channel: opaque by construction) and as
    an SVG beside it (same name, .svg; opaque background), each atomically with the umask's mode.
    -> (png, svg)."""
    import io

    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: expected a .png path (the SVG goes beside it)")
    facecolor = to_rgba(fig.get_facecolor())[:3] + (1.0,)
    common = dict(dpi=DPI, facecolor=facecolor, edgecolor="none", transparent=False, bbox_inches="tight",
                  pad_inches=0.05)
    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", **common)
    drawn.seek(0)
    with Image.open(drawn) as rgba, atomic_path(path) as tmp:
        rgba.convert("RGB").save(tmp, format="PNG", dpi=(DPI, DPI))
    svg = path.with_suffix(".svg")
    # no date, and ids from a fixed salt: the same figure gives the same bytes (docs images in git)
    with matplotlib.rc_context({"svg.hashsalt": "interhand-prep"}), atomic_path(svg) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None}, **common)
    return path, svg


# ---------------------------------------------------------------------------------------------
# the rules


@contextlib.contextmanager
def _recording_texts(found: list) -> Iterator[None]:
    """While drawing: every Text actually drawn (visible, not empty, inside the view), with its
    window extent taken during its own draw (3D texts are only placed then). Text.draw is wrapped
    for the while: one figure at a time, not from several threads."""
    original = Text.draw

    def draw(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.get_alpha() != 0:
            box = self.get_window_extent(renderer)
            if np.isfinite(box.get_points()).all():
                found.append((self, box.frozen()))

    Text.draw = draw
    try:
        yield
    finally:
        Text.draw = original


def text_boxes(fig: Figure) -> list[tuple[Text, Bbox]]:
    """(text artist, window extent in pixels) of every text the figure draws: titles, axis and tick
    labels, legend and colour-bar texts, annotations. Draws the figure (its layout runs)."""
    found: list = []
    with _recording_texts(found):
        fig.draw_without_rendering()
    unique = {}
    for artist, box in found:  # an Annotation draws through Text.draw: keep the last extent
        unique[id(artist)] = (artist, box)
    return list(unique.values())


def _overlap(a: Bbox, b: Bbox, tolerance: float = OVERLAP_TOLERANCE_PX) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > tolerance and height > tolerance


def relative_luminance(rgb) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour (0-1 components)."""
    c = np.asarray(rgb, float)[:3]
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def contrast_ratio(a, b) -> float:
    """WCAG 2.1 contrast ratio of two colours, 1 (none) to 21 (black on white)."""
    low, high = sorted((relative_luminance(a), relative_luminance(b)))
    return (high + 0.05) / (low + 0.05)


def _image_backdrop(image: AxesImage) -> np.ndarray | None:
    """The colour a colour-mapped image is seen against where it leaves gaps (masked or NaN values,
    or alpha below 1): the median colour of the images drawn under it in its axes, else the axes'
    background. None when nothing shows through."""
    values = image.get_array()
    alpha = image.get_alpha()
    gaps = np.ma.getmaskarray(values).any() or not np.isfinite(np.ma.filled(values, 0)).all()
    if not gaps and (alpha is None or np.min(alpha) >= 1):
        return None
    ax = image.axes
    under = [im for im in ax.get_images() if im is not image and im.get_zorder() <= image.get_zorder()
             and ax.get_images().index(im) < ax.get_images().index(image) and np.ndim(im.get_array()) == 3]
    if under:
        pixels = np.asarray(under[-1].get_array(), float)
        if pixels.max() > 1:
            pixels = pixels / 255
        return np.median(pixels.reshape(-1, pixels.shape[-1])[:, :3], axis=0)
    face = to_rgba(ax.get_facecolor()) if ax.patch.get_visible() else to_rgba(ax.figure.get_facecolor())
    return np.array(face[:3])


def figure_problems(fig: Figure) -> list[str]:
    """What breaks the figure rules, one line each (empty: none):
    - the figure background is not opaque;
    - two text boxes overlap by more than OVERLAP_TOLERANCE_PX in both directions (every drawn
      text: titles, axis and tick labels, legend and colour-bar texts, annotations);
    - an end of a colour map drawn over something (an image under it, or the axes) has a contrast
      ratio below MIN_CONTRAST against it: the WCAG 2.1 minimum for graphics (SC 1.4.11), below
      which the values at that end vanish into the background.
    """
    problems = []
    face = to_rgba(fig.get_facecolor())
    if face[3] < 1 or not fig.patch.get_visible():
        problems.append(f"figure background is not opaque (facecolor {face}, visible {fig.patch.get_visible()})")
    boxes = text_boxes(fig)
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            if _overlap(box_a, box_b):
                problems.append(f"text {a.get_text()!r} overlaps {b.get_text()!r} "
                                f"({_rounded(box_a)} and {_rounded(box_b)} px)")
    for ax in fig.axes:
        for image in ax.get_images():
            if np.ndim(image.get_array()) != 2:
                continue  # RGB pictures have no colour map
            backdrop = _image_backdrop(image)
            if backdrop is None:
                continue
            alpha = 1.0 if image.get_alpha() is None else float(np.mean(image.get_alpha()))
            for end, value in (("low (near) end", 0.0), ("high (far) end", 1.0)):
                shown = alpha * np.array(image.get_cmap()(value)[:3]) + (1 - alpha) * backdrop
                ratio = contrast_ratio(shown, backdrop)
                if ratio < MIN_CONTRAST:
                    problems.append(f"colour map {image.get_cmap().name!r}: its {end} has contrast {ratio:.2f}:1 "
                                    f"against its background {np.round(backdrop, 3).tolist()} "
                                    f"(below {MIN_CONTRAST:g}:1) in {ax.get_title()!r}")
    return problems


def _rounded(box: Bbox) -> list[int]:
    return [round(v) for v in (box.x0, box.y0, box.x1, box.y1)]


# ---------------------------------------------------------------------------------------------
# helpers


def _style_3d(ax, labels: Sequence[str], nbins: int = 4) -> None:
    """Few ticks, small tick labels and axis labels clear of them on a 3D axes."""
    for axis, label in zip((ax.xaxis, ax.yaxis, ax.zaxis), labels):
        axis.set_major_locator(MaxNLocator(nbins))
        axis.set_label_text(label, fontsize=LABEL_SIZE)
        axis.labelpad = 8
    ax.tick_params(labelsize=SMALL, pad=1)


def _cube(points: np.ndarray, margin: float = 1.05) -> tuple[np.ndarray, float]:
    """(middle, half side) of the cube that holds `points` (N x 3): equal scale on every axis."""
    low, high = points.min(0), points.max(0)
    return (low + high) / 2, max(float((high - low).max()) / 2 * margin, 1e-6)


def _set_cube(ax, points: np.ndarray, margin: float = 1.05) -> None:
    middle, half = _cube(points, margin)
    ax.set(xlim=(middle[0] - half, middle[0] + half), ylim=(middle[1] - half, middle[1] + half),
           zlim=(middle[2] - half, middle[2] + half))
    ax.set_box_aspect((1, 1, 1))


def crop_box(masks: Sequence[np.ndarray | None], shape: tuple[int, int], fraction: float = 0.15,
             least: int = 10) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1), inclusive pixel bounds of everything non-zero in `masks` (H x W each; None
    skipped) with a margin of `fraction` of its larger side (at least `least` px), inside the image;
    the whole image when the masks are empty."""
    union = np.zeros(shape, bool)
    for mask in masks:
        if mask is not None:
            union |= np.asarray(mask) > 0
    if not union.any():
        return 0, shape[1] - 1, 0, shape[0] - 1
    ys, xs = np.nonzero(union)
    margin = max(least, int(fraction * max(np.ptp(ys), np.ptp(xs))))
    return (max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin, shape[1] - 1),
            max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin, shape[0] - 1))


def _panel_size(box: tuple[int, int, int, int], long_side: float) -> tuple[float, float]:
    """(width, height) in inches of a panel showing the crop `box` (x0, x1, y0, y1), its longer
    side `long_side`."""
    aspect = (box[1] - box[0] + 1) / (box[3] - box[2] + 1)
    return (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)


def _show_crop(ax, box: tuple[int, int, int, int]) -> None:
    x0, x1, y0, y1 = box
    ax.set_xlim(x0 - 0.5, x1 + 0.5)
    ax.set_ylim(y1 + 0.5, y0 - 0.5)
    ax.set_axis_off()


def _directions(outward: np.ndarray) -> list[np.ndarray]:
    """Eight unit directions, the one nearest `outward` (a 2-vector, may be zero) first."""
    angle = math.atan2(outward[1], outward[0]) if np.any(outward) else math.pi / 4
    steps = sorted(range(8), key=lambda k: abs(((k * math.pi / 4 - angle) + math.pi) % (2 * math.pi) - math.pi))
    return [np.array([math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)]) for k in steps]


def place_labels(ax, anchors: np.ndarray, texts: Sequence[str], colors: Sequence, avoid: np.ndarray | None = None,
                 taken: list[Bbox] | None = None, fontsize: float = SMALL, distances: Sequence[float] = (5.0, 12.0),
                 marker_px: float = 5.0) -> list[str]:
    """Label points of `ax` so that no label overlaps another text of the figure, another label,
    another point's marker or a point of `avoid`, and each stays inside the panel: each label tries
    eight positions around its point, the one pointing away from the points' centre first, at each
    of `distances` (points); a label that fits nowhere is left out.

    anchors : N x 2, avoid : M x 2, in the axes' data coordinates (for a 3D axes: projected, see
    `_projected`). taken : the window extents of the figure's texts (`text_boxes`, after which
    nothing may move), extended with the labels placed; default: drawn here.
    -> the texts left out (a figure can say how many cameras went unlabelled).
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    if taken is None:
        taken = [box for _, box in text_boxes(fig)]  # draws once: ticks and layout in place
    panel = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.asarray(anchors, float))
    markers = [Bbox.from_bounds(x - marker_px, y - marker_px, 2 * marker_px, 2 * marker_px) for x, y in points]
    fixed = [] if avoid is None else [Bbox.from_bounds(x - 1, y - 1, 2, 2)
                                      for x, y in ax.transData.transform(np.asarray(avoid, float).reshape(-1, 2))]
    centre = points.mean(axis=0)
    left_out = []
    # outermost first: they have the most room, and the crowded middle takes what is left
    for i in np.argsort(-np.linalg.norm(points - centre, axis=1), kind="stable"):
        placed = False
        for distance in distances:
            for direction in _directions(points[i] - centre):
                ha = "left" if direction[0] > 0.3 else "right" if direction[0] < -0.3 else "center"
                va = "bottom" if direction[1] > 0.3 else "top" if direction[1] < -0.3 else "center"
                label = ax.annotate(texts[i], anchors[i], xytext=tuple(direction * distance),
                                    textcoords="offset points", ha=ha, va=va, fontsize=fontsize, color=colors[i],
                                    annotation_clip=False)
                label.set_in_layout(False)
                box = label.get_window_extent(renderer)
                obstacles = taken + fixed + [m for j, m in enumerate(markers) if j != i]
                if (panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1
                        and not any(_overlap(box, other, 0.0) for other in obstacles)):
                    taken.append(box)
                    placed = True
                    break
                label.remove()
            if placed:
                break
        if not placed:
            left_out.append(texts[i])
    return left_out


def _projected(ax, points: np.ndarray) -> np.ndarray:
    """N x 3 data points of a 3D axes -> N x 2 in its 2D data coordinates (where annotate places);
    after the figure is drawn, so that the projection is the final layout's."""
    from mpl_toolkits.mplot3d import proj3d

    x, y, _ = proj3d.proj_transform(points[:, 0], points[:, 1], points[:, 2], ax.get_proj())
    return np.stack([x, y], axis=1)


# ---------------------------------------------------------------------------------------------
# the figures


def camera_rig(centers: np.ndarray, ids: Sequence[str], kept: np.ndarray, optical_axes: np.ndarray,
               joints: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str = "") -> Figure:
    """The cameras of a capture and the annotated joints of a frame, in 3D and seen from above.

    centers : C x 3 camera centres, world metres; ids : C camera ids; kept : (C,) bool, kept for
    the sequence; optical_axes : C x 3 unit world directions of the cameras' z axes (R[c][2]);
    joints : {hand: (J x 3 world metres, (J,) bool valid, (J,) int parent within the hand, -1 root)}.
    World y points down: the 3D panel draws it vertical and downwards (x, z level), the second
    panel looks down along it at the x-z plane (x right, z up the page: the same handedness).
    Camera labels never overlap; those without room are left out, and the legend says how many.
    """
    centers = np.asarray(centers, float)
    kept = np.asarray(kept, bool)
    tips = centers + 0.15 * np.asarray(optical_axes, float)      # optical axes drawn 15 cm long
    rig3d = lambda p: np.asarray(p)[..., [0, 2, 1]]               # noqa: E731  world (x, y, z) -> plot (x, z, y)
    fig = new_figure(12.5, 6.2)
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    top = fig.add_subplot(1, 2, 2)
    colors = [KEPT if k else FILTERED for k in kept]
    for c in range(len(centers)):
        ax.plot(*rig3d(np.stack([centers[c], tips[c]])).T, color=colors[c], linewidth=0.8)
        top.plot(*np.stack([centers[c], tips[c]])[:, [0, 2]].T, color=colors[c], linewidth=0.8)
    for sel, color, marker in ((kept, KEPT, "^"), (~kept, FILTERED, "v")):
        ax.scatter(*rig3d(centers[sel]).T, color=color, marker=marker, s=28, depthshade=False)
        top.scatter(*centers[sel][:, [0, 2]].T, color=color, marker=marker, s=28)
    everything = [centers]
    for hand, (points, valid, parents) in joints.items():
        points, valid = np.asarray(points, float), np.asarray(valid, bool)
        for j in np.flatnonzero(valid):
            p = int(parents[j])
            if 0 <= p < len(points) and valid[p]:
                ax.plot(*rig3d(points[[j, p]]).T, color=hand_rgb(hand), linewidth=1.5)
                top.plot(*points[[j, p]][:, [0, 2]].T, color=hand_rgb(hand), linewidth=1.5)
        ax.scatter(*rig3d(points[valid]).T, color=hand_rgb(hand), s=8, depthshade=False)
        top.scatter(*points[valid][:, [0, 2]].T, color=hand_rgb(hand), s=8)
        everything.append(points[valid])
    everything = np.concatenate(everything)
    _set_cube(ax, rig3d(everything))
    ax.invert_zaxis()                                             # y down
    ax.view_init(elev=25, azim=-60)
    _style_3d(ax, ("x (m)", "z (m)", "y (m), down"))
    ax.set_title("cameras and joints in world coordinates", fontsize=LABEL_SIZE + 1)
    top.set_aspect("equal", adjustable="box")
    top.set_xlabel("x (m)", fontsize=LABEL_SIZE)
    top.set_ylabel("z (m)", fontsize=LABEL_SIZE)
    top.tick_params(labelsize=TICK_SIZE)
    top.set_title("seen from above: the x-z plane, y (down) into the page", fontsize=LABEL_SIZE + 1)
    middle, half = _cube(everything, 1.12)
    top.set(xlim=(middle[0] - half, middle[0] + half), ylim=(middle[2] - half, middle[2] + half))
    handles = [Line2D([], [], color=KEPT, marker="^", linestyle="", label=f"camera kept ({kept.sum()})"),
               Line2D([], [], color=FILTERED, marker="v", linestyle="", label=f"camera filtered ({(~kept).sum()})"),
               *(Line2D([], [], color=hand_rgb(h), marker="o", markersize=4, label=f"{h} hand joints") for h in joints)]
    legend = fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=LABEL_SIZE,
                        frameon=False)
    if title:
        fig.suptitle(title, fontsize=LABEL_SIZE + 2)
    along = np.concatenate([centers + f * (tips - centers) for f in (0.33, 0.67, 1.0)])  # labels keep off the axes
    taken = [box for _, box in text_boxes(fig)]                   # one draw: the layout is final from here
    left_out = place_labels(top, centers[:, [0, 2]], list(ids), colors, avoid=along[:, [0, 2]], taken=taken)
    left_out_3d = place_labels(ax, _projected(ax, rig3d(centers)), list(ids), colors,
                               avoid=_projected(ax, rig3d(along)), taken=taken)
    if left_out or left_out_3d:
        legend.get_texts()[0].set_text(f"camera kept ({kept.sum()}); labels left out where crowded: "
                                       f"{len(left_out_3d)} in 3D, {len(left_out)} from above")
    return fig


def mesh_projection(image: np.ndarray, pixels: np.ndarray, faces: np.ndarray, hand: str, title: str = "") -> Figure:
    """The image, and the MANO mesh projected onto it.

    image : H x W x 3 uint8; pixels : V x 2 projected vertices (px); faces : F x 3.
    """
    height, width = image.shape[:2]
    fig = new_figure(2 * 4.2 * width / max(height, width) + 0.4, 4.2 * height / max(height, width) + 0.9)
    axes = fig.subplots(1, 2)
    axes[0].imshow(image)
    axes[0].set_title("the image", fontsize=LABEL_SIZE + 1)
    axes[1].imshow(image)
    axes[1].triplot(pixels[:, 0], pixels[:, 1], faces, linewidth=0.25, color=hand_rgb(hand))
    axes[1].set_title("the MANO mesh projected with K, R, T", fontsize=LABEL_SIZE + 1)
    for ax in axes:
        _show_crop(ax, (0, width - 1, 0, height - 1))
    fig.legend(handles=[Line2D([], [], color=hand_rgb(hand), label=f"{hand} hand mesh")], loc="outside lower center",
               fontsize=LABEL_SIZE, frameon=False)
    if title:
        fig.suptitle(title, fontsize=LABEL_SIZE + 2)
    return fig


def mesh_coordinates(panels: Sequence[tuple[np.ndarray, str, bool]], faces: np.ndarray, hand: str,
                     title: str = "") -> Figure:
    """One hand's mesh in several coordinate frames, a 3D panel each (equal scale on every axis).

    panels : [(V x 3 metres, panel title, y_down)]; faces : F x 3. y_down: the frame's y points
    down (world and camera frames): drawn vertical and downwards, as in the images.
    """
    fig = new_figure(4.4 * len(panels), 4.6)
    for k, (points, name, y_down) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1, projection="3d")
        order = [0, 2, 1] if y_down else [0, 1, 2]
        shown = np.asarray(points)[:, order]
        ax.plot_trisurf(*shown.T, triangles=faces, color=hand_rgb(hand), alpha=0.6, linewidth=0.05, edgecolor="k")
        _set_cube(ax, shown)
        if y_down:
            ax.invert_zaxis()
        _style_3d(ax, ("x (m)", "z (m)", "y (m), down") if y_down else ("x (m)", "y (m)", "z (m)"), nbins=3)
        ax.set_title(name, fontsize=LABEL_SIZE)
    if title:
        fig.suptitle(title, fontsize=LABEL_SIZE + 2)
    return fig


def tpose(tvertices: np.ndarray, tjoints: np.ndarray, faces: np.ndarray, parents: np.ndarray, hand: str) -> Figure:
    """The canonical (T-pose) mesh and its joints. tvertices : V x 3, tjoints : J x 3 (metres),
    faces : F x 3, parents : (J,) (-1 for the root)."""
    fig = new_figure(6.0, 6.0)
    ax = fig.add_subplot(projection="3d")
    ax.plot_trisurf(*np.asarray(tvertices).T, triangles=faces, color="lightgray", alpha=0.35, linewidth=0)
    ax.scatter(*np.asarray(tjoints).T, color=hand_rgb(hand), s=20, depthshade=False)
    for j, p in enumerate(parents):
        if p >= 0:
            ax.plot(*np.asarray(tjoints)[[j, p]].T, color=hand_rgb(hand), linewidth=2)
    _set_cube(ax, np.asarray(tvertices))
    _style_3d(ax, ("x (m)", "y (m)", "z (m)"), nbins=4)
    ax.set_title(f"the canonical (T-pose) {hand} hand", fontsize=LABEL_SIZE + 2)
    fig.legend(handles=[Patch(color="lightgray", label="canonical mesh (tvertices)"),
                        Line2D([], [], color=hand_rgb(hand), marker="o", label="joints of the first kept frame's shape")],
               loc="outside lower center", ncols=2, fontsize=LABEL_SIZE, frameon=False)
    return fig


def blend_weights(tbw: np.ndarray, grid: Sequence[np.ndarray], voxel: float, hand: str,
                  k: int | None = None) -> Figure:
    """A slice across z of the canonical blend-weight grid: the joint of the largest weight (in
    the part colours of parts.json) and the distance to the surface.

    tbw : X x Y x Z x 17 (16 weights, then the distance in metres); grid : the x, y, z coordinates
    of its points (metres); k : the z index (default: the middle).
    """
    from .core import parts as part_table

    k = len(grid[2]) // 2 if k is None else k
    x, y = grid[0], grid[1]
    extent = (x[0] - voxel / 2, x[-1] + voxel / 2, y[0] - voxel / 2, y[-1] + voxel / 2)
    dominant = np.argmax(tbw[:, :, k, :part_table.PARTS_PER_HAND], axis=-1).T      # Y x X joints
    first = part_table.FIRST_LABEL[hand]
    colours = part_table.LABEL_COLOURS[first:first + part_table.PARTS_PER_HAND] / 255.0
    names = [row["name"].removeprefix(f"{hand} ") for row in part_table.PART_TABLE[first:first + part_table.PARTS_PER_HAND]]
    aspect = (extent[1] - extent[0]) / (extent[3] - extent[2])
    panel = 3.6
    fig = new_figure(2 * panel * aspect + 1.4, panel + 1.6, layout="compressed")
    axes = fig.subplots(1, 2)
    axes[0].imshow(colours[dominant], origin="lower", extent=extent, interpolation="nearest")
    axes[0].set_title(f"joint of the largest weight, z = {grid[2][k]:.3f} m", fontsize=LABEL_SIZE)
    distance = axes[1].imshow(tbw[:, :, k, -1].T, origin="lower", extent=extent, cmap="viridis",
                              interpolation="nearest")
    fig.colorbar(distance, ax=axes[1], label="distance to the surface (m)", shrink=0.9)
    axes[1].set_title("distance to the closest surface point", fontsize=LABEL_SIZE)
    for ax in axes:
        ax.set_xlabel("x (m)", fontsize=LABEL_SIZE)
        ax.set_ylabel("y (m)", fontsize=LABEL_SIZE)
        ax.tick_params(labelsize=TICK_SIZE)
        ax.xaxis.set_major_locator(MaxNLocator(5))
    shown = np.unique(dominant)
    fig.legend(handles=[Patch(color=colours[j], label=names[j]) for j in shown], loc="outside lower center",
               ncols=min(len(shown), 6), fontsize=SMALL, title="largest weight", title_fontsize=SMALL, frameon=False)
    fig.suptitle(f"canonical blend-weight grid (tbw) of the {hand} hand, a slice across z (voxel {voxel:g} m)",
                 fontsize=LABEL_SIZE + 1)
    return fig


def tint_masks(image: np.ndarray, mask: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """image H x W x 3 uint8, mask H x W (MASK_LABELS) -> the hands tinted in their colours (uint8)."""
    return tint_hands(image, mask, weight)


def mask_depth(image: np.ndarray, mask: np.ndarray, depth: np.ndarray | None, title: str = "",
               panel: float = 4.0) -> Figure:
    """Mask and depth over the image, both panels cropped alike around the hands and the same size.

    image : H x W x 3 uint8; mask : H x W (MASK_LABELS); depth : H x W metres (0: no hand) or None.
    The depth panel shows the image in grey and the depth over it (near bright), with a colour bar
    in metres. panel : the panels' height in inches.
    """
    box = crop_box([mask, depth], mask.shape)
    aspect = (box[1] - box[0] + 1) / (box[3] - box[2] + 1)
    fig = new_figure(2 * panel * aspect + 1.3, panel + 1.0, layout="compressed")
    axes = fig.subplots(1, 2)
    axes[0].imshow(tint_masks(image, mask))
    axes[0].set_title("mask over the image", fontsize=LABEL_SIZE + 1)
    grey = (image.astype(float) @ [0.299, 0.587, 0.114]) * 0.6
    axes[1].imshow(np.repeat(grey[..., None], 3, axis=2).astype(np.uint8))
    if depth is not None and (depth > 0).any():
        shown = axes[1].imshow(np.ma.masked_less_equal(depth, 0), cmap=depth_colormap(), interpolation="nearest",
                               vmin=float(depth[depth > 0].min()), vmax=float(depth.max()))
        bar = fig.colorbar(shown, ax=list(axes), shrink=0.85, pad=0.02)
        bar.set_label("depth: z in the camera frame (m)", fontsize=LABEL_SIZE)
        bar.ax.tick_params(labelsize=TICK_SIZE)
    axes[1].set_title("depth over the image (in grey)", fontsize=LABEL_SIZE + 1)
    for ax in axes:
        _show_crop(ax, box)
    present = [h for h, label in MASK_LABELS.items() if (mask == label).any()]
    fig.legend(handles=[Patch(color=hand_rgb(h), label=f"{h} hand") for h in sorted(present, reverse=True)],
               loc="outside lower center", ncols=2, fontsize=LABEL_SIZE, frameon=False)
    if title:
        fig.suptitle(title, fontsize=LABEL_SIZE + 2)
    return fig


def mask_outlines(image: np.ndarray, mask: np.ndarray, refined: np.ndarray | None, title: str = "") -> Figure:
    """The hand zoomed in, with the MANO mask's outline (white, dashed) and the refined mask's
    (the hand's colour, solid) where there is one. mask, refined : H x W (MASK_LABELS)."""
    box = crop_box([mask, refined], mask.shape)
    width, height = _panel_size(box, 5.0)
    fig = new_figure(width + 0.2, height + 0.9)
    ax = fig.subplots()
    ax.imshow(image)
    handles = []
    for hand, label in MASK_LABELS.items():   # refined: the hand's colour, solid; MANO: white, dashed, on top
        for labels, color, style, width, what in ((refined, hand_rgb(hand), "-", 2.5, f"{hand} hand refined (mask_cihp/)"),
                                                  (mask, "white", "--", 1.0, "MANO (mask/)")):
            if labels is not None and (labels == label).any():
                ax.contour((labels == label).astype(float), levels=[0.5], colors=[color], linestyles=style,
                           linewidths=width)
                if what not in [h.get_label() for h in handles]:
                    handles.append(Line2D([], [], color=color, linestyle=style, linewidth=width, label=what))
    _show_crop(ax, box)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 2), fontsize=SMALL,
                   facecolor="lightgray")
    if title:
        ax.set_title(title, fontsize=LABEL_SIZE)
    return fig


def part_labels(image: np.ndarray, labels: np.ndarray, table: Mapping[int, Mapping], title: str = "",
                panel: float = 4.2) -> Figure:
    """The part labels over the image and alone, cropped around the hands, with the legend of the
    parts in view. labels : H x W uint8 (parts.json's labels); table : {label: parts.json row};
    panel : the panels' height in inches."""
    colours = np.zeros((256, 3))
    for label, row in table.items():
        colours[int(label)] = np.array(row["color"]) / 255
    shown = labels > 0
    tinted = image / 255.0
    tinted[shown] = 0.3 * tinted[shown] + 0.7 * colours[labels[shown]]
    box = crop_box([labels], labels.shape)
    aspect = (box[1] - box[0] + 1) / (box[3] - box[2] + 1)
    present = [int(v) for v in np.unique(labels) if v > 0]
    columns = max(1, math.ceil(len(present) * 0.16 / (panel + 0.2)))   # legend rows of 0.16 in, beside the panels
    fig = new_figure(2 * panel * aspect + 0.3 + 1.75 * columns, panel + 0.6, layout="compressed")
    axes = fig.subplots(1, 2)
    for ax, picture, name in ((axes[0], tinted, "part labels over the image"), (axes[1], colours[labels], "parts/ alone")):
        ax.imshow(picture)
        _show_crop(ax, box)
        ax.set_title(name, fontsize=LABEL_SIZE + 1)
    fig.legend(handles=[Patch(color=colours[v], label=f"{v}: {table[v]['name']}") for v in present],
               loc="outside right center", fontsize=SMALL, ncols=columns)
    if title:
        fig.suptitle(title, fontsize=LABEL_SIZE + 2)
    return fig


def fit_error(rows: Sequence[tuple], threshold: float | None = None, kept_frames: Sequence[int] | None = None) -> Figure:
    """The MANO fit's mean joint error per frame and hand (fit_quality.csv rows: frame, hand, mean
    mm, max mm, valid joints), the --max-joint-error threshold as a labelled dashed line when set,
    and frames not kept (`kept_frames` given) ringed."""
    fig = new_figure(9.0, 3.6)
    ax = fig.subplots()
    kept = set(kept_frames) if kept_frames is not None else None
    dropped_drawn = False
    for hand in ("right", "left"):
        mine = np.array([(f, m) for f, h, m, *_ in rows if h == hand and np.isfinite(m)], float).reshape(-1, 2)
        if not len(mine):
            continue
        mine = mine[np.argsort(mine[:, 0])]
        gaps = np.flatnonzero(np.diff(mine[:, 0]) > 1) + 1          # no line across frames that are absent
        ax.plot(*np.insert(mine, gaps, np.nan, axis=0).T, marker=".", color=hand_rgb(hand), label=f"{hand} hand")
        if kept is not None:
            out = np.array([f not in kept for f in mine[:, 0]])
            if out.any():
                ax.scatter(*mine[out].T, s=70, facecolors="none", edgecolors=THRESHOLD, linewidths=1.2, zorder=3,
                           label=None if dropped_drawn else "frame dropped")
                dropped_drawn = True
    if threshold is not None:
        ax.axhline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.2,
                   label=f"--max-joint-error {threshold:g} mm")
    ax.set_xlabel("frame", fontsize=LABEL_SIZE)
    ax.set_ylabel("mean joint error (mm)", fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_title("MANO fit against the annotated joints, per frame", fontsize=LABEL_SIZE + 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=LABEL_SIZE, frameon=False)
    return fig


def fit_worst_frame(image: np.ndarray, fitted_px: np.ndarray, annotated_px: np.ndarray, valid: np.ndarray,
                    hand: str, title: str = "") -> Figure:
    """The worst frame's fitted joints (MANO through the joint regressor) and annotated joints,
    projected into the image and paired by lines. fitted_px : J x 2, annotated_px : J x 2 (px),
    valid : (J,) bool annotated joints that are valid."""
    valid = np.asarray(valid, bool)
    points = np.concatenate([fitted_px, annotated_px[valid]])
    height, width = image.shape[:2]
    inside = points[(points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)]
    if len(inside):
        spread = max(float(np.ptp(inside[:, 0])), float(np.ptp(inside[:, 1])))
        margin = max(20, int(0.4 * spread))
        box = (max(int(inside[:, 0].min()) - margin, 0), min(int(inside[:, 0].max()) + margin, width - 1),
               max(int(inside[:, 1].min()) - margin, 0), min(int(inside[:, 1].max()) + margin, height - 1))
    else:
        box = (0, width - 1, 0, height - 1)
    width, height = _panel_size(box, 5.0)
    fig = new_figure(max(width, 3.6) + 0.2, height + 0.9)
    ax = fig.subplots()
    ax.imshow(image)
    for a, b in zip(fitted_px[valid], annotated_px[valid]):
        ax.plot(*np.stack([a, b]).T, color="white", linewidth=0.8)
    ax.scatter(*np.asarray(fitted_px).T, color=hand_rgb(hand), s=18, label="MANO fit (InterHand2.6M's joint regressor)")
    ax.scatter(*np.asarray(annotated_px)[valid].T, color=THRESHOLD, marker="x", s=24, label="annotated joints (joint_3d)")
    _show_crop(ax, box)
    fig.legend(loc="outside lower center", fontsize=SMALL, ncols=1, frameon=False)
    if title:
        ax.set_title(title, fontsize=LABEL_SIZE)
    return fig
