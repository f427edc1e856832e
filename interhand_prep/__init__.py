"""Turn InterHand2.6M captures into training data for animatable hand avatars.

Modules, one per concept:
    errors     -- the one exception type that reaches the user as a one-line message
    fileio     -- atomic writes and guarded reads
    cameras    -- the InterHand2.6M camera convention, as pure array functions
    mano       -- chumpy-free MANO model loading and the batched forward pass
    dataset    -- reading an InterHand2.6M tree (annotations, image folders)
    layout     -- where every output file of a processed sequence lives
    annots     -- the get_annots stage
    synthetic_hand, synthetic_capture -- generators of test and demo data
"""

__version__ = "0.1.0"
