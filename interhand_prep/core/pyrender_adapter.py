"""The pyrender and PyOpenGL internals the GL renderer relies on, all of them, in one place.

Written against pyrender2 0.2.2 (pyrender 0.1.45's code) and PyOpenGL 3.1.10. `problems()` lists
what no longer holds in the installed versions; a test fails on any, so an upgrade that changes
them fails loudly instead of rendering wrong images.

1. Stable context ids. pyrender keys its shader-program cache on
   `OpenGL.contextdata.getContext()`. Under OSMesa, PyOpenGL returns a new ctypes pointer object
   on every call, hashed by identity, so pyrender compiled and linked a new shader program for
   every draw (memory grew by ~0.2 MB per draw, each view took ~50% longer). `stable_context_ids`
   makes the id the pointer's address: one program per context.
2. Driving the renderer directly. `OffscreenRenderer.render` makes its context current twice per
   call and always draws the whole image. `activate` makes the context current once per image
   size (OSMesa's buffer has a fixed size: it is recreated on a size change) and `draw` runs
   pyrender's `Renderer.render` with a scissor box (the crop around the hands), reading back only
   the box with the depth arithmetic of `Renderer.read_depth_buf`.
3. A loud segmentation colour. pyrender's `ShaderProgram.set_uniform` swallows every exception;
   a 'color' update that failed would leave the previous hand's colour, so `draw` sets that
   uniform itself (raising on failure) and clears any GL error left pending before it.
4. Pixel centres in every mode. pyrender enables multisampling for every mode but segmentation;
   into EGL's 4-sample framebuffer an unlit render (the part labels, drawn as vertex colours) would
   then average labels along every edge. `draw` keeps multisampling off while it renders (a
   fragment then covers all samples of a pixel whose centre it covers, as in segmentation mode),
   by standing in for the `glEnable` that pyrender's renderer module calls.
"""

from __future__ import annotations

import contextlib
import inspect
import logging

import numpy as np

log = logging.getLogger(__name__)
# PyOpenGL says at INFO level, at its first import in every process, that its optional C accelerator
# is absent; rendering does not need it, so in every render's output that line is noise
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)


def stable_context_ids() -> None:
    """Make PyOpenGL's current-context id the context pointer's address (once per process)."""
    import ctypes

    import OpenGL.contextdata as contextdata

    if getattr(contextdata.getContext, "_stable", False):
        return
    original = contextdata.getContext

    def getContext(context=None):
        handle = original(context)
        if isinstance(handle, int):
            return handle
        try:
            return ctypes.cast(handle, ctypes.c_void_p).value or handle
        except (TypeError, ctypes.ArgumentError):
            return handle

    getContext._stable = True
    contextdata.getContext = getContext


def uses_framebuffers(offscreen) -> bool:
    """EGL renders into framebuffer objects; OSMesa into its own fixed-size buffer."""
    return offscreen._platform.supports_framebuffers()


def activate(offscreen, size: tuple[int, int]) -> None:
    """Make `offscreen`'s context current for images of `size` (width, height)."""
    offscreen.viewport_width, offscreen.viewport_height = size
    if not uses_framebuffers(offscreen):  # OSMesa: a new buffer of the new size
        offscreen.delete()
        offscreen._create()
    offscreen._platform.make_current()


