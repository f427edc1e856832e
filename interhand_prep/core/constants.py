"""Names and defaults shared by every part of the package, defined once."""

from pathlib import Path

SPLITS = ("train", "val", "test")
HANDS = ("right", "left")                        # the order in which hands are processed and listed
HAND_TYPES = ("right", "left", "both", "auto")   # --hand-type; auto: the hands with MANO in the sequence
DEFAULT_BASEDIR = Path("data/InterHand2.6M_30fps")
DEFAULT_MANO_DIR = Path("data/mano")
