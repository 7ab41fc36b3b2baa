"""Start ``train.py`` at a given instant, for the tests of runs started together:
``python tests/start_at.py <unix time> <train.py arguments...>``.

The heavy imports come first, so that processes started apart (and on a busy machine) all reach
Hydra within a few milliseconds of the instant, as two runs started by a shell loop do.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

import litcompress.run  # noqa: F401  (imported before the instant: Hydra starts at once after)

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"

if __name__ == "__main__":
    instant = float(sys.argv[1])
    sys.argv = [str(TRAIN_PY), *sys.argv[2:]]
    time.sleep(max(0.0, instant - time.time()))
    runpy.run_path(str(TRAIN_PY), run_name="__main__")
