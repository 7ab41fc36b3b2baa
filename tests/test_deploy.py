"""Deployment: export to each format with its parity check, predict and evaluate in fresh
processes (the `litcompress` command), the metadata artifacts carry, and bad input."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_pil_image

from litcompress.checkpoint import load_network, read_checkpoint, rebuild_network
from litcompress.data import DigitsData, ImageFolderData, ShapesData
from litcompress.data.shapes import SHAPE_NAMES
from litcompress.deploy import export as export_module
from litcompress.deploy.export import Deliverable, export, labelled_images, real_inputs
from litcompress.deploy.metadata import Preprocessing, read_metadata
from litcompress.deploy.runtimes import load_artifact
from litcompress.errors import ConfigError, ExportError
from litcompress.preflight import check_inputs
from litcompress.quant.backends import prepare
from litcompress.run import run
from tests.conftest import FAST, ROOT, TINY_SHAPES, shared_run

FORMATS = ("onnx", "openvino", "pt2")
EXPORT_ALL = "export=[onnx,openvino,pt2]"
SHAPE = (3, 32, 32)


def litcompress(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The `litcompress` command in a fresh process (as `python -m litcompress`)."""
    return subprocess.run(
        [sys.executable, "-m", "litcompress", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli(capsys, caplog):
    """The `litcompress` command in this process (fast, for messages): ``cli(*args)`` returns an
    object with ``returncode``, ``stdout`` and ``stderr`` (the log included)."""
    from types import SimpleNamespace

    from litcompress.cli import main

    def call(*args: str) -> SimpleNamespace:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="litcompress"):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's own refusals
                code = exit.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err + caplog.text)

    return call


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory) -> Path:
    """A pruned ResNet-8 on shapes (RGB, 32x32) that exports to every format at its end."""
    overrides = [
        *FAST,
        "data=shapes",
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=40",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "trainer.limit_test_batches=5",
        "model=resnet",
        "model.depth=8",
        "compress=prune",
        EXPORT_ALL,
    ]
    return shared_run(tmp_path_factory, "deploy_pruned_shapes", overrides)


@pytest.fixture(scope="session")
def qat_digits_run(tmp_path_factory) -> Path:
    """A QAT ResNet-8 on digits trained enough for int8 parity, exporting every format as int8.

    (A network trained for a few batches has near-tied logits: int8 rounding flips them.)
    """
    overrides = [
        "trainer=cpu",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "model=resnet",
        "model.depth=8",
        "trainer.max_epochs=4",
        "compress=qat",
        "compress.qat.start_epoch=2",
        "report.enabled=false",
        EXPORT_ALL,
    ]
    return shared_run(tmp_path_factory, "deploy_qat_digits", overrides)


def images_of(data, folder: Path, count: int) -> list[Path]:
    """Write the first ``count`` test images of ``data`` (unnormalised) as PNG files."""
    data.setup()
    folder.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(data.mean).view(-1, 1, 1)
    std = torch.tensor(data.std).view(-1, 1, 1)
    paths = []
    for index in range(count):
        x, _ = data.test_set[index]
        pixels = (x * std + mean).clamp(0, 1)
        path = folder / f"{index:03d}.png"
        to_pil_image(pixels).save(path)
        paths.append(path)
    return paths


def delivered_checkpoint(run_dir: Path) -> Path:
    report = json.loads((run_dir / "report.json").read_text())
    return run_dir / report["delivered"]["checkpoint"]


