"""One trial of ``litcompress auto``: a real ``train.py`` run, and the model it delivers.

Each trial is ``python train.py`` in its own process (its own run folder, log and exit status),
started from the trained checkpoint with the trial's techniques; with ``cluster=local`` or
``cluster=slurm`` it is a one-job sweep through that launcher (submitit), which waits for it.
The model the trial delivers in the deployment runtime is the artifact its report's ``runtime``
entry names (exported and timed there by the run itself, ``report.runtime``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litcompress.errors import ConfigError

CLUSTERS = ("none", "local", "slurm")
EXIT_REFUSED = 2  # train.py's exit status for a configuration error
# Options a trial's overrides set themselves: a user's override of them is refused.
OWN_OPTIONS = (
    "compress",
    "trainer.max_epochs",
    "init_from",
    "ckpt_path",
    "report.runtime",
    "report.enabled",
    "report.time_torch",
    "test",
    "hydra.run",
    "hydra.sweep",
    "cluster",
    "paths.output_dir",
)


def check_overrides(overrides: list[str]) -> None:
    """Refuse overrides that set what each trial sets itself."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if any(key == own or key.startswith(f"{own}.") for own in OWN_OPTIONS):
            raise ConfigError(
                f"{override}: litcompress auto sets {key} in every trial itself (the techniques, "
                f"epochs, starting network and runtime it searches). Give only the options the "
                f"trials share, e.g. data=... optim.lr=... trainer.accelerator=..."
            )


def train_script() -> tuple[Path, Path]:
    """``train.py`` and the config folder it composes."""
    from litcompress.deploy.evaluate import config_dir  # torch: not before the checks

    conf = config_dir()
    script = conf.parent / "train.py"
    if not script.is_file():
        raise ConfigError(
            f"litcompress auto runs each trial with train.py, which is not beside {conf}: run it "
            f"from the project folder (the one holding train.py and conf/)."
        )
    return script, conf


@dataclass
class Launch:
    """How a trial runs: the shared overrides, the cluster, and the limit per trial."""

    shared: list[str]
    cluster: str = "none"
    timeout_s: float | None = None

    def command(self, overrides: list[str], folder: Path) -> tuple[list[str], Path]:
        """The command line of a trial with ``overrides``, and the run folder it writes."""
        script, conf = train_script()
        base = [sys.executable, str(script), f"--config-path={conf}", *self.shared, *overrides]
        if self.cluster == "none":
            return [*base, f"hydra.run.dir={folder}"], folder
        # A one-job sweep on submitit: the job's folder is the sweep folder's "0".
        sweep = [
            "-m",
            f"cluster={self.cluster}",
            f"hydra.sweep.dir={folder}",
            "hydra.sweep.subdir=run",
        ]
        return [*base[:3], *sweep, *base[3:]], folder / "run"

    def run(self, overrides: list[str], folder: Path, log_file: Path) -> Outcome:
        """Run a trial; its output goes to ``log_file``."""
        command, run_dir = self.command(overrides, folder)
        start = time.monotonic()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "w") as log:
            log.write(" ".join(command) + "\n\n")
            log.flush()
            code = None
            try:
                code = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, timeout=self.timeout_s
                ).returncode
                error = None if code == 0 else f"train.py exited with status {code}"
            except subprocess.TimeoutExpired:
                error = f"stopped after the limit per trial ({self.timeout_s:.0f} s)"
        if error:
            error = f"{error}: {last_error(log_file)}"
        # Status 2: the run refused its settings before training (e.g. a round_to that leaves
        # a layer whole at that ratio), a point of the space this network cannot take.
        return Outcome(run_dir, time.monotonic() - start, error, refused=code == EXIT_REFUSED)


@dataclass
class Outcome:
    """What a trial left: its run folder, wall time, and the error that stopped it."""

    run_dir: Path
    wall_s: float
    error: str | None
    refused: bool = False

    def report(self) -> dict[str, Any] | None:
        path = self.run_dir / "report.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def artifact(self, report: dict[str, Any]) -> Path:
        """The delivered model in the deployment runtime: the runtime's export, the int8
        program, or (fp32 in torch) the delivered checkpoint."""
        runtime = report.get("runtime") or {}
        name = runtime.get("file") or (report.get("delivered") or {}).get("checkpoint")
        if not name:
            raise ConfigError(f"{self.run_dir}/report.json names no delivered model.")
        return self.run_dir / name


def last_error(log_file: Path) -> str:
    """The line of a trial's log that says why it failed (its last error line)."""
    lines = log_file.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if "Error" in line or "error" in line.lower():
            return line.strip()[-500:]
    return lines[-1].strip()[-500:] if lines else "no output"
