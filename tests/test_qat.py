"""compress=qat: fake-quantized training that ends in a real, reloadable int8 model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from litcompress.build import build
from litcompress.checkpoint import load_network, read_checkpoint, rebuild_network
from litcompress.compat import cpu_has_vnni
from litcompress.compress.qat import QATCallback
from litcompress.deploy.int8 import int8_notes, load_int8
from litcompress.errors import ConfigError
from litcompress.measure import ModelStats
from litcompress.models import SmallCNN
from litcompress.quant.backends import convert, prepare
from litcompress.quant.fake_quant import FakeQuantNet
from litcompress.report import build_report, report_markdown
from litcompress.run import run
from tests.conftest import FAST, QAT, compose_config


def train(*overrides: str, output_dir: Path) -> dict:
    run(compose_config([*QAT, *overrides], output_dir))
    return json.loads((output_dir / "report.json").read_text())


# -- the fake-quantized network ------------------------------------------------------------------
def observer_state(net: FakeQuantNet) -> dict[str, torch.Tensor]:
    """Quantization ranges (not the on/off flags, which the wrapper switches)."""
    return {
        k: v.clone()
        for k, v in net.state_dict().items()
        if "activation_post_process" in k and not k.endswith("_enabled")
    }


def bn_state(net: FakeQuantNet) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("backend", ["pt2e", "fx"])
def test_fake_quant_net_follows_the_training_flag_as_lightning_sets_it(backend):
    torch.manual_seed(0)
    net = prepare(SmallCNN(num_classes=10, in_channels=1, image_size=8), backend, (1, 8, 8))
    x = torch.randn(16, 1, 8, 8)
    net(x)  # training: observers and BatchNorm statistics update
    net.eval()
    observers, stats = observer_state(net), bn_state(net)
    with torch.no_grad():
        first = net(x)
        # Validation data moves neither the quantization ranges nor the statistics.
        assert not changed(observers, observer_state(net))
        assert not changed(stats, bn_state(net))
        # Eval BatchNorm: an image's output does not depend on the rest of its batch.
        torch.testing.assert_close(net(x[:4]), first[:4])
    # Lightning restores modes by assigning `training` on every module, not by calling train();
    # the next evaluation (e.g. the test after fit) must still leave the statistics alone.
    for module in net.modules():
        module.training = True
    net.eval()
    with torch.no_grad():
        net(x)
    assert not changed(stats, bn_state(net))
    for module in net.modules():
        module.training = True
    net(x)
    assert changed(observers, observer_state(net))
    assert changed(stats, bn_state(net))


@pytest.mark.parametrize("backend", ["pt2e", "fx"])
def test_frozen_batchnorm_and_observers_stay_fixed_while_training(backend):
    net = prepare(SmallCNN(num_classes=10, in_channels=1, image_size=8), backend, (1, 8, 8))
    net(torch.randn(16, 1, 8, 8))
    net.bn_frozen = net.observers_frozen = True
    observers, stats = observer_state(net), bn_state(net)
    weights = {k: v.clone() for k, v in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.randn(16, 1, 8, 8)).square().mean().backward()
    optimizer.step()
    assert not changed(observers, observer_state(net))
    assert not changed(stats, bn_state(net))
    assert all(not torch.equal(weights[k], p) for k, p in net.named_parameters() if p.ndim > 1)


@pytest.mark.parametrize("backend", ["pt2e", "fx"])
def test_a_rebuilt_fake_quant_net_loads_the_state_and_predicts_the_same(backend):
    config = {
        "_target_": "litcompress.models.SmallCNN",
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 8,
    }
    form = {"quantization": {"backend": backend}}
    net = rebuild_network(config, form)
    for _ in range(3):
        net(torch.randn(16, 1, 8, 8))
    twin = rebuild_network(config, form)
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)


# -- a whole run ---------------------------------------------------------------------------------
def test_the_report_measures_the_int8_model(qat_run):
    output_dir, report = qat_run
    before, after = report["before"], report["after"]
    assert report["qat"]["backend"] == "pt2e" and report["qat"]["start_epoch"] == 1
    assert after["int8_artifact"] == "model_int8.pt2"
    assert after["file_bytes"] == (output_dir / "model_int8.pt2").stat().st_size
    # int8 weights: about a quarter of fp32 ones; the program adds a fixed amount on top.
    assert after["int8_weights_bytes"] < before["file_bytes"] * 0.4
    assert after["file_bytes"] < before["file_bytes"]
    assert after["params"] == before["params"] and after["macs"] == before["macs"]
    # The int8 model was tested on the batches trainer.test saw; close to the fake-quantized one.
    assert after["test_acc"] is not None and after["trained_test_acc"] is not None
    assert abs(after["test_acc"] - after["trained_test_acc"]) < 0.05
    for key in ("fp32_compiled_latency_ms_b1", "fp32_compiled_latency_ms_b32"):
        assert after[key] > 0
    # "best" was tested: a checkpoint of a QAT epoch (the float one was no longer eligible).
    best = read_checkpoint(next((output_dir / "checkpoints").glob("epoch001*.ckpt")))
    assert best["litcompress"]["quantization"]["backend"] == "pt2e"


def test_the_int8_artifact_reloads_in_a_fresh_process_with_identical_predictions(qat_run, tmp_path):
    output_dir, _ = qat_run
    x = torch.randn(8, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch\n"
        "from litcompress.deploy.int8 import int8_notes, load_int8\n"
        "net = load_int8(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    torch.save(net(torch.load(sys.argv[2])), sys.argv[3])\n"
    )
    artifact = output_dir / "model_int8.pt2"
    subprocess.run(
        [sys.executable, "-c", script, str(artifact), str(tmp_path / "x.pt"), tmp_path / "y.pt"],
        check=True,
        timeout=600,
    )
    with torch.no_grad():
        expected = load_int8(artifact)(x)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, rtol=0, atol=0)
    assert float_layers(torch.export.load(artifact).module()) == []
    # It is the trained network: on test images it predicts what the fake-quantized best
    # checkpoint it came from predicts.
    data = build(compose_config(QAT).data)
    data.setup("test")
    images, _ = next(iter(data.test_dataloader()))
    best = next((output_dir / "checkpoints").glob("epoch001*.ckpt"))
    with torch.no_grad():
        int8 = load_int8(artifact)(images).argmax(1)
        fake_quantized = load_network(best)(images).argmax(1)
    assert (int8 == fake_quantized).float().mean() >= 0.9


def float_layers(graph: torch.fx.GraphModule) -> list[str]:
    """Modules of the conv and linear nodes whose input or weight is not int8 (run in float)."""

    def dequantized(node) -> bool:
        return isinstance(node, torch.fx.Node) and "dequantize" in str(node.target)

    return [
        list(node.meta["nn_module_stack"].values())[-1][1]
        for node in graph.graph.nodes
        if str(node.target) in ("aten.conv2d.default", "aten.linear.default")
        and not (dequantized(node.args[0]) and dequantized(node.args[1]))
    ]


class CheckRestoredQAT(Callback):
    """Records, as training resumes, whether the network came back fake-quantized and how."""

    def on_train_start(self, trainer, pl_module):
        self.net = pl_module.net
        self.state = {k: v.clone() for k, v in pl_module.net.state_dict().items()}


def test_resume_continues_qat_with_the_observers_of_the_checkpoint(qat_run, tmp_path):
    output_dir, first = qat_run
    last = output_dir / "checkpoints" / "last.ckpt"
    saved = read_checkpoint(last)["state_dict"]
    probe = CheckRestoredQAT()
    cfg = compose_config(
        [
            *QAT,
            "compress.qat.start_epoch=1",  # as the run did: a resumed run keeps its settings
            f"ckpt_path={last}",
            "trainer.max_epochs=3",
            "report.enabled=false",
        ],
        tmp_path,
    )
    run(cfg, extra_callbacks=[probe])
    assert isinstance(probe.net, FakeQuantNet)
    observers = [k for k in probe.state if "activation_post_process" in k]
    assert observers
    for key in observers:
        torch.testing.assert_close(probe.state[key], saved[f"net.{key}"], rtol=0, atol=0)
    assert (tmp_path / "model_int8.pt2").is_file()
    resumed = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 2 and resumed["litcompress"]["quantization"]
    assert load_network(tmp_path / "checkpoints" / "last.ckpt") is not None


def test_fx_backend_saves_an_int8_state_dict_that_reloads(tmp_path):
    report = train("compress.qat.backend=fx", "compress.qat.start_epoch=0", output_dir=tmp_path)
    artifact = tmp_path / "model_int8.pt"
    assert report["after"]["int8_artifact"] == artifact.name
    saved = torch.load(artifact, weights_only=True)  # no pickled objects
    assert saved["litcompress"]["quantization"]["backend"] == "fx"
    net = load_int8(artifact)
    quantized = [m for m in net.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert quantized
    # The same int8 model as converting the tested ("best") checkpoint directly.
    (best,) = (tmp_path / "checkpoints").glob("epoch*.ckpt")
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(net(x), convert(load_network(best))(x), rtol=0, atol=0)


# -- composition -----------------------------------------------------------------------------------
# compress=[prune,qat] under DDP on 2 CPU processes is tested with distillation added, in one run:
# tests/test_distill.py::test_prune_distill_qat_in_one_command_under_ddp.


# -- coverage --------------------------------------------------------------------------------------
COVERAGE = {
    "resnet": {"_target_": "litcompress.models.CifarResNet", "depth": 20},
    "mobilenet": {"_target_": "litcompress.models.mobilenet_v2", "width_mult": 0.5},
    "cnn": {"_target_": "litcompress.models.SmallCNN"},
    "vit": {"_target_": "litcompress.models.vit", "dim": 64, "mlp_dim": 128, "depth": 2},
    "resnet18": {"_target_": "litcompress.models.torchvision_classifier", "name": "resnet18"},
    "mobilenet_v2": {
        "_target_": "litcompress.models.torchvision_classifier",
        "name": "mobilenet_v2",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COVERAGE))
def test_every_model_trains_fake_quantized_and_converts_to_int8(name):
    config = {**COVERAGE[name], "num_classes": 10, "in_channels": 3, "image_size": 32}
    net = rebuild_network(config, {"quantization": {"backend": "pt2e"}})
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()
    int8 = convert(net)
    # Every conv and linear layer takes int8 inputs and per-channel int8 weights, except the
    # projections inside nn.MultiheadAttention (bare parameters the x86 quantizer leaves alone).
    if name == "vit":
        attention = "torch.nn.modules.activation.MultiheadAttention"
        assert float_layers(int8) == [attention] * 4  # in and out projection, 2 blocks
    else:
        assert float_layers(int8) == []
    assert any("dequantize_per_channel" in str(node.target) for node in int8.graph.nodes)
    assert int8(x).shape == (8, 10)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compress.qat.backend=tflite"], r"backend='tflite' is unknown; choose pt2e"),
        (["compress.qat.start_epoch=2"], r"start_epoch=2 is not before trainer.max_epochs=2"),
        (
            ["compress.qat.start_epoch=1", "compress.qat.freeze_bn_epoch=0"],
            r"freeze_bn_epoch=0 is before QAT starts",
        ),
        (
            ["compress=[prune,qat]", "compress.prune.start_epoch=1", "compress.qat.start_epoch=0"],
            r"start_epoch=0 is before the last change of form of compress.prune \(epoch 1\)",
        ),
    ],
)
def test_bad_qat_options_fail_before_training(tmp_path, overrides, message):
    cfg = compose_config([*QAT, *overrides], tmp_path)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_compiler_names_the_fallback(monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(ConfigError, match=r"needs a C\+\+ compiler.*backend=fx"):
        QATCallback(backend="pt2e")
    QATCallback(backend="fx")  # needs none


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 0:  # control flow on values: neither export nor FX can capture it
            x = x.relu()
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize(("backend", "fallback"), [("pt2e", "fx"), ("fx", "pt2e")])
def test_a_network_that_cannot_be_traced_is_named_with_the_fallback(backend, fallback):
    with pytest.raises(ConfigError, match=rf"(?s)DataDependent.*backend={fallback}") as error:
        prepare(DataDependent(), backend, (1, 8, 8))
    assert "DataDependent" in str(error.value).splitlines()[0]
    assert len(str(error.value).splitlines()) <= 8


def test_a_qat_checkpoint_needs_compress_qat_to_go_on(qat_run, tmp_path):
    last = qat_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose_config([*FAST, "model=resnet", f"init_from={last}"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"compress=qat gives it \(quantization\).*go on with compress=qat"
    ):
        run(cfg)


@pytest.mark.parametrize(("reduce_range", "activation_max"), [(False, 255), (True, 127)])
def test_reduce_range_quantizes_activations_to_seven_bits(reduce_range, activation_max):
    net = prepare(
        SmallCNN(num_classes=10, in_channels=1, image_size=8), "pt2e", (1, 8, 8), reduce_range
    )
    activations = {m.quant_max for m in net.modules() if getattr(m, "dtype", None) == torch.uint8}
    assert activations == {activation_max}
    assert QATCallback(reduce_range=None).reduce_range == (not cpu_has_vnni())


class FreezeProbe(Callback):
    """Records, per epoch, the freeze flags and whether the ranges and statistics moved."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = (observer_state(pl_module.net), bn_state(pl_module.net))

    def on_train_epoch_end(self, trainer, pl_module):
        net = pl_module.net
        observers, stats = self.start
        self.epochs.append(
            (
                net.bn_frozen,
                net.observers_frozen,
                changed(stats, bn_state(net)),
                changed(observers, observer_state(net)),
            )
        )