# -- export at the end of a run -----------------------------------------------------------------
@pytest.mark.slow
def test_a_run_exports_every_format_checked_measured_and_reported(pruned_run):
    report = json.loads((pruned_run / "report.json").read_text())
    exports = report["export"]
    for fmt, suffix in zip(FORMATS, (".onnx", ".xml", ".pt2"), strict=True):
        entry = exports[fmt]
        path = pruned_run / entry["file"]
        assert path.suffix == suffix and path.is_file()
        assert entry["precision"] == "fp32"
        assert entry["parity"]["passed"] and entry["parity"]["max_rel_diff"] <= 1e-4
        assert entry["parity"]["images"] == 40  # the run's own test images
        assert entry["latency_ms_b1"] > 0 and entry["latency_ms_b32"] > 0
        files = [path, path.with_suffix(".bin")] if fmt == "openvino" else [path]
        size = sum(f.stat().st_size for f in files)  # an OpenVINO IR is two files
        # Measured before the run's report joined the metadata (a few kB; ONNX holds it inside).
        assert 0.9 * size <= entry["bytes"] <= size
        meta = read_metadata(path)
        assert meta["report"]["after"] == report["after"]  # the run's report rides along
        assert meta["inputs"]["classes"] == list(SHAPE_NAMES)
        assert meta["inputs"]["mean"] == [0.5] * 3 and meta["inputs"]["std"] == [0.25] * 3
        assert meta["litcompress_version"]
    timed = {"delivered": report["after"], **{f: exports[f] for f in FORMATS}}
    assert exports["fastest_b32"] == min(timed, key=lambda k: timed[k]["latency_ms_b32"])
    assert exports["fastest_b1"] == min(timed, key=lambda k: timed[k]["latency_ms_b1"])
    # The exported network is the pruned one the run delivered.
    pruned = load_network(delivered_checkpoint(pruned_run))
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert min(widths) < 16
    graph = onnx.load(str(pruned_run / "export/model.onnx")).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    assert any(dims and dims[0] == min(widths) for dims in weights.values())
    # The dynamic batch dimension has a readable name (Netron, ONNX Runtime's profiler show it).
    for value in (graph.input[0], graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.slow
def test_a_qat_run_exports_int8_with_the_ranges_it_learned(qat_digits_run):
    for fmt, name in zip(
        FORMATS, ("model_int8.onnx", "model_int8.xml", "model_int8.pt2"), strict=True
    ):
        path = qat_digits_run / "export" / name
        meta = read_metadata(path)
        assert meta["precision"] == "int8" and meta["format"] == fmt
        parity = meta["parity"]
        assert parity["passed"] and parity["against"] == "torch's int8 model"
        assert parity["top1_agreement"] >= 0.98 and parity["max_rel_diff"] <= 0.05
        # int8's cost: against the float network of the QAT weights (fake quantization off).
        cost = meta["accuracy"]
        assert cost["images"] == 360 and cost["fp32_acc"] > 0.5  # digits' whole test split
        assert abs(cost["drop"]) <= 0.03 and cost["within_tolerance"] is (cost["drop"] <= 0.01)
        assert load_artifact(path, compile=False).precision == "int8"
    graph = onnx.load(str(qat_digits_run / "export/model_int8.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # The scales are those of the trained observers (carried over, not calibrated again).
    network = load_network(delivered_checkpoint_of_qat(qat_digits_run))
    learned = {
        round(float(m.scale), 6)
        for m in network.modules()
        if type(m).__name__ == "FusedMovingAvgObsFakeQuantize" and m.scale.numel() == 1
    }
    scales = {
        round(float(onnx.numpy_helper.to_array(i)), 6)
        for i in graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and list(i.dims) == []
    }
    assert learned and learned <= scales


@pytest.fixture(scope="session")
def ptq_run(tmp_path_factory, trained_resnet8) -> Path:
    """The docs' recipe: a trained checkpoint quantized after training, no epoch, exported."""
    overrides = [
        *FAST,
        f"init_from={trained_resnet8}",
        "compress=ptq",
        "compress.ptq.calibration_batches=3",
        "trainer.max_epochs=0",
        "export=[openvino,onnx]",
    ]
    return shared_run(tmp_path_factory, "deploy_ptq_digits", overrides)


@pytest.mark.slow
def test_a_ptq_run_exports_int8_with_the_ranges_it_calibrated(ptq_run):
    report = json.loads((ptq_run / "report.json").read_text())
    # A run that trained no epoch still keeps the network it delivers (export and init_from).
    assert report["delivered"] == {"checkpoint": "checkpoints/last.ckpt", "artifact": ARTIFACT}
    assert read_checkpoint(ptq_run / "checkpoints/last.ckpt")["epoch"] == 0
    # int8's cost is measured on the labelled test images, against the float network's.
    data = DigitsData(seed=42)
    data.setup("test")
    images, labels = labelled_images(data.test_dataloader())
    with torch.no_grad():
        float_net = load_network(ptq_run / "checkpoints/last.ckpt").eval()
        fp32_acc = float((float_net(images).argmax(1) == labels).float().mean())
        int8 = load_artifact(ptq_run / ARTIFACT, compile=False)
        int8_acc = float((int8(images).argmax(1) == labels).float().mean())
    for fmt, name in (("openvino", "model_int8.xml"), ("onnx", "model_int8.onnx")):
        entry = report["export"][fmt]
        assert entry["file"] == f"export/{name}" and entry["precision"] == "int8"
        assert entry["parity"]["passed"] and entry["parity"]["against"] == "torch's int8 model"
        cost = entry["accuracy"]
        assert cost["images"] == len(labels)  # every test image (fewer than COST_IMAGES)
        assert cost["fp32_acc"] == pytest.approx(fp32_acc, abs=1e-6)
        assert cost["acc"] == pytest.approx(int8_acc, abs=0.02)
        assert cost["drop"] == pytest.approx(cost["fp32_acc"] - cost["acc"])
        meta = read_metadata(ptq_run / entry["file"])
        assert meta["method"] == "ptq" and meta["precision"] == "int8"
        assert load_artifact(ptq_run / entry["file"]).precision == "int8"
    ops = {node.op_type for node in onnx.load(str(ptq_run / "export/model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # The ranges are PTQ's: the ONNX scales are those of the run's own int8 program.
    program = torch.export.load(ptq_run / ARTIFACT)
    ranges = {
        round(float(a), 6)
        for n in program.graph.nodes
        for a in n.args[1:2]
        if "quantize_per_tensor" in str(n.target) and isinstance(a, float)
    }
    graph = onnx.load(str(ptq_run / "export/model_int8.onnx")).graph
    scales = {
        round(float(onnx.numpy_helper.to_array(i)), 6)
        for i in graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and list(i.dims) == []
    }
    assert ranges and ranges <= scales


ARTIFACT = "model_int8.pt2"


@pytest.mark.slow
@pytest.mark.parametrize("source", ["run", ARTIFACT])
def test_litcompress_exports_a_ptq_run_or_its_int8_program_and_predicts(
    ptq_run, source, tmp_path, cli
):
    run_dir = tmp_path / "run"
    shutil.copytree(ptq_run, run_dir, ignore=shutil.ignore_patterns("export", "tensorboard"))
    given = run_dir if source == "run" else run_dir / ARTIFACT
    result = cli("export", str(given), "--format", "openvino")  # int8: what the run delivered
    assert result.returncode == 0, result.stderr[-3000:]
    xml = run_dir / "export" / "model_int8.xml"
    meta = read_metadata(xml)
    assert meta["precision"] == "int8" and meta["method"] == "ptq" and meta["parity"]["passed"]
    assert meta["accuracy"]["fp32_acc"] is not None  # the run's float checkpoint came with it
    assert meta["inputs"]["classes"] == [str(i) for i in range(10)]
    # Predicted in a fresh process as torch's int8 model predicts (one near-tie may flip).
    files = images_of(DigitsData(), tmp_path / "digits", 24)
    output = tmp_path / "predictions.json"
    result = litcompress("predict", str(xml), *map(str, files), "--output", str(output))
    got = predicted(result, output)
    int8 = load_artifact(run_dir / ARTIFACT, compile=False)
    preprocessing = Preprocessing.from_inputs(meta["inputs"], "run")
    logits = int8(torch.stack([preprocessing.load(f) for f in files]))
    classes = meta["inputs"]["classes"]
    wanted = {f.name: classes[int(i)] for f, i in zip(files, logits.argmax(1), strict=True)}
    assert sum(got[name] == wanted[name] for name in wanted) >= len(wanted) - 1


@pytest.mark.slow
def test_an_int8_program_alone_exports_int8_only(ptq_run, tmp_path, cli):
    alone = tmp_path / ARTIFACT  # outside its run: no float network, no report
    shutil.copy(ptq_run / ARTIFACT, alone)
    shutil.copy(ptq_run / f"{ARTIFACT}.json", tmp_path / f"{ARTIFACT}.json")
    result = cli("export", str(alone), "--format", "onnx", "--fp32")
    assert result.returncode == 2 and "int8 model without its float network" in result.stderr
    result = cli("export", str(alone), "--format", "onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = read_metadata(tmp_path / "export" / "model_int8.onnx")
    assert meta["parity"]["passed"] and meta["accuracy"]["fp32_acc"] is None
    assert "no float network at hand" in result.stderr


def delivered_checkpoint_of_qat(run_dir: Path) -> Path:
    # report.enabled=false: the tested checkpoint is the best one of the QAT form.
    return next((run_dir / "checkpoints").glob("epoch*.ckpt"))


# -- predict in fresh processes -----------------------------------------------------------------
def predicted(result: subprocess.CompletedProcess, output: Path) -> dict[str, str]:
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(output.read_text())
    return {Path(r["file"]).name: r["predictions"][0]["class"] for r in rows}


def top1_in_process(net: nn.Module, files: list[Path], preprocessing: Preprocessing, classes):
    with torch.no_grad():
        logits = net.eval()(torch.stack([preprocessing.load(f) for f in files]))
    return {f.name: classes[int(i)] for f, i in zip(files, logits.argmax(1), strict=True)}


@pytest.mark.slow
@pytest.mark.parametrize(
    "artifact", ["ckpt", "export/model.onnx", "export/model.xml", "export/model.pt2"]
)
def test_predict_in_a_fresh_process_gives_the_training_side_top1(pruned_run, artifact, tmp_path):
    data = ShapesData(num_train=8, num_val=8, num_test=12, batch_size=8)
    files = images_of(data, tmp_path / "images", 12)
    path = delivered_checkpoint(pruned_run) if artifact == "ckpt" else pruned_run / artifact
    output = tmp_path / "predictions.json"
    result = litcompress("predict", str(path), str(tmp_path / "images"), "--output", str(output))
    net = load_network(delivered_checkpoint(pruned_run))
    inputs = read_checkpoint(delivered_checkpoint(pruned_run))["litcompress"]["inputs"]
    preprocessing = Preprocessing.from_inputs(inputs, "run")
    assert predicted(result, output) == top1_in_process(net, files, preprocessing, SHAPE_NAMES)


@pytest.fixture(scope="module")
def digit_files(qat_digits_run, tmp_path_factory) -> tuple[list[Path], dict[str, str]]:
    """40 digit test images as files, and the QAT network's top-1 class of each."""
    # Digits ink is bright on dark, counted in 17 levels: the files hold the same pixels.
    files = images_of(DigitsData(), tmp_path_factory.mktemp("digits"), 40)
    checkpoint = delivered_checkpoint_of_qat(qat_digits_run)
    inputs = read_checkpoint(checkpoint)["litcompress"]["inputs"]
    preprocessing = Preprocessing.from_inputs(inputs, "run")
    return files, top1_in_process(load_network(checkpoint), files, preprocessing, inputs["classes"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "artifact", ["model_int8.pt2", "export/model_int8.onnx", "export/model_int8.xml"]
)
def test_int8_artifacts_predict_digit_files_like_the_qat_network(
    qat_digits_run, digit_files, artifact, tmp_path
):
    files, wanted = digit_files
    output = tmp_path / "predictions.csv"
    result = litcompress(
        "predict",
        str(qat_digits_run / artifact),
        *map(str, files),
        "--output",
        str(output),
        "--top-k",
        "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = output.read_text().splitlines()
    assert lines[0] == "file,class_1,index_1,probability_1"
    got = {Path(line.split(",")[0]).name: line.split(",")[1] for line in lines[1:]}
    agree = sum(got[name] == wanted[name] for name in wanted)
    assert agree >= len(wanted) - 1, (got, wanted)  # int8 rounding may flip one near-tie


# -- evaluate -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["ckpt", "export/model.xml"])
def test_evaluate_matches_the_run_report(pruned_run, artifact, tmp_path):
    path = delivered_checkpoint(pruned_run) if artifact == "ckpt" else pruned_run / artifact
    output = tmp_path / "evaluation.json"
    # The data the run recorded, limited as the run's test was (5 batches of 8 = all 40 images).
    result = litcompress("evaluate", str(path), "--min-run-time", "0.05", "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    report = json.loads((pruned_run / "report.json").read_text())
    assert figures["test_images"] == 40
    assert figures["test_acc"] == pytest.approx(report["after"]["test_acc"], abs=1e-6)
    assert figures["latency_ms_b1"] > 0 and figures["measured_on"]["cpu"]
    assert "test accuracy" in result.stdout


# -- the metadata: preprocessing as in training -------------------------------------------------
def test_checkpoints_record_preprocessing_class_names_and_data(pruned_run):
    record = read_checkpoint(pruned_run / "checkpoints" / "last.ckpt")["litcompress"]
    assert record["inputs"] == {
        "image_size": 32,
        "channels": 3,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "classes": list(SHAPE_NAMES),
    }
    assert record["data"]["_target_"] == "litcompress.data.ShapesData"


def test_digits_record_their_own_statistics():
    data = DigitsData()
    record = data.inputs_record()
    data.setup()
    x = torch.stack([data.train_set[i][0] for i in range(len(data.train_set))])
    assert record["mean"][0] != 0.5 and record["classes"] == [str(d) for d in range(10)]
    # Normalised with the recorded statistics, the training pixels have mean 0 and std 1.
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2


def test_image_folder_files_are_prepared_exactly_as_in_training(tmp_path):
    for index, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for k in range(3):
            colour = (index * 120, 40 * k, 200)
            Image.new("RGB", (50, 37), colour).save(tmp_path / name / f"{k}.png")
    Image.new("L", (20, 20), 90).save(tmp_path / "cat" / "gray.png")
    for channels in (3, 1):
        data = ImageFolderData(str(tmp_path), image_size=16, channels=channels, num_workers=0)
        record = data.inputs_record()
        assert record["classes"] == ["cat", "dog"] and record["channels"] == channels
        preprocessing = Preprocessing.from_inputs(record, "run")
        eval_transform = data.eval_transform()
        for path in sorted(tmp_path.rglob("*.png")):
            with Image.open(path) as image:
                expected = eval_transform(image.convert("RGB"))  # ImageFolder's own loader
            got = preprocessing.load(path)
            assert got.shape == (channels, 16, 16)
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("mode, channels", [("L", 3), ("RGB", 1), ("RGBA", 3), ("P", 3)])
def test_grayscale_colour_and_alpha_images_are_converted_as_in_training(tmp_path, mode, channels):
    path = tmp_path / "image.png"
    Image.new(mode, (10, 6), 100 if mode in ("L", "P") else (100, 150, 200, 255)[: len(mode)]).save(
        path
    )
    preprocessing = Preprocessing(
        image_size=8, channels=channels, mean=[0.5] * channels, std=[0.5] * channels
    )
    x = preprocessing.load(path)
    assert x.shape == (channels, 8, 8)
    if mode == "L":  # the grey value in every channel
        assert torch.allclose(x, torch.full_like(x, (100 / 255 - 0.5) / 0.5), atol=1e-6)
    if mode == "RGB":  # torchvision's luma weights, truncated to 8 bits (then / std 0.5)
        grey = (0.2989 * 100 + 0.587 * 150 + 0.114 * 200) / 255
        assert torch.allclose(x, torch.full_like(x, (grey - 0.5) / 0.5), atol=2 / 255)


def test_shapes_pixels_survive_the_trip_through_image_files(tmp_path):
    data = ShapesData(num_train=8, num_val=8, num_test=4, batch_size=4)
    files = images_of(data, tmp_path, 4)
    preprocessing = Preprocessing.from_inputs(data.inputs_record(), "run")
    for index, path in enumerate(files):
        # PNG holds 8-bit pixels (to_pil_image truncates): within a level, divided by the std.
        torch.testing.assert_close(
            preprocessing.load(path), data.test_set[index][0], atol=1 / 255 / 0.25 + 1e-6, rtol=0
        )


# -- bad input ----------------------------------------------------------------------------------
def test_an_unknown_format_is_refused_before_any_work(pruned_run, make_config, cli):
    result = cli("export", str(pruned_run), "--format", "tflite")
    assert result.returncode == 2
    assert "invalid choice: 'tflite'" in result.stderr and "onnx" in result.stderr
    with pytest.raises(ConfigError, match=r"export='tflite' is not an export format.*onnx"):
        check_inputs(make_config("export=[onnx,tflite]"))


def test_export_refuses_precisions_the_network_cannot_give(pruned_run, qat_digits_run, cli):
    result = cli("export", str(pruned_run), "--format", "onnx", "--int8")
    assert result.returncode == 2
    assert "holds a float network, with no quantization ranges" in result.stderr
    result = cli("export", str(qat_digits_run), "--format", "onnx", "--fp32")
    assert result.returncode == 2
    assert "quantization-aware network" in result.stderr and "--int8" in result.stderr


def test_fx_quantized_networks_name_the_backend_that_exports():
    config = {
        "_target_": "litcompress.models.SmallCNN",
        "num_classes": 3,
        "in_channels": 3,
        "image_size": 16,
        "width": 4,
    }
    net = prepare(rebuild_network(config, {}), "fx", (3, 16, 16))
    deliverable = Deliverable(net, (3, 16, 16), "SmallCNN", {}, "test")
    with pytest.raises(ConfigError, match="compress.qat.backend=fx.*backend pt2e"):
        export(deliverable, "onnx", Path("unused.onnx"), torch.zeros(1, 3, 16, 16))


def test_export_names_what_it_was_given_when_it_is_not_a_run(tmp_path, cli):
    (tmp_path / "notes.txt").write_text("hello")
    for source, message in [
        (tmp_path / "notes.txt", "neither a run folder, a .ckpt checkpoint nor a run's int8"),
        (tmp_path / "missing.ckpt", "it does not exist"),
        (tmp_path, "a folder without the checkpoint or int8 model of a litcompress run"),
    ]:
        result = cli("export", str(source), "--format", "onnx")
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_export_of_a_checkpoint_writes_into_its_run_and_uses_the_runs_data(
    pruned_run, tmp_path, cli
):
    run_dir = tmp_path / "run"
    shutil.copytree(pruned_run, run_dir, ignore=shutil.ignore_patterns("export", "tensorboard"))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    result = cli("export", str(checkpoint), "--format", "onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = read_metadata(run_dir / "export" / "model.onnx")
    assert Path(meta["source"]).resolve() == checkpoint.resolve()
    assert meta["parity"]["images"] == 40 and meta["parity"]["passed"]
    assert meta["report"]["after"]["test_acc"] is not None
    wrong = cli("export", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "m.xml"))
    assert wrong.returncode == 2 and "ends in .onnx" in wrong.stderr


class _Bessel(nn.Module):
    """A network with an op that torch.export captures but ONNX has no translation for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(self.conv(x)).mean((2, 3))


class _DataDependent(nn.Module):
    """A network whose control flow depends on the data: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        if y.sum() > 0:
            return y
        return -y


def test_a_network_that_cannot_be_exported_names_the_op_and_the_fallback(tmp_path):
    inputs = torch.randn(4, *SHAPE)
    bessel = Deliverable(_Bessel().eval(), SHAPE, "Bessel", {}, "test")
    with pytest.raises(ExportError, match=r"op prims\.bessel_j0.*--format pt2 exports it"):
        export(bessel, "onnx", tmp_path / "model.onnx", inputs)
    with pytest.raises(ExportError, match=r"bessel_j0.*--format pt2"):
        export(bessel, "openvino", tmp_path / "model.xml", inputs)
    exported = export(bessel, "pt2", tmp_path / "model.pt2", inputs)  # the fallback works
    assert exported.parity["passed"]
    flow = Deliverable(_DataDependent().eval(), SHAPE, "DataDependent", {}, "test")
    with pytest.raises(ConfigError, match="torch.export cannot capture .*litcompress predict"):
        export(flow, "onnx", tmp_path / "flow.onnx", inputs)


def test_a_failed_parity_check_keeps_the_artifact_marked_and_fails(tmp_path, monkeypatch):
    config = {
        "_target_": "litcompress.models.SmallCNN",
        "num_classes": 3,
        "in_channels": 3,
        "image_size": 32,
        "width": 4,
    }
    deliverable = Deliverable(rebuild_network(config, {}).eval(), SHAPE, "SmallCNN", {}, "test")
    inputs = torch.randn(8, *SHAPE)
    monkeypatch.setattr(export_module, "FP32_TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(ExportError, match="failed its parity check.*do not deploy it"):
        export(deliverable, "onnx", tmp_path / "model.onnx", inputs)
    meta = read_metadata(tmp_path / "model.onnx")
    assert meta["parity"]["passed"] is False


@pytest.mark.slow
def test_a_run_whose_export_fails_keeps_its_results_and_exits_1(make_config, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "FP32_TOLERANCE", -1.0)
    cfg = make_config(*FAST, *TINY_SHAPES, "model=cnn", "model.width=4", "export=[onnx]")
    with pytest.raises(ExportError, match="onnx: .*failed its parity check"):
        run(cfg)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "failed its parity check" in report["export"]["onnx"]["error"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_an_artifact_without_metadata_predicts_when_told_its_preprocessing(
    pruned_run, tmp_path, cli
):
    model = onnx.load(str(pruned_run / "export" / "model.onnx"))
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, str(plain))
    assert read_metadata(plain) is None
    images = images_of(
        ShapesData(num_train=8, num_val=8, num_test=3, batch_size=4), tmp_path / "images", 3
    )
    refused = cli("predict", str(plain), *map(str, images))
    assert refused.returncode == 2
    # The ONNX input declares 3x32x32: only the normalisation is missing.
    assert "--mean, --std" in refused.stderr and "--image-size" not in refused.stderr
    names = ",".join(f"shape{i}" for i in range(10))
    output = tmp_path / "predictions.json"
    told = cli(
        "predict",
        str(plain),
        *map(str, images),
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--classes",
        names,
        "--output",
        str(output),
    )
    assert told.returncode == 0, told.stderr[-3000:]
    assert all(
        row["predictions"][0]["class"].startswith("shape") for row in json.loads(output.read_text())
    )
    few = cli(
        "predict", str(plain), str(images[0]), "--mean", "0.5", "--std", "0.25", "--classes", "a,b"
    )
    assert (
        few.returncode == 2 and "2 class names were given for a network of 10 outputs" in few.stderr
    )


def test_unreadable_files_are_listed_and_skipped_and_the_exit_code_says_so(
    pruned_run, tmp_path, cli
):
    folder = tmp_path / "images"
    images = images_of(ShapesData(num_train=8, num_val=8, num_test=3, batch_size=4), folder, 3)
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.jpg").write_text("text with an image suffix")
    Image.open(images[0]).convert("L").save(folder / "grey.png")  # grayscale for an RGB model
    output = tmp_path / "predictions.json"
    result = cli(
        "predict", str(pruned_run / "export" / "model.onnx"), str(folder), "--output", str(output)
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert (
        "Skipped" in result.stderr
        and "broken.png" in result.stderr
        and "notes.jpg" in result.stderr
    )
    assert "2 of 6 files were skipped" in result.stderr
    rows = json.loads(output.read_text())
    assert sorted(Path(r["file"]).name for r in rows) == [
        "000.png",
        "001.png",
        "002.png",
        "grey.png",
    ]
    assert len(rows[0]["predictions"]) == 5  # --top-k 5 by default


@pytest.mark.parametrize(
    "args, message",
    [
        (["nowhere/*.png"], "matches no file"),
        (["missing.png"], "does not exist"),
        (["{images}", "--output", "out.txt"], "use .csv or .json"),
        (["{images}", "--top-k", "0"], "--top-k 0 must be at least 1"),
    ],
)
def test_predict_refuses_bad_arguments_with_the_fix(pruned_run, tmp_path, args, message, cli):
    images = tmp_path / "images"
    images_of(ShapesData(num_train=8, num_val=8, num_test=1, batch_size=4), images, 1)
    args = [a.format(images=images) for a in args]
    result = cli("predict", str(pruned_run / "export" / "model.onnx"), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_globs_folders_and_files_are_gathered_once_each(tmp_path):
    from litcompress.deploy.predict import gather_images

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.jpg", "a/b/3.txt", "4.png"):  # 3.txt: a PNG by its content
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    (tmp_path / "a" / "b" / "notes.txt").write_text("not an image")
    found = gather_images(
        [str(tmp_path / "a"), str(tmp_path / "**" / "*.png"), str(tmp_path / "4.png")]
    )
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["a/1.png", "a/b/2.jpg", "a/b/3.txt", "4.png"]


def test_evaluate_refuses_data_of_another_shape(pruned_run, cli):
    result = cli("evaluate", str(pruned_run / "export" / "model.onnx"), "data=digits")
    assert result.returncode == 2
    assert "takes images of shape (3, 32, 32)" in result.stderr and "(1, 8, 8)" in result.stderr
    result = cli("evaluate", str(pruned_run / "export" / "model.onnx"), "optim.lr=1")
    assert result.returncode == 2 and "only data overrides" in result.stderr


def test_the_command_is_installed_with_the_package():
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="litcompress")
    assert script.value == "litcompress.cli:main"
    result = litcompress("--version")
    assert result.returncode == 0 and result.stdout.startswith("litcompress ")


def test_real_inputs_take_the_first_images_of_the_loader():
    batches = [(torch.full((4, 1, 2, 2), float(i)), torch.zeros(4)) for i in range(5)]
    x = real_inputs(batches, images=10)
    assert x.shape == (10, 1, 2, 2) and float(x[9].max()) == 2.0
    assert copy.deepcopy(x).dtype == torch.float32


class _Fixed(nn.Module):
    """Returns the given logits of the images, whose one value is their index."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def test_int8_fidelity_is_the_distance_to_torchs_int8_model_not_top1_on_near_ties():
    from litcompress.deploy.export import check_parity, describe_parity

    torch_int8 = torch.tensor([[1.0, 0.99, 0.0]] * 10 + [[5.0, 0.0, 0.0]] * 90)
    faithful = torch_int8.clone()
    faithful[:10, 1] += 0.02  # another runtime's rounding flips the ten near-ties of an unsure net
    images = torch.arange(100.0)[:, None]
    parity = check_parity(_Fixed(faithful), _Fixed(torch_int8), images, int8=True)
    # 90% agreement: a top-1 check at 99% would fail this faithful artifact.
    assert parity["passed"] and parity["top1_agreement"] == pytest.approx(0.9)
    assert parity["disagreements"] == 10 and parity["near_ties"] == 10
    assert "passed" in describe_parity(parity) and "90.00%" in describe_parity(parity)
    wrong = faithful.clone()
    wrong[10:20] = torch.tensor([0.0, 0.0, 5.0])  # confident images moved to another class
    parity = check_parity(_Fixed(wrong), _Fixed(torch_int8), images, int8=True)
    assert not parity["passed"] and parity["max_rel_diff"] == pytest.approx(1.0)
    assert parity["top1_agreement"] == pytest.approx(0.8)
    assert "FAILED" in describe_parity(parity)


def test_the_report_names_the_checkpoint_the_run_delivers(tmp_path):
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from litcompress.deliver import delivered

    callback = ModelCheckpoint(dirpath=tmp_path / "checkpoints")
    callback.best_model_path = str(tmp_path / "checkpoints" / "epoch003.ckpt")
    callback.last_model_path = str(tmp_path / "checkpoints" / "last.ckpt")
    trainer = SimpleNamespace(checkpoint_callback=callback)
    # Testing loads the best checkpoint into the network the run delivers; without it, the last.
    assert (
        delivered(trainer, tmp_path, None, tested=True)["checkpoint"] == "checkpoints/epoch003.ckpt"
    )
    assert delivered(trainer, tmp_path, None, tested=False)["checkpoint"] == "checkpoints/last.ckpt"
