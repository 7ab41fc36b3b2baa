"""The report's measurements on networks whose figures are known by hand."""

import json

import pytest
import torch
from torch import nn

from litcompress.measure import ModelStats, count_macs, count_params, measure, state_dict_bytes
from litcompress.models import CifarResNet
from litcompress.outputs import atomic_path, write_json_atomic
from litcompress.report import REPORT_FIGURES, build_report, report_figures, report_markdown


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


class _Recorder:
    """A "network" that records the order of calls and takes ``delays`` seconds in turn."""

    def __init__(self, name, calls, delays):
        self.name, self.calls, self.delays, self.count = name, calls, delays, 0

    def __call__(self, x):
        import time

        self.calls.append(self.name)
        time.sleep(self.delays[self.count % len(self.delays)])
        self.count += 1
        return x


class _Busy:
    """Slow in every other round (a machine that other work keeps busy now and then)."""

    def __init__(self, other):
        self.other, self.seen, self.slow = other, -1, False

    def __call__(self, x):
        import time

        if self.other.count != self.seen:  # the other network ran: a new round
            self.seen, self.slow = self.other.count, not self.slow
        time.sleep(0.004 if self.slow else 0.0005)
        return x


def test_paired_timing_alternates_the_two_networks_in_one_window():
    from litcompress.measure import MIN_ROUNDS, PAIRED_ROUNDS, paired_latency_ms

    calls = []
    first = _Recorder("first", calls, [0.002])
    second = _Recorder("second", calls, [0.001])
    result = paired_latency_ms(first, second, (1, 2, 2), 1, min_run_time_s=0.05)
    # Blocks of one, then of the other, round after round: never all of one first. (Fewer rounds
    # than 15 when a busy machine makes one call of each outlast the budget's share.)
    assert MIN_ROUNDS <= result["rounds"] <= PAIRED_ROUNDS
    switches = sum(a != b for a, b in zip(calls, calls[1:], strict=False))
    assert switches >= 2 * result["rounds"] - 1
    assert result["ratio"] == pytest.approx(2.0, rel=0.3)
    assert result["spread"] < 0.5


def test_a_speed_up_that_moves_between_rounds_is_flagged_not_reported_confidently():
    from litcompress.measure import time_side_by_side

    calls = []
    steady = _Recorder("before", calls, [0.002])
    erratic = _Busy(steady)
    before = ModelStats(None, 10, 20, 30, None, None)
    after = ModelStats(0.9, 10, 20, 30, None, None, model=erratic)
    timing = time_side_by_side(before, after, steady, (1, 2, 2), min_run_time_s=0.05)
    assert timing["method"] == "paired" and timing["spread_b32"] > 0.20
    assert any("is not reliable" in note for note in after.extra["notes"])
    assert before.latency_ms_b32 > 0 and after.latency_ms_b32 > 0
    assert "model" not in after.to_dict()  # the runnable model is never written to the report


def test_paired_timing_keeps_to_its_budget_with_slow_networks():
    from litcompress.measure import MIN_ROUNDS, paired_latency_ms

    calls = []
    slow = [_Recorder("first", calls, [0.02]), _Recorder("second", calls, [0.02])]
    result = paired_latency_ms(*slow, (1, 2, 2), 1, min_run_time_s=0.05)
    # One call of each (40 ms) outlasts 0.05 s / 15 rounds: as few rounds as still say something.
    assert result["rounds"] == MIN_ROUNDS
