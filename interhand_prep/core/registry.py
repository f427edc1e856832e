"""The stages that record themselves in the manifest, listed once, in pipeline order.

Each entry names the stage (its manifest record, its journal and its module
`interhand_prep/stages/<name>.py`, whose `STAGE` is the `stages.base.Stage` that plans and writes), its command and script, its options
record, and the stages whose outputs it reads. The command line, the batch driver (pipeline and
process), check-seq and export read this list; nothing else spells a stage's name. Adding a stage
is one module under stages/ plus one entry here.

The list lives beside the option records it names, below the command line and the stages that
read it; it imports nothing heavy (the command line's `--help` reads it), and a stage's module is
imported by name when the stage runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .options import AnnotsOptions, BlendWeightOptions, NoOptions, RefineOptions, RenderOptions


STAGES_PACKAGE = "interhand_prep.stages"


@dataclass(frozen=True)
class StageEntry:
    name: str                 # manifest record, journal, module stages/<name>.py
    short: str                # its column in process's table and its key in a sequence's report
    command: str              # the subcommand of interhand-prep
    summary: str              # one line, for --help
    options: type = NoOptions  # its options record (options.py)
    needs: tuple[str, ...] = ()  # stages whose outputs it reads: refused while one of them is unfinished
    optional: bool = False    # process.sh runs it only with --<command> (the demo always)

    @property
    def script(self) -> str:
        """The top-level script of the checkout that runs it."""
        return f"{self.name}.py"

    @property
    def switch(self) -> str:
        """process.sh's flag that turns an optional stage on, and its argparse destination."""
        return f"--{self.command}"

    @property
    def switch_dest(self) -> str:
        return f"run_{self.name}"

    @property
    def stage(self):
        """The stage itself (`base.Stage`), importing its module."""
        return importlib.import_module(f"{STAGES_PACKAGE}.{self.name}").STAGE


GET_ANNOTS = StageEntry("get_annots", "annots", "get-annots",
                        "Cameras, image list, MANO parameters and vertices of one sequence.", AnnotsOptions)
PREPARE_BLEND_WEIGHTS = StageEntry(
    "prepare_blend_weights", "lbs", "prepare-blend-weights",
    "Linear-blend-skinning weight grids (lbs/) around the canonical and every posed hand.", BlendWeightOptions,
    needs=("get_annots",))
RENDER_MESH = StageEntry(
    "render_mesh", "render", "render-mesh",
    "A hand mask and a depth map for every camera view, rendered from the MANO mesh (pyrender offscreen).",
    RenderOptions, needs=("get_annots",))

REFINE_MASKS = StageEntry(
    "refine_masks", "refine", "refine-masks",
    "Every MANO mask refined against its camera image (mask_cihp/, mask_quality.csv).",
    RefineOptions, needs=("get_annots", "render_mesh"), optional=True)

STAGES: list[StageEntry] = [GET_ANNOTS, PREPARE_BLEND_WEIGHTS, RENDER_MESH, REFINE_MASKS]


def names() -> tuple[str, ...]:
    return tuple(entry.name for entry in STAGES)


def by_name(name: str) -> StageEntry:
    return next(entry for entry in STAGES if entry.name == name)
