"""A quiet, fast start: the command's help imports neither torch nor the techniques, checkpoints
import the technique of their form on first need, and runs print no known-harmless dependency
lines (litcompress.noise) unless asked to."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightning import Trainer
from lightning.pytorch.callbacks import ModelSummary

from litcompress import noise
from litcompress.cli import COMMANDS
from litcompress.forms import BUILTIN_FORMS
from tests.conftest import ROOT

HEAVY = ("torch", "torchvision", "lightning", "torchao", "onnx", "openvino", "hydra")


def python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -c code args`` in a fresh process, from the repository."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_help_of_the_command_and_each_subcommand_imports_neither_torch_nor_techniques():
    code = f"""
import json, sys
from litcompress.cli import main
for args in (["--help"], *([name, "--help"] for name in {sorted(COMMANDS)!r})):
    try:
        main(args)
    except SystemExit as exit:
        assert exit.code == 0, (args, exit.code)
heavy = [m for m in sys.modules if m.split(".")[0] in {HEAVY!r}]
techniques = [m for m in sys.modules if m.startswith("litcompress.compress.")]
print(json.dumps({{"heavy": heavy, "techniques": techniques}}))
"""
    result = python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"heavy": [], "techniques": []}
    assert "usage: litcompress export" in result.stdout and "{onnx,openvino,pt2}" in result.stdout
    assert result.stderr == ""


def test_train_py_help_and_a_bad_override_answer_without_importing_torch():
    code = """
import json, runpy, sys
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path("train.py", run_name="__main__")
except SystemExit as exit:
    code = exit.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "lightning", "torchao"})
print(json.dumps({"code": code, "heavy": heavy}))
"""
    for args, status in ((["--help"], 0), (["model=resnt"], 1)):
        result = python(code, *args)
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert answer == {"code": status, "heavy": []}, (args, result.stderr[-2000:])
    assert "== Configuration groups ==" in python(code, "--help").stdout


def test_a_checkpoint_form_imports_the_technique_that_owns_it_on_first_need():
    code = """
import sys
from litcompress.checkpoint import form_of
from litcompress.forms import technique_of
loaded = lambda: [m for m in sys.modules if m.startswith("litcompress.compress.")]
before = [m for m in loaded() if m != "litcompress.compress.base"]
form = form_of({"pruning_history": [], "inputs": {}, "data": {}})
still = "litcompress.compress.prune" in sys.modules
technique = technique_of("pruning_history")
qat = "litcompress.compress.qat" in sys.modules
print(before, sorted(form), still, technique.__module__, technique.__name__, qat)
"""
    result = python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        "[]",
        "['pruning_history']",
        "False",
        "litcompress.compress.prune",
        "PruneCallback",
        "False",
    ]


def test_every_built_in_technique_with_a_form_is_found_by_its_key():
    import importlib

    import litcompress.compress as package
    from litcompress.forms import FORMS

    for name in package.__all__:
        assert getattr(package, name).__name__ == name  # the lazy names resolve
    for module in {getattr(package, name).__module__ for name in package.__all__}:
        importlib.import_module(module)
    built_in = {
        key: technique.__module__
        for key, technique in FORMS.items()
        if technique.__module__.startswith("litcompress.compress.")
    }
    assert built_in == BUILTIN_FORMS
    with pytest.raises(AttributeError, match="NoSuchCallback"):
        package.NoSuchCallback  # noqa: B018


# -- the noise filters ----------------------------------------------------------------------------
def test_each_filter_drops_its_line_and_nothing_else():
    """Every known line, sent the way its library sends it, is dropped; real problems on the same
    loggers pass; with LITCOMPRESS_VERBOSE=1 everything passes."""
    code = """
import logging, sys, warnings
from litcompress import noise
logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO)
warnings.simplefilter("always")
warnings.showwarning = lambda message, *rest: print(message)
print("installed", noise.install())
for item in noise.NOISE:
    if item.loggers:
        for name in item.loggers:
            logging.getLogger(name).warning(item.example)
    else:
        warnings.warn(item.example, item.category)
