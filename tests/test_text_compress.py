"""Every technique on a Transformer text classifier (a tiny BERT): whole attention heads and FFN
neurons pruned and reloaded in a fresh process, int8 that quantizes every linear layer and
exports with its ranges, distillation of logits, hidden states and attention maps checked by
hand, sparsity masks kept through resume, sensitivity per heads and FFN, and the pipeline
``compress=[prune,distill,qat]`` in one command, under DDP and resumed after SIGKILL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F

from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.compress import DistillCallback, QATCallback
from litcompress.compress.distill import AttentionDistillation, FeatureDistillation
from litcompress.compress.prune import graph_options, prune_step
from litcompress.deploy.int8 import load_program
from litcompress.models.attention import attention_modules, head_counts
from litcompress.models.text import BertClassifier
from litcompress.sensitivity import analyse, prune_one
from litcompress.spec import InputSpec
from tests.conftest import ROOT
from tests.test_cli import train_py
from tests.test_resume import assert_same_checkpoints, killed_then_resumed
from tests.test_text import FAST_TEXT, text_run, texts, write_csv

# A BERT of 2 layers x 32 with 4 heads of 8 and an FFN of 64: heads can go one by one.
TINY = [*FAST_TEXT, "model.layers=2", "model.heads=4"]
WHOLE = ["trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0"]
SPEC = InputSpec.tokens(200, 16, 16)
ATTENTION = "model.bert.encoder.layer.{}.attention.self"


def tiny_bert(seed: int = 0, vocab_size: int = 200, **options) -> BertClassifier:
    torch.manual_seed(seed)
    return BertClassifier(
        2, vocab_size, 16, **{"layers": 2, "hidden": 32, "heads": 4, "ffn": 64, **options}
    )


def run_text(csv: Path, *overrides: str, output_dir: Path) -> dict:
    text_run(csv, *TINY, *overrides, output_dir=output_dir, fast=[])
    report = output_dir / "report.json"
    return json.loads(report.read_text()) if report.exists() else {}


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("texts") / "texts.csv", texts(120))


@pytest.fixture(scope="module")
def teacher(csv_path, tmp_path_factory) -> Path:
    """last.ckpt of the tiny BERT trained until it tells the classes apart."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run_text(csv_path, "trainer.max_epochs=5", *WHOLE, "report.enabled=false", output_dir=out)
    return out / "checkpoints" / "last.ckpt"


def inputs_of(checkpoint: Path) -> InputSpec:
    """The inputs the network of ``checkpoint`` takes (its tokenizer's vocabulary)."""
    return InputSpec.of_record(read_checkpoint(checkpoint)["litcompress"])


# -- pruning ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("ratio", "kept"), [(0.3, 2), (0.5, 2), (0.75, 1), (0.95, 1)])
def test_a_ratio_keeps_int_heads_times_one_minus_ratio_one_at_least(ratio, kept):
    net = tiny_bert().eval()
    example = SPEC.example(1, zeros=True)
    keep = [net.model.classifier, net.model.bert.embeddings.word_embeddings]
    pruner = tp.pruner.BasePruner(
        net,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=keep,
        **graph_options(net, ratio),
    )
    prune_step(pruner, net)
    assert set(head_counts(net).values()) == {kept}
    for attention in attention_modules(net):
        assert attention.module.num_attention_heads == kept
        assert attention.module.all_head_size == kept * 8 == attention.projections[2].out_features
    assert net.model.bert.embeddings.word_embeddings.embedding_dim == 32  # hidden width kept
    assert net.model.bert.encoder.layer[0].intermediate.dense.out_features == int(64 * (1 - ratio))


