"""A network from the user's own file, with its config in the user's own folder (see the docs)."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.test_cli import train_py

NETWORK = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """The user's own classifier: litcompress passes num_classes, in_channels and image_size."""

    def __init__(self, num_classes, in_channels, image_size, width=8):
        super().__init__()
        self.head = nn.Linear(2 * width, num_classes)  # registered first, runs last
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, 2 * width), nn.ReLU(),  # the last Linear registered: not the head
        )

    def forward(self, x):
        return self.head(self.features(x))
'''

CONFIG = """
# conf/model/tiny.yaml in the user's own config folder
_target_: my_models.TinyNet
_partial_: true
width: 8
"""

QUICK = [
    "trainer=debug",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "report.min_run_time_s=0.05",
    "trainer.max_epochs=2",
]


@pytest.fixture
def user_folder(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "my_models.py").write_text(textwrap.dedent(NETWORK))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text(CONFIG)
    return tmp_path


@pytest.mark.slow
def test_a_network_from_the_users_own_file_trains_and_prunes(user_folder):
    run_dir = user_folder / "run"
    result = train_py(
        f"hydra.searchpath=[file://{user_folder / 'conf'}]",
        "model=tiny",
        "compress=prune",
        *QUICK,
        f"hydra.run.dir={run_dir}",
        env={"PYTHONPATH": str(user_folder / "models")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["model"] == "my_models.TinyNet"
    assert report["after"]["params"] < report["before"]["params"] / 2
    # The head kept its classes: found by running the network, not by registration order.
    assert report["after"]["test_acc"] is not None


@pytest.mark.slow
def test_a_network_that_cannot_be_imported_names_pythonpath(user_folder):
    result = train_py(
        f"hydra.searchpath=[file://{user_folder / 'conf'}]",
        "model=tiny",
        *QUICK,
        f"hydra.run.dir={user_folder / 'run'}",
    )
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "_target_: my_models.TinyNet cannot be imported" in output
    assert "PYTHONPATH" in output and "Traceback" not in output
