"""Turn InterHand2.6M captures into training data for animatable hand avatars.

The package mirrors the pipeline:
    cli        -- the command line: `interhand-prep <command>` and the top-level scripts
    stages/    -- one module per command: get_annots, prepare_blend_weights, render_mesh,
                  check_seq, merge_seq, gif; pipeline (one sequence) and process (many)
    core/      -- what the stages are built from: cameras, mano, skinning (geometry); dataset,
                  annotation_cache (reading InterHand2.6M); layout, manifest, fileio, locking,
                  safe_pickle (outputs and files); gl_renderer, pyrender_adapter (rendering);
                  options, selection, constants, errors
    synthetic/ -- generators of a synthetic MANO-format model and capture (demo and tests)
"""

__version__ = "0.2.0"
