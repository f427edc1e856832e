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
   pyrender's `Renderer.render` on a viewport that may be smaller than the image (a crop around
   the hands), reading colour and depth back as `OffscreenRenderer.render` does.
"""

from __future__ import annotations

import inspect

import numpy as np


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


def draw(offscreen, scene, flags, seg_node_map: dict, viewport: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Render `scene` with `flags` into a viewport of `viewport` (width, height) pixels at the
    image's top-left corner -> colour (h, w, 3) uint8 and linear depth (h, w) float32 (0: none)."""
    import pyrender

    renderer = offscreen._renderer
    renderer.viewport_width, renderer.viewport_height = viewport
    if uses_framebuffers(offscreen):
        return renderer.render(scene, flags | pyrender.RenderFlags.OFFSCREEN, seg_node_map)
    renderer.render(scene, flags, seg_node_map)
    return renderer.read_color_buf(), renderer.read_depth_buf()


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
    for flag in ("SEG", "OFFSCREEN"):
        if not hasattr(pyrender.RenderFlags, flag):
            found.append(f"pyrender.RenderFlags.{flag} is gone")
    return found
