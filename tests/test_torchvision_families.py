"""One torchvision network of each family that needed a fix trains, prunes and converts to int8.

The coverage of every torchvision classifier is measured by bench/coverage.py (README table);
these are the families litcompress had to adapt to: auxiliary heads (GoogLeNet, Inception), a
convolutional head (SqueezeNet), a model built for its input size (ViT).
"""

from __future__ import annotations

import pytest
import torch

from litcompress.checkpoint import load_network, read_checkpoint, rebuild_network
from litcompress.quant.artifact import load_int8
from litcompress.report import count_params
from litcompress.run import run
from tests.conftest import FAST, TINY_SHAPES

ONE_BATCH = [
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "image_size"),
    [("googlenet", 32), ("squeezenet1_1", 32), ("vit_b_32", 32)],
)
def test_a_network_of_each_adapted_family_prunes_and_quantizes(
    make_config, tmp_path, name, image_size
):
    cfg = make_config(
        *FAST,
        *TINY_SHAPES,
        *ONE_BATCH,
        "model=torchvision",
        f"model.name={name}",
        f"data.image_size={image_size}",
        "compress=[prune,qat]",
        "compress.prune.start_epoch=0",
        "compress.qat.start_epoch=0",
        "compress.qat.backend=fx",  # no compile: the int8 path itself is what is tested
        "report.enabled=false",
        "test=false",
        output_dir=tmp_path,
    )
    run(cfg)
    config = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["litcompress"]["model_config"]
    dense = rebuild_network(config, {})
    pruned = load_network(tmp_path / "checkpoints" / "last.ckpt")  # fake-quantized, pruned
    int8 = load_int8(tmp_path / "model_int8.pt")
    x = torch.randn(2, 3, image_size, image_size)
    assert count_params(int8) < count_params(dense) / 2
    assert pruned(x).shape == int8(x).shape == (2, 10)  # the head kept its 10 classes
