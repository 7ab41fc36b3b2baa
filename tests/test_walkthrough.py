"""The technique of docs/writing-a-technique.md, run as the page gives it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_cli import train_py


def readme_blocks(language: str) -> list[str]:
    page = (ROOT / "docs" / "writing-a-technique.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", page, flags=re.S)


@pytest.mark.slow
def test_the_readme_technique_plugs_in_composes_and_reloads(tmp_path):
    (tmp_path / "my_techniques.py").write_text(readme_blocks("python")[0])
    (tmp_path / "conf" / "compress").mkdir(parents=True)
    (tmp_path / "conf" / "compress" / "lowrank.yaml").write_text(readme_blocks("yaml")[0])
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path)}
    result = train_py(
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "model=vit",
        "model.dim=64",
        "model.mlp_dim=128",
        "model.depth=2",
        "compress=[lowrank,qat]",  # quantization checks the factorization is done before it
        "compress.qat.start_epoch=2",
        "compress.qat.backend=fx",
        "trainer=debug",
        "trainer.max_epochs=3",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "report.min_run_time_s=0.05",
        f"hydra.run.dir={run_dir}",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["compress"] == ["lowrank", "qat"]
    assert report["lowrank"] == {"keep": 0.25, "epoch": 1}
    assert report["after"]["macs"] < report["before"]["macs"] / 2
    # The dense network's best checkpoint was moved apart when the network changed form.
    assert list((run_dir / "checkpoints" / "before_lowrank").glob("epoch000.ckpt"))
    # A fresh process rebuilds the factorized network from the checkpoint alone.
    check = (
        "import sys, torch\n"
        "from litcompress.checkpoint import load_network\n"
        "net = load_network(sys.argv[1])\n"
        "print(type(net).__name__, net(torch.zeros(2, 1, 8, 8)).shape[1])\n"
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    reloaded = subprocess.run(
        [sys.executable, "-c", check, str(last)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert reloaded.returncode == 0, reloaded.stderr[-2000:]
    assert reloaded.stdout.split()[-2:] == ["FakeQuantNet", "10"]


def test_quantization_refuses_to_start_before_the_technique_is_done(tmp_path, make_config):
    (tmp_path / "my_techniques.py").write_text(readme_blocks("python")[0])
    sys.path.insert(0, str(tmp_path))
    try:
        from litcompress.errors import ConfigError
        from litcompress.run import run

        cfg = make_config(
            "trainer=debug",
            "compress=qat",
            "compress.qat.start_epoch=0",
            "+compress.lowrank._target_=my_techniques.LowRankCallback",
            "+compress.lowrank.epoch=1",
            output_dir=tmp_path / "run",
        )
        with pytest.raises(
            ConfigError, match=r"before the last change of form of compress.lowrank \(epoch 1\)"
        ):
            run(cfg)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_techniques", None)
