"""Turn InterHand2.6M captures into training data for animatable hand avatars.

Modules, one per concept:
    errors     -- the one exception type that reaches the user as a one-line message
    fileio     -- atomic writes and guarded reads
    cameras    -- the InterHand2.6M camera convention, as pure array functions
    mano       -- chumpy-free MANO model loading and the batched forward pass
    dataset    -- reading an InterHand2.6M tree (annotations, image folders)
    annotation_cache -- the split-level JSON files, parsed once into per-capture .npz caches
    layout     -- where every output file of a processed sequence lives
    annots     -- the get_annots stage
    skinning, blend_weights -- skinning-grid geometry, and the prepare_blend_weights stage
    rendering, render_mesh  -- offscreen GL rendering, and the render_mesh stage
    pipeline, workflow      -- all stages of one sequence; process.sh over many
    merge, gifs, check      -- merge_seq.py, gif.py, check_seq.py
    synthetic_hand, synthetic_capture -- generators of test and demo data
    cli, fileio, errors     -- command-line plumbing, atomic writes and locks, user errors
"""

__version__ = "0.1.0"