def draw(offscreen, scene, flags, seg_node_map: dict, size: tuple[int, int],
         box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render `scene` with `flags` at the full image size (width, height) -> the first colour channel
    (h, w) uint8 and linear depth (h, w) float32 (0: nothing) of the whole image, or of `box`
    (x0, y0, x1, y1; pixels, y down) only. With a box (OSMesa), rasterisation and read-back are
    limited to it by the scissor test, over the full-size viewport and projection: its pixels are
    those of a full render, bit for bit.

    A GL error left pending by anything before (PyOpenGL raises it at the next checked call) is
    cleared and logged first, and a segmentation colour that cannot be set raises: pyrender's
    `set_uniform` swallows every exception, which would draw a hand with the previous hand's
    colour (a mask with both hands under one label)."""
    import pyrender
    from OpenGL import GL

    _clear_pending_errors()
    _loud_colour_uniform()
    renderer = offscreen._renderer
    width, height = size
    renderer.viewport_width, renderer.viewport_height = width, height
    if uses_framebuffers(offscreen):
        if box is not None:
            raise ValueError("boxes are drawn with OSMesa only")
        with _centre_sampling():
            color, depth = renderer.render(scene, flags | pyrender.RenderFlags.OFFSCREEN, seg_node_map)
        return np.ascontiguousarray(color[..., 0]), depth
    x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
    w, h = x1 - x0, y1 - y0
    GL.glEnable(GL.GL_SCISSOR_TEST)
    GL.glScissor(x0, height - y1, w, h)  # GL rows count from the bottom
    try:
        with _centre_sampling():
            renderer.render(scene, flags, seg_node_map)
    finally:
        GL.glDisable(GL.GL_SCISSOR_TEST)
    GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, 0)
    GL.glReadBuffer(GL.GL_FRONT)
    labels = np.frombuffer(GL.glReadPixels(x0, height - y1, w, h, GL.GL_RED, GL.GL_UNSIGNED_BYTE), np.uint8)
    depth = np.frombuffer(GL.glReadPixels(x0, height - y1, w, h, GL.GL_DEPTH_COMPONENT, GL.GL_FLOAT), np.float32)
    labels = np.ascontiguousarray(labels.reshape(h, w)[::-1])
    return labels, linear_depth(depth.reshape(h, w)[::-1], renderer._latest_znear, renderer._latest_zfar)


@contextlib.contextmanager
def _centre_sampling():
    """While pyrender renders: its renderer module's glEnable(GL_MULTISAMPLE) disables it instead."""
    from OpenGL import GL
    from pyrender import renderer as module

    original = module.glEnable

    def glEnable(capability):
        if capability == GL.GL_MULTISAMPLE:
            return GL.glDisable(capability)
        return original(capability)

    module.glEnable = glEnable
    try:
        yield
    finally:
        module.glEnable = original


def linear_depth(buffer: np.ndarray, z_near: float, z_far: float) -> np.ndarray:
    """Depth-buffer values (h, w) in [0, 1] -> z in scene units, 0 where nothing was drawn: the
    arithmetic of pyrender's `Renderer.read_depth_buf` (float32, same order), so that a box and a
    whole image agree bit for bit."""
    depth = np.array(buffer, dtype=np.float32)
    empty = depth == 1.0
    depth = 2.0 * depth - 1.0
    drawn = ~empty
    depth[drawn] = (2.0 * z_near * z_far) / (z_far + z_near - depth[drawn] * (z_far - z_near))
    depth[empty] = 0.0
    return depth


def _clear_pending_errors() -> None:
    from OpenGL import GL

    for _ in range(16):  # GL keeps at most one flag per error kind
        error = GL.glGetError()
        if error == GL.GL_NO_ERROR:
            return
        log.warning("a GL error was pending before drawing (0x%04x); cleared", int(error))


_loud_colour_installed = False


def _loud_colour_uniform() -> None:
    """Let a failure to set the 'color' uniform raise (once per process)."""
    global _loud_colour_installed
    from pyrender.shader_program import ShaderProgram

    if _loud_colour_installed:
        return
    _loud_colour_installed = True
    original = ShaderProgram.set_uniform

    def set_uniform(self, name, value, unsigned=False):
        if name != "color":
            return original(self, name, value, unsigned)
        from OpenGL import GL

        location = GL.glGetUniformLocation(self._program_id, name)
        if location == -1:
            raise RuntimeError("the segmentation shader has no 'color' uniform")
        GL.glUniform3fv(location, 1, np.asarray(value, dtype=np.float32).reshape(3))

    ShaderProgram.set_uniform = set_uniform


def problems() -> list[str]:
    """What the adapter relies on and the installed pyrender / PyOpenGL no longer provides."""
    import OpenGL.contextdata as contextdata
    import pyrender
    from pyrender import offscreen, renderer

    found = []
    if not callable(getattr(contextdata, "getContext", None)):
        found.append("OpenGL.contextdata.getContext is gone")
    params = list(inspect.signature(renderer.Renderer.render).parameters)
    if params[:4] != ["self", "scene", "flags", "seg_node_map"]:
        found.append(f"pyrender Renderer.render takes {params}, not (self, scene, flags, seg_node_map)")
    for name in ("read_color_buf", "read_depth_buf"):
        if not callable(getattr(renderer.Renderer, name, None)):
            found.append(f"pyrender Renderer.{name} is gone")
    source = inspect.getsource(offscreen.OffscreenRenderer)
    for needed in ("self._platform", "self._renderer", "def _create", "supports_framebuffers()", "make_current()",
                   "self._renderer.viewport_width"):
        if needed not in source:
            found.append(f"pyrender OffscreenRenderer no longer uses {needed!r}")
    if "getContext()" not in inspect.getsource(pyrender.shader_program):
        found.append("pyrender no longer keys its shader cache on OpenGL.contextdata.getContext()")
    for flag in ("SEG", "OFFSCREEN", "FLAT"):
        if not hasattr(pyrender.RenderFlags, flag):
            found.append(f"pyrender.RenderFlags.{flag} is gone")
    source = inspect.getsource(renderer.Renderer)
    for needed in ("self._latest_znear", "self._latest_zfar", "program.set_uniform('color', color)",
                   "2.0 * depth_im - 1.0", "(z_far + z_near - depth_im[noninf] *"):
        if needed not in source:
            found.append(f"pyrender Renderer no longer has {needed!r} (the box read-back and the colour uniform "
                         "rely on it)")
    if "glEnable(GL_MULTISAMPLE)" not in source or not callable(getattr(renderer, "glEnable", None)):
        found.append("pyrender's renderer module no longer calls its own glEnable(GL_MULTISAMPLE) (the part labels "
                     "rely on turning it off)")
    if "_program_id" not in inspect.getsource(pyrender.shader_program.ShaderProgram):
        found.append("pyrender ShaderProgram has no _program_id")
    return found
