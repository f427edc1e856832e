"""Names and defaults shared by every part of the package, defined once."""

from pathlib import Path

SPLITS = ("train", "val", "test")
HANDS = ("right", "left")                        # the order in which hands are processed and listed
HAND_TYPES = ("right", "left", "both", "auto")   # --hand-type; auto: the hands with MANO in the sequence
DEFAULT_BASEDIR = Path("data/InterHand2.6M_30fps")
DEFAULT_MANO_DIR = Path("data/mano")
# Colours of the hands in every figure and preview (RGB; Okabe-Ito, told apart with colour-vision
# deficiencies, and both far from skin tones, which red and orange are not)
HAND_COLORS = {"right": (0, 114, 178), "left": (0, 158, 115)}
JOINTS_PER_HAND = 21  # InterHand2.6M's joints of one hand (joint_3d rows 0-20 right, 21-41 left)
CAMERA_DIR_PATTERN = r"^cam(\d+)$"  # a camera's image folder, cam<id>
# `demo --data-only --sequences N`: the first N of these synthetic sequences (names as InterHand2.6M's;
# one or both hands)
DEMO_SEQUENCES = (("0051_dinosaur", "right"), ("0266_dh_pray", "both"), ("0000_neutral_relaxed", "right"),
                  ("0270_dh_fist", "both"), ("0009_thumbtucknormal", "right"), ("0275_dh_touch", "both"),
                  ("0019_alligator_closed", "right"), ("0281_dh_interlock", "both"), ("0029_indextip", "right"),
                  ("0286_dh_scissors", "both"), ("0039_fingerspreadrigid", "right"), ("0290_dh_crossed", "both"))