logging.getLogger("torch.utils.cpp_extension").warning("Error building extension 'ops'")
pytorch, fabric = (f"lightning.{p}.utilities.rank_zero" for p in ("pytorch", "fabric"))
logging.getLogger(pytorch).info("GPU available: True (cuda), used: False")
logging.getLogger(fabric).info("TPU available: True, using: 0 TPU cores")
warnings.warn("`isinstance(x, Other)` is deprecated", FutureWarning)
print("installed again", noise.install())
print("filters", len(logging.getLogger("lightning.pytorch.utilities.rank_zero").filters))
"""
    quiet = python(code, env={noise.VERBOSE_ENV: "0"})
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.splitlines() == [
        "installed True",
        "Error building extension 'ops'",
        "GPU available: True (cuda), used: False",
        "TPU available: True, using: 0 TPU cores",
        "`isinstance(x, Other)` is deprecated",
        "installed again True",
        "filters 1",
    ]
    verbose = python(code, env={noise.VERBOSE_ENV: "1"})
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    lines = verbose.stdout.splitlines()
    assert lines[0] == "installed False"
    for item in noise.NOISE:
        assert item.example in lines, item.name


def test_importing_torchao_is_quiet_and_verbose_shows_what_was_hidden():
    code = "from litcompress import noise; noise.install(); import torchao"
    assert python(code, env={noise.VERBOSE_ENV: "0"}).stderr == ""
    shown = python(code, env={noise.VERBOSE_ENV: "1"}).stderr
    assert "is an Enum subclass and is now natively supported" in shown


def test_the_command_installs_the_filters_and_verbose_leaves_them_out(tmp_path):
    code = """
import logging, sys
from litcompress.cli import main
code = main(sys.argv[1:])
print("filters", len(logging.getLogger("torch.utils.cpp_extension").filters), "exit", code)
"""
    missing = str(tmp_path / "missing.png")
    quiet = python(code, "predict", "model.onnx", missing, env={noise.VERBOSE_ENV: "0"})
    assert quiet.stdout.split() == ["filters", "1", "exit", "2"], quiet.stderr[-3000:]
    # Only the command's own refusal: torch, Lightning and the rest were imported in silence.
    assert quiet.stderr.splitlines() == [
        f"litcompress: {missing} does not exist (looked for {Path(missing).resolve()})."
    ]
    verbose = python(code, "--verbose", "predict", "model.onnx", missing)
    assert verbose.stdout.split() == ["filters", "0", "exit", "2"], verbose.stderr[-3000:]


# -- the model summary ----------------------------------------------------------------------------
@pytest.mark.parametrize("drop, summaries", [([], 1), (["~callbacks.model_summary"], 0)])
def test_the_trainer_gets_the_configs_model_summary_only(drop, summaries, make_config):
    from litcompress.build import build_callbacks, ui_switches

    cfg = make_config("trainer=debug", "~callbacks.progress_bar", *drop)
    callbacks = build_callbacks(cfg, has_logger=False)
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    names = (f"lightning.{p}.utilities.rank_zero" for p in ("pytorch", "fabric"))
    loggers = [logging.getLogger(name) for name in names]
    # An in-process run earlier in this worker may have installed litcompress.noise's filters,
    # which drop the Trainer's 'GPU available' lines: hear everything here.
    filters = {logger.name: list(logger.filters) for logger in loggers}
    for logger in loggers:
        logger.filters.clear()
        logger.addHandler(handler)
    try:
        trainer = Trainer(callbacks=callbacks, logger=False, **ui_switches(cfg, callbacks))
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.filters[:] = filters[logger.name]
    assert sum(isinstance(c, ModelSummary) for c in trainer.callbacks) == summaries
    assert said and not [line for line in said if "already configured" in line], said


@pytest.mark.slow
def test_a_run_prints_only_litcompress_lines_and_the_summary_once(tmp_path):
    args = [
        str(ROOT / "train.py"),
        "trainer=debug",
        "trainer.max_epochs=1",
        "~callbacks.progress_bar",
        "data=shapes",
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=8",
        "data.batch_size=8",
        "model=cnn",
        "model.width=8",
        "report.min_run_time_s=0.05",
    ]

    def train(folder: str, verbose: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args, f"hydra.run.dir={tmp_path / folder}"],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", noise.VERBOSE_ENV: verbose},
            capture_output=True,
            text=True,
            timeout=600,
        )

    quiet = train("quiet", "0")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    for item in noise.NOISE:
        assert not re.search(item.message, quiet.stderr + quiet.stdout), item.name
    assert "already configured with model summary" not in quiet.stderr
    assert quiet.stdout.count("Total params") == 1  # the rich summary, once
    verbose = train("verbose", "1")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    for name in ("litlogger-tip", "stepping-batches", "no-tpu"):
        (item,) = [n for n in noise.NOISE if n.name == name]
        assert re.search(item.message, verbose.stderr), name
    assert "already configured with model summary" not in verbose.stderr
