"""Techniques compose with their defaults: every combination the techniques allow runs with no
option but ``compress=[...]``, from scratch and after ``init_from``; explicit settings that cannot
work together are refused in one message that gives values that do."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from litcompress.checkpoint import read_checkpoint
from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST, TINY_SHAPES, shared_run

# A tiny network, two optimizer steps an epoch, four epochs; nothing measured or tested.
TINY = [
    *FAST,
    *TINY_SHAPES,
    "model=cnn",
    "model.width=4",
    "trainer.max_epochs=4",
    "report.enabled=false",
    "test=false",
]


def combos() -> list[tuple[str, ...]]:
    """Every set of techniques (their order is the techniques' own), int8 by QAT or PTQ or not."""
    found = []
    for size in range(4):
        for chosen in combinations(("distill", "prune", "sparsity"), size):
            for int8 in ((), ("qat",), ("ptq",)):
                if chosen or int8:
                    found.append((*chosen, *int8))
    return found


@pytest.fixture(scope="session")
def trained_cnn(tmp_path_factory) -> Path:
    overrides = [*FAST, *TINY_SHAPES, "model=cnn", "model.width=4", "report.enabled=false"]
    return shared_run(tmp_path_factory, "compose_cnn", overrides) / "checkpoints" / "last.ckpt"


@pytest.mark.slow
@pytest.mark.parametrize("trained", [True, False], ids=["init_from", "scratch"])
@pytest.mark.parametrize("techniques", combos(), ids="+".join)
def test_every_combination_runs_with_its_defaults(techniques, trained, trained_cnn, make_config):
    if "distill" in techniques and not trained:
        pytest.skip("distill's default teacher is the network init_from gives")
    start = [f"init_from={trained_cnn}"] if trained else []
    cfg = make_config(*TINY, *start, f"compress=[{','.join(techniques)}]")
    run(cfg)
    output = Path(cfg.paths.output_dir)
    record = read_checkpoint(output / "checkpoints" / "last.ckpt")["litcompress"]
    assert ("pruning_history" in record) == ("prune" in techniques)
    assert ("quantization" in record) == ("qat" in techniques)
    assert (output / "model_int8.pt2").is_file() == bool({"qat", "ptq"} & set(techniques))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # QAT explicitly before sparsity ends: one message, with each fix that works.
        (
            ["compress.qat.start_epoch=1", "compress.sparsity.end_step=5"],
            # (more epochs would not help: QAT's explicit start stays before the final sparsity)
            r"final sparsity at step 5 .* 3 epoch\(s\) kept for compress.qat after it: set "
            r"compress.qat.start_epoch=3 \(or null\), or lower compress.sparsity.end_step to at "
            r"most 1, or set compress.sparsity.end_step to null \(then they fit in\)\.$",
        ),
        # QAT explicitly before pruning's last step.
        (
            [
                "compress=[prune,qat]",
                "compress.prune.iterative_steps=3",
                "compress.qat.start_epoch=1",
            ],
            r"compress.qat.start_epoch=1 is before the last change of form of "
            r"compress.prune \(epoch 2\).*Set compress.qat.start_epoch=2, or leave it null",
        ),
        # Too few epochs for the defaults: how many are needed.
        (
            ["trainer.max_epochs=1"],
            r"final sparsity .* raise trainer.max_epochs to 2\.$",
        ),
    ],
)
def test_settings_that_cannot_work_together_get_values_that_do(
    overrides, message, trained_cnn, make_config
):
    cfg = make_config(*TINY, f"init_from={trained_cnn}", "compress=[sparsity,qat]", *overrides)
    with pytest.raises(ConfigError, match=message):
        run(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fix",
    [
        ["compress.qat.start_epoch=3", "compress.sparsity.end_step=5"],
        ["compress.qat.start_epoch=1", "compress.sparsity.end_step=1"],
        ["compress.qat.start_epoch=1", "compress.sparsity.end_step=null"],
    ],
    ids=["qat-later", "sparsity-earlier", "sparsity-null"],
)
def test_each_suggested_fix_runs(fix, trained_cnn, make_config):
    cfg = make_config(*TINY, f"init_from={trained_cnn}", "compress=[sparsity,qat]", *fix)
    run(cfg)
    assert (Path(cfg.paths.output_dir) / "model_int8.pt2").is_file()