def test_removed_heads_compute_what_the_network_computes_without_them():
    net = tiny_bert().eval()
    pruned = prune_one(net, ATTENTION.format(0), 0.5, SPEC)  # that layer's heads, nothing else
    assert head_counts(pruned) == {ATTENTION.format(0): 2, ATTENTION.format(1): 4}
    # Which heads stayed: the query rows the pruned layer kept, 8 per head.
    query = net.get_submodule(ATTENTION.format(0)).query.weight.view(4, 8, 32)
    kept = pruned.get_submodule(ATTENTION.format(0)).query.weight.view(2, 8, 32)
    stayed = [h for h in range(4) if any(torch.equal(query[h], k) for k in kept)]
    assert len(stayed) == 2
    # The reference: the unpruned network with the other heads' outputs silenced.
    silenced = tiny_bert().eval()
    silenced.load_state_dict(net.state_dict())
    with torch.no_grad():
        dense = silenced.model.bert.encoder.layer[0].attention.output.dense.weight.view(32, 4, 8)
        dense[:, [h for h in range(4) if h not in stayed]] = 0
    ids, mask = SPEC.example(3)
    mask[0, 10:] = 0
    torch.testing.assert_close(pruned(ids, mask), silenced(ids, mask), atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def pruned_run(csv_path, teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pruned") / "run"
    run_text(
        csv_path, f"init_from={teacher}", "compress=prune", "trainer.max_epochs=1", output_dir=out
    )
    return out


def test_pruned_heads_are_reported_and_reload_in_a_fresh_process(pruned_run):
    report = json.loads((pruned_run / "report.json").read_text())
    heads = report["prune"]["heads"]
    assert heads == {ATTENTION.format(i): [4, 2] for i in range(2)}
    assert "attention heads 8 -> 4 (2, 2 per layer)" in report["prune"]["summary"]
    widths = report["prune"]["steps"][-1]["widths"]
    assert widths["model.bert.encoder.layer.1.intermediate.dense"] == 32  # FFN 64 -> 32
    assert widths["model.bert.encoder.layer.1.output.dense"] == 32  # hidden width kept
    heads, same = reloaded_in_a_fresh_process(pruned_run / "checkpoints" / "last.ckpt")
    assert heads == [2, 2] and same


def reloaded_in_a_fresh_process(checkpoint: Path) -> tuple[list[int], bool]:
    """The head counts of the network of ``checkpoint`` loaded in a fresh process, and whether
    it gives the logits it gives here."""
    ids, mask = inputs_of(checkpoint).example(4)
    folder = checkpoint.parents[1]
    torch.save({"ids": ids, "mask": mask}, folder / "inputs.pt")
    here = load_network(checkpoint)(ids, mask)
    code = (
        "import sys, torch\n"
        "from litcompress.checkpoint import load_network\n"
        "from litcompress.models.attention import head_counts\n"
        "net = load_network(sys.argv[1])\n"
        "x = torch.load(sys.argv[2])\n"
        "print(sorted(head_counts(net).values()))\n"
        "torch.save(net(x['ids'], x['mask']), sys.argv[3])\n"
    )
    out = folder / "logits.pt"
    result = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint), str(folder / "inputs.pt"), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    heads = json.loads(result.stdout.strip().splitlines()[-1])
    return heads, torch.equal(torch.load(out), here)


def test_encoder_layers_go_whole_and_reload_in_a_fresh_process(csv_path, teacher, tmp_path):
    out = tmp_path / "run"
    report = run_text(
        csv_path,
        f"init_from={teacher}",
        "compress=prune",
        "compress.prune.ratio=0",
        "compress.prune.depth=1",
        "trainer.max_epochs=1",
        output_dir=out,
    )
    depth = report["prune"]["depth"]
    layers = [f"model.bert.encoder.layer.{i}" for i in range(2)]
    assert depth["blocks"] == [2, 1] and set(depth["bypass_costs"]) == set(layers)
    assert depth["removed"] == [min(layers, key=depth["bypass_costs"].get)]
    assert report["compress"] == ["distill", "prune"]  # from the deeper network
    heads, same = reloaded_in_a_fresh_process(out / "checkpoints" / "last.ckpt")
    assert heads == [4] and same  # one layer of 4 heads left


def test_the_hidden_width_is_pruned_when_asked(csv_path, teacher, tmp_path):
    report = run_text(
        csv_path,
        f"init_from={teacher}",
        "compress=prune",
        "compress.prune.hidden=true",
        "trainer.max_epochs=1",
        output_dir=tmp_path / "run",
    )
    net = load_network(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert net.model.bert.embeddings.word_embeddings.embedding_dim == 16
    assert report["prune"]["steps"][-1]["widths"]["model.bert.encoder.layer.1.output.dense"] == 16
    assert report["after"]["test_acc"] is not None


def test_sensitivity_per_heads_and_ffn_feeds_layer_ratios(csv_path, teacher, tmp_path):
    from litcompress.data.text_files import TextFilesData

    net = load_network(teacher)
    record = read_checkpoint(teacher)["litcompress"]
    data = TextFilesData(
        path=str(csv_path), text_column="review", label_column="sentiment", max_length=16
    )
    data.use_recorded_inputs(record["inputs"])
    data.setup()
    result = analyse(net, data.val_dataloader(), 2, data.input_spec, ratios=(0.5,))
    assert set(result.curves) == {
        ATTENTION.format(0),
        ATTENTION.format(1),
        "model.bert.encoder.layer.0.intermediate.dense",
        "model.bert.encoder.layer.1.intermediate.dense",
        "model.bert.pooler.dense",
    }
    assert result.macs[ATTENTION.format(0)][0] < result.base_macs
    # layer_ratios naming an attention module removes that layer's heads alone.
    ratios = tmp_path / "layer_ratios.yaml"
    ratios.write_text(f"{ATTENTION.format(1)}: 0.75\n")
    report = run_text(
        csv_path,
        f"init_from={teacher}",
        "compress=prune",
        "compress.prune.ratio=0",
        f"compress.prune.layer_ratios={ratios}",
        "trainer.max_epochs=1",
        output_dir=tmp_path / "run",
    )
    assert report["prune"]["heads"] == {ATTENTION.format(0): [4, 4], ATTENTION.format(1): [4, 1]}


# -- int8 ---------------------------------------------------------------------------------------
def linear_weights_in_int8(program: torch.export.ExportedProgram) -> int:
    """How many linear layers of an int8 program multiply int8 (per-channel) weights."""
    nodes = list(program.graph.nodes)
    return sum(
        1
        for node in nodes
        if node.op == "call_function"
        and "linear" in str(node.target)
        and "dequantize_per_channel" in str(node.args[1].target)
    )


def attention_matmuls_in_int8(program: torch.export.ExportedProgram) -> int:
    """How many matmuls of an int8 program take two int8 (dequantized) inputs: attention's."""
    return sum(
        1
        for node in program.graph.nodes
        if node.op == "call_function"
        and "matmul" in str(node.target)
        and all("dequantize_per_tensor" in str(a.target) for a in node.args[:2])
    )


def test_post_training_int8_quantizes_every_linear_layer(csv_path, teacher, tmp_path):
    out = tmp_path / "run"
    # Not measured nor tested (minutes of compiling); the pipeline below measures and exports.
    run_text(
        csv_path,
        f"init_from={teacher}",
        "compress=ptq",
        "compress.ptq.attention=true",
        "trainer.max_epochs=0",
        "report.enabled=false",
        "test=false",
        output_dir=out,
    )
    linears = sum(isinstance(m, nn.Linear) for m in load_network(teacher).modules())
    program = load_program(out / "model_int8.pt2")
    assert linear_weights_in_int8(program) == linears == 14
    # And both attention matmuls of each layer (query x key, probabilities x value).
    assert attention_matmuls_in_int8(program) == 4
    # Embeddings and LayerNorm stay float, as the x86 int8 backend runs them.
    sidecar = json.loads((out / "model_int8.pt2.json").read_text())
    assert sidecar["method"] == "ptq" and sidecar["precision"] == "int8"


@pytest.mark.parametrize("attention", [True, False])
def test_attention_matmuls_are_int8_unless_fused_fp32_attention_is_asked(attention):
    from litcompress.quant.backends import quantize_post_training

    net = tiny_bert().eval()
    batches = [SPEC.example(4) for _ in range(2)]
    int8, _ = quantize_post_training(net, SPEC, batches, attention=attention)
    targets = [str(node.target) for node in int8.graph.nodes]
    assert any("scaled_dot_product" in t for t in targets) != attention
    assert sum("matmul" in t for t in targets) == (4 if attention else 0)
    assert net.model.config._attn_implementation == "sdpa"  # the network runs as before


# -- distillation -------------------------------------------------------------------------------
def test_text_distillation_losses_match_their_formulas_by_hand(teacher):
    teacher_net = load_network(teacher).eval()
    spec = inputs_of(teacher)
    # In eval mode: in training, the attention maps recorded are those after dropout.
    student = tiny_bert(seed=1, vocab_size=spec.vocab_size, heads=2).eval()
    ids, mask = spec.example(4)
    mask[1, 9:] = 0
    inputs = (ids, mask)
    targets = torch.tensor([0, 1, 1, 0])
    # Logits: alpha * T^2 * KL(teacher || student) over the batch.
    callback = DistillCallback(teacher_checkpoint=str(teacher), alpha=0.3, temperature=2.0)
    callback.teacher = teacher_net
    logits = student(ids, mask)
    with torch.no_grad():
        p = F.softmax(teacher_net(ids, mask) / 2.0, dim=1)
    log_q = F.log_softmax(logits / 2.0, dim=1)
    by_hand = 0.3 * 4.0 * (p * (p.log() - log_q)).sum(1).mean()
    torch.testing.assert_close(callback.distillation_loss(inputs, logits, targets), by_hand)
    # Attention maps: KL of head-averaged maps, over the query tokens the mask keeps.
    layers = {ATTENTION.format(1): ATTENTION.format(0)}
    term = AttentionDistillation(layers, 0.5, teacher_net, callback._teach)
    callback._taught = None
    term.capture(student)
    student(ids, mask)
    loss = term(inputs, logits, targets)
    term.release()
    assert student.model.config._attn_implementation != "eager"  # the student runs as before
    with torch.no_grad():
        maps_t = teacher_net.model(ids, attention_mask=mask, output_attentions=True).attentions
    student.model.set_attn_implementation("eager")
    maps_s = student.model(ids, attention_mask=mask, output_attentions=True).attentions
    pt, ps = maps_t[0].mean(1), maps_s[1].mean(1)
    rows = (pt * (pt.clamp_min(1e-12).log() - ps.clamp_min(1e-12).log())).sum(-1)
    expected = 0.5 * (rows * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-4)
    # Hidden states: squared error of the adapted student states over the kept tokens only.
    layer = "model.bert.encoder.layer.1"
    features = FeatureDistillation({layer: layer}, 1.0, teacher_net, callback._teach, spec)
    assert features.follow(student)
    callback._taught = None
    features.capture()
    student(ids, mask)
    loss = features(inputs, logits, targets)
    states_s = dict(features._student_features)[layer]
    features.release()
    with torch.no_grad():
        states_t = teacher_net.model(ids, attention_mask=mask, output_hidden_states=True)
    adapted = features.adapters[0](states_s)
    squared = (adapted - states_t.hidden_states[2]).pow(2).mean(-1)
    torch.testing.assert_close(loss, (squared * mask).sum() / mask.sum(), atol=1e-6, rtol=1e-4)


def test_a_teacher_with_another_tokenizer_is_refused(teacher, tmp_path):
    from litcompress.errors import ConfigError

    # Texts with other words: the tokenizer trained on them gives ids that mean other words.
    other = write_csv(tmp_path / "other.csv", [(f"{t} quite unlike", y) for t, y in texts(120)])
    with pytest.raises(ConfigError, match="another tokenizer than the student"):
        run_text(
            other,
            "compress=distill",
            f"compress.distill.teacher_checkpoint={teacher}",
            "trainer.max_epochs=1",
            output_dir=tmp_path / "run",
        )


# -- sparsity -----------------------------------------------------------------------------------
def test_sparsity_masks_of_a_text_model_resume_exactly(csv_path, tmp_path):
    sparse = [
        "compress=sparsity",
        "compress.sparsity.frequency=1",
        "compress.sparsity.begin_step=0",
        "compress.sparsity.end_step=4",
        "scheduler=none",
        "report.enabled=false",
    ]
    run_text(csv_path, *sparse, "trainer.max_epochs=3", output_dir=tmp_path / "whole")
    run_text(csv_path, *sparse, "trainer.max_epochs=2", output_dir=tmp_path / "first")
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run_text(
        csv_path,
        *sparse,
        "trainer.max_epochs=3",
        f"ckpt_path={first}",
        output_dir=tmp_path / "second",
    )
    whole = read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")["state_dict"]
    resumed = read_checkpoint(tmp_path / "second" / "checkpoints" / "last.ckpt")["state_dict"]
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    masks = {k: v for k, v in whole.items() if k.endswith("weight_mask")}
    assert any("attention.self.query" in k for k in masks) and any(
        "intermediate" in k for k in masks
    )
    zeros = sum(int((m == 0).sum()) for m in masks.values()) / sum(
        m.numel() for m in masks.values()
    )
    assert zeros == pytest.approx(0.75, abs=0.02)


# -- the pipeline -------------------------------------------------------------------------------
PIPELINE = [
    "compress=[prune,distill,qat]",
    "compress.distill.features=[model.bert.encoder.layer.1]",
    f"compress.distill.attention=[{ATTENTION.format(1)}]",
]


@pytest.mark.slow
def test_prune_distill_qat_on_a_text_model_in_one_command(csv_path, teacher, tmp_path):
    out = tmp_path / "run"
    report = run_text(
        csv_path,
        f"init_from={teacher}",
        *PIPELINE,
        "compress.qat.start_epoch=2",
        "trainer.max_epochs=3",
        "trainer.limit_test_batches=1.0",
        "export=[onnx,openvino]",
        output_dir=out,
    )
    assert report["compress"] == ["distill", "prune", "qat"]
    assert report["prune"]["heads"] == {ATTENTION.format(i): [4, 2] for i in range(2)}
    assert report["distill"]["attention"] == {ATTENTION.format(1): ATTENTION.format(1)}
    assert report["after"]["int8_artifact"] == "model_int8.pt2"
    assert linear_weights_in_int8(load_program(out / "model_int8.pt2")) == 14
    assert attention_matmuls_in_int8(load_program(out / "model_int8.pt2")) == 0  # fused, fp32
    for fmt in ("onnx", "openvino"):
        entry = report["export"][fmt]
        assert entry["precision"] == "int8" and entry["parity"]["passed"], entry
    # Attention dropout, captured as a constant of fused attention in training mode, is off in
    # the int8 model: it gives one answer per input, which ONNX Runtime's matches to rounding.
    program = load_program(out / "model_int8.pt2").module()
    ids, mask = inputs_of(teacher).example(8)
    assert torch.equal(program(ids, mask), program(ids, mask))
    assert report["export"]["onnx"]["parity"]["max_rel_diff"] < 1e-4
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = {"train/kd_loss", "train/feature_loss", "train/attention_loss"}
    assert losses <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_the_text_pipeline_under_ddp_on_two_cpu_processes(csv_path, teacher, tmp_path):
    result = train_py(
        "data=text_files",
        f"data.path={csv_path}",
        "data.text_column=review",
        "data.label_column=sentiment",
        *[arg for arg in TINY if arg != "trainer=debug"],
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=3",
        # From scratch: each rank trains its tokenizer, the teacher's (same data, same options).
        *PIPELINE,
        f"compress.distill.teacher_checkpoint={teacher}",
        # The int8 model is made, not measured (the pipeline test above measures it).
        "report.enabled=false",
        "test=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    tokenizers = re.findall(r"training texts, \d+ tokens \(fingerprint (\w+)\)", output)
    assert len(tokenizers) >= 2 and len(set(tokenizers)) == 1  # each rank's, and the same
    counts = set(re.findall(r"Rank \d after pruning step 1: (\d+) parameters", output))
    ranks = set(re.findall(r"Rank (\d) after pruning step 1:", output))
    assert ranks == {"0", "1"} and len(counts) == 1, output[-3000:]
    meta = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["litcompress"]
    assert meta["pruning_history"] and meta["quantization"] and meta["distill_teacher"]
    assert linear_weights_in_int8(load_program(tmp_path / "model_int8.pt2")) == 14


@pytest.mark.slow
def test_the_text_pipeline_resumes_bit_for_bit_after_sigkill(
    csv_path, teacher, tmp_path, make_config, monkeypatch
):
    from litcompress.run import run

    # What is compared is the training; the int8 conversion is tested above.
    monkeypatch.setattr(QATCallback, "deploy", lambda *args, **kwargs: None)
    overrides = [
        "data=text_files",
        f"data.path={csv_path}",
        "data.text_column=review",
        "data.label_column=sentiment",
        *TINY,
        "test=false",
        "report.enabled=false",
        "trainer.max_epochs=4",
        *PIPELINE,
        "compress.prune.start_epoch=1",
        "compress.prune.importance=taylor",  # ranked by the gradients of token batches
        f"compress.distill.teacher_checkpoint={teacher}",
        "compress.qat.start_epoch=2",
    ]
    straight = run(make_config(*overrides, output_dir=tmp_path / "straight"))
    # Killed after pruning (epoch 2 starts QAT), then again once QAT trains.
    kills = [(2, "SIGKILL"), (3, "SIGKILL")]
    folder, resume = killed_then_resumed(
        tmp_path, overrides, kills, keep=("trainer.", "model", "data")
    )
    resumed = run(make_config(*resume, output_dir=folder))
    assert resumed == straight
    assert_same_checkpoints(
        read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        read_checkpoint(folder / "checkpoints" / "last.ckpt"),
    )
