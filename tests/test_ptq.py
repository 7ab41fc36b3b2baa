"""Post-training quantization (``compress=ptq``): a real int8 model from a trained network and a
few calibration batches, no training."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from litcompress.deploy.int8 import is_int8_program, load_program
from litcompress.errors import ConfigError
from litcompress.quant.backends import quantize_post_training
from litcompress.run import run
from tests.conftest import FAST


def input_scales(model: torch.fx.GraphModule) -> list[float]:
    """The scales of the per-tensor activation quantizations of a converted int8 graph."""
    return [
        float(node.args[1])
        for node in model.graph.nodes
        if "quantize_per_tensor" in str(node.target) and "dequantize" not in str(node.target)
    ]


def test_calibration_sets_the_activation_ranges():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    scales = {}
    for top in (1.0, 4.0):
        batches = [top * torch.rand(8, 3, 8, 8) for _ in range(2)]
        batches[0][0, 0, 0, 0] = top  # the largest input of each calibration set
        int8, images = quantize_post_training(net, (3, 8, 8), batches, observer="minmax")
        assert images == 16
        scales[top] = input_scales(int8)
        x = batches[1]
        assert (int8(x) - net(x)).abs().max() < 0.1 * net(x).abs().max()  # close to fp32
    # The input's range is [0, top]: an unsigned 8-bit scale of top / 255.
    assert scales[1.0][0] == pytest.approx(1.0 / 255) and scales[4.0][0] == pytest.approx(4 / 255)


@pytest.mark.slow
def test_a_trained_checkpoint_becomes_int8_without_training(make_config, tmp_path, trained_resnet8):
    run(
        make_config(
            *FAST,
            f"init_from={trained_resnet8}",
            "compress=ptq",
            "compress.ptq.calibration_batches=3",
            "trainer.max_epochs=0",
            output_dir=tmp_path,
        )
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["epochs"] == 0 and report["compress"] == ["ptq"]
    assert report["ptq"]["calibration_images"] == 3 * 64  # data.batch_size of digits
    assert report["after"]["int8_artifact"] == "model_int8.pt2"
    assert is_int8_program(load_program(tmp_path / "model_int8.pt2"))
    # Int8 from a few batches keeps the trained network's accuracy (ResNet-8, 2 test batches).
    assert abs(report["after"]["test_acc"] - report["before"]["test_acc"]) <= 0.05
    assert report["after"]["file_bytes"] < report["before"]["file_bytes"]
    sidecar = json.loads((tmp_path / "model_int8.pt2.json").read_text())
    assert sidecar["method"] == "ptq" and sidecar["precision"] == "int8"
    # TensorBoard: the weights before (float) and after (int8 values), the activation ranges.
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    histograms = {tag: events.Histograms(tag)[-1] for tag in events.Tags()["histograms"]}
    assert set(histograms) == {
        "quantization/weights_float",
        "quantization/weights_int8",
        "quantization/activation_ranges",
    }
    ints = histograms["quantization/weights_int8"].histogram_value
    assert -128 <= ints.min < 0 < ints.max <= 127 and ints.num > 70_000  # ResNet-8's weights
    ranges = histograms["quantization/activation_ranges"].histogram_value
    assert ranges.min > 0 and ranges.num >= 9  # one per quantized activation


def test_an_int8_model_timed_only_in_its_runtime_is_not_timed_in_torch(
    make_config, tmp_path, trained_resnet8, capsys
):
    run(
        make_config(
            *FAST,
            f"init_from={trained_resnet8}",
            "compress=ptq",
            "compress.ptq.calibration_batches=2",
            "trainer.max_epochs=0",
            "test=false",
            "report.runtime=onnxruntime",
            "report.time_torch=false",
            output_dir=tmp_path,
        )
    )
    report = json.loads((tmp_path / "report.json").read_text())
    after, before = report["after"], report["before"]
    # The int8 model: measured (size, MACs) but neither compiled nor timed in torch.
    assert after["int8_artifact"] == "model_int8.pt2" and after["macs"] == before["macs"]
    assert after["latency_ms_b1"] is None and after["latency_ms_b32"] is None
    assert "fp32_compiled_latency_ms_b32" not in after and report["speedup_b32"] is None
    # Its ONNX Runtime export is timed, against the entering network timed in torch.
    runtime, exported = report["runtime"], report["export"]["onnx"]
    assert runtime["name"] == "onnxruntime" and runtime["precision"] == "int8"
    assert runtime["latency_ms_b32"] == exported["latency_ms_b32"] > 0
    assert runtime["speedup_b1"] == before["latency_ms_b1"] / runtime["latency_ms_b1"]
    assert report["export"]["fastest_b32"] == "onnx"  # the int8 model has no torch time
    assert "timed in onnxruntime only (report.time_torch=false" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compress.ptq.calibration_batches=0"], r"calibration_batches=0 must be a whole number"),
        (["compress.ptq.observer=percentile"], r"observer='percentile' is unknown"),
        (["compress=[ptq,qat]"], r"compress=ptq and compress=qat both make the int8 model"),
    ],
)
def test_bad_ptq_settings_are_refused_before_training(make_config, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run(make_config(*FAST, "compress=ptq", *overrides, output_dir=tmp_path))
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))
