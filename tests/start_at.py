"""Start ``train.py`` the moment a file appears, for the tests of runs started together:
``python tests/start_at.py <go file> <train.py arguments...>``.

The heavy imports come first and ``ready`` is printed after them; the test creates the go file
once every process is ready, so that all of them reach Hydra within a few milliseconds of each
other, as runs started by a shell loop or a scheduler in the same second do.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

import litcompress.run  # noqa: F401  (imported before the start: Hydra starts at once after)

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"

if __name__ == "__main__":
    go = Path(sys.argv[1])
    sys.argv = [str(TRAIN_PY), *sys.argv[2:]]
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    runpy.run_path(str(TRAIN_PY), run_name="__main__")
