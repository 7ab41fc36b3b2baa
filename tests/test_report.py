"""The report's measurements on networks whose figures are known by hand."""

import json

import pytest
import torch
from torch import nn

from litcompress.models import CifarResNet
from litcompress.report import (
    REPORT_FIGURES,
    ModelStats,
    atomic_path,
    build_report,
    count_macs,
    count_params,
    measure,
    report_figures,
    report_markdown,
    state_dict_bytes,
    write_json_atomic,
)


def tiny_net() -> nn.Module:
    # conv: 4 out x 1 in x 3x3 over 8x8 outputs = 2304 MACs; linear 4 -> 10 = 40 MACs.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )


def test_params_and_macs_of_a_hand_counted_network():
    net = tiny_net()
    assert count_params(net) == 4 * 9 + 4 * 10 + 10
    assert count_macs(net, (1, 8, 8)) == 4 * 9 * 64 + 40
    assert net.training  # counting does not leave the network in eval mode


def test_macs_of_cifar_resnet20_match_the_published_figure():
    # He et al. report ~41M MACs for ResNet-20 on 32x32 (option-B shortcuts add ~1M).
    macs = count_macs(
        CifarResNet(num_classes=10, in_channels=3, image_size=32, depth=20), (3, 32, 32)
    )
    assert 40e6 < macs < 43e6


def test_file_bytes_track_the_weights():
    net = nn.Linear(1000, 100)
    assert 4 * 100_100 <= state_dict_bytes(net) < 4 * 100_100 + 4096


def test_measure_leaves_the_training_copy_alone_and_report_schema():
    net = tiny_net().train()
    stats = measure(net, (1, 8, 8), test_acc=0.5, min_run_time_s=0.02)
    assert net.training  # measured on a copy
    assert stats.latency_ms_b1 > 0 and stats.latency_ms_b32 > 0
    report = build_report(stats, stats, (1, 8, 8), model="tiny")
    for stage in ("before", "after"):
        assert set(report[stage]) >= {
            "test_acc",
            "params",
            "macs",
            "file_bytes",
            "latency_ms_b1",
            "latency_ms_b32",
        }
    assert report["measured_on"]["threads"] == torch.get_num_threads()
    assert "| parameters | 86 | 86 | 1.000x |" in report_markdown(report)


def test_speedups_and_ratios_are_before_over_after():
    def stats(params, b1, b32):
        return ModelStats(0.9, params, 2 * params, 4 * params, b1, b32)

    report = build_report(stats(100, 2.0, 9.0), stats(25, 4.0, 3.0), (1, 8, 8))
    assert report["speedup_b32"] == 3.0  # 9 ms before, 3 ms after: three times faster
    assert report["speedup_b1"] == 0.5  # slower at batch 1: reported as such, not hidden
    assert "| parameters | 100 | 25 | 0.250x |" in report_markdown(report)
    figures = report_figures(report)
    assert figures["report/after_params"] == 25 and figures["report/speedup_b32"] == 3.0
    assert set(REPORT_FIGURES) <= set(figures)


def test_an_atomic_write_that_fails_half_way_leaves_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic({"a": 1}, path)
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_text('{"a": 2, "trunc')  # half of the new file written, then a failure
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_report_json_is_replaced_whole(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic({"a": 1}, path)
    write_json_atomic({"a": 2}, path)
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp files left
