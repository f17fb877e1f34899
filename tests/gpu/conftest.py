"""The smoke tests reuse tests/train's helpers (the fast-path comparison, the distributed run's config)."""

import sys
from pathlib import Path

TRAIN_TESTS = str(Path(__file__).resolve().parents[1] / "train")
if TRAIN_TESTS not in sys.path:  # tests/train is not on sys.path when only tests/gpu is selected
    sys.path.insert(0, TRAIN_TESTS)