def test_batchnorm_and_observers_freeze_at_their_epochs(trained_resnet8, tmp_path):
    probe = FreezeProbe()
    cfg = compose_config(
        [
            *QAT,
            f"init_from={trained_resnet8}",
            "trainer.max_epochs=3",
            "compress.qat.freeze_bn_epoch=1",
            "compress.qat.freeze_observer_epoch=2",
            "report.enabled=false",
            "test=false",
        ],
        tmp_path,
    )
    run(cfg, extra_callbacks=[probe])
    # (bn frozen, observers frozen, statistics moved, ranges moved) per epoch
    assert probe.epochs == [
        (False, False, True, True),
        (True, False, False, True),
        (True, True, False, False),
    ]


def test_an_int8_model_that_is_no_gain_is_reported_as_such():
    def stats(latency_b32, file_bytes):
        extra = {
            "fp32_compiled_latency_ms_b32": 10.0,
            "fp32_file_bytes": 1000,
            "int8_weights_bytes": 250,
        }
        return ModelStats(0.9, 100, 200, file_bytes, 1.0, latency_b32, extra)

    assert int8_notes(stats(5.0, 800)) == []
    notes = int8_notes(stats(12.0, 1500))
    assert "slower than the same network in fp32 compiled at batch 32 (12.00 ms" in notes[0]
    assert "larger than the fp32 weights (1,000 bytes)" in notes[1]
    before = ModelStats(None, 100, 200, 1000, 1.0, 20.0)
    after = stats(12.0, 1500)
    after.extra["notes"] = notes
    markdown = report_markdown(build_report(before, after, (1, 8, 8)))
    assert "**Note:** The int8 model is slower" in markdown
