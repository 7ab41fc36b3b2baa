"""One torchvision network of each family that needed a fix trains, prunes and converts to int8.

The coverage of every torchvision classifier is measured by bench/coverage.py (docs/torchvision.md);
these are the families litcompress had to adapt to: auxiliary heads (GoogLeNet, Inception), a
convolutional head (SqueezeNet), a model built for its input size (ViT), grouped convolutions
with ``round_to`` (ResNeXt, RegNet).
"""

from __future__ import annotations

import pytest
import torch

from litcompress.checkpoint import load_network, read_checkpoint, rebuild_network
from litcompress.deploy.int8 import load_int8
from litcompress.errors import ConfigError
from litcompress.measure import count_params
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


@pytest.mark.slow
def test_grouped_convolutions_keep_widths_multiples_of_round_to_or_are_refused_with_a_fix(
    make_config, tmp_path
):
    prune = [*FAST, *TINY_SHAPES, *ONE_BATCH, "model=torchvision", "compress=prune"]
    prune += ["compress.prune.start_epoch=0", "report.enabled=false", "test=false"]
    # ResNeXt: 32 groups, so any width per group keeps a multiple of 8 (torch-pruning alone left
    # the layers of 4 and 8 channels per group whole).
    run(make_config(*prune, "model.name=resnext50_32x4d", "compress.prune.round_to=8",
                    output_dir=tmp_path / "resnext"))  # fmt: skip
    net = load_network(tmp_path / "resnext" / "checkpoints" / "last.ckpt")
    grouped = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [(m.out_channels, m.groups) for m in grouped[:4:3]] == [(64, 32), (128, 32)]
    assert all(m.out_channels % 8 == 0 for m in net.modules() if isinstance(m, torch.nn.Conv2d))

    # RegNetY-400MF: 55 groups of 8 keep a multiple of 8 only whole; the refusal's fix works.
    regnet = [*prune, "model.name=regnet_y_400mf"]
    with pytest.raises(ConfigError) as refused:
        run(make_config(*regnet, "compress.prune.round_to=8", output_dir=tmp_path / "r8"))
    message = str(refused.value)
    assert "is pruned in 55 channel groups of 8" in message
    assert "k = int(8 x (1 - 0.5)) = 4 per group" in message
    assert "set compress.prune.round_to=4" in message
    run(make_config(*regnet, "compress.prune.round_to=4", output_dir=tmp_path / "r4"))
    state = read_checkpoint(tmp_path / "r4" / "checkpoints" / "last.ckpt")
    steps = state["callbacks"]["PruneCallback"]
    assert 1 - steps["steps"][-1]["channels"] / steps["base_channels"] >= 0.45
    net = load_network(tmp_path / "r4" / "checkpoints" / "last.ckpt")
    widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 4 == 0 for w in widths), widths
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
