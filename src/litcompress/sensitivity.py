"""Per-layer pruning sensitivity (Distiller's sensitivity analysis): how much accuracy each group
of coupled layers loses when pruned alone, at a range of ratios, without fine-tuning.

The curves say which layers tolerate pruning; :meth:`Sensitivity.suggest` turns them into the
largest ratio per layer that keeps accuracy within a budget, which ``compress.prune.layer_ratios``
takes (a YAML file of ``layer: ratio``). A Transformer's groups are each layer's attention heads
(named by the attention module: the share of its heads removed) and each FFN; its hidden width is
left alone, as ``compress.prune`` leaves it by default.
"""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch_pruning as tp
import yaml
from torch import nn

from litcompress.compress.prune import (
    IMPORTANCES,
    dependency_graph,
    graph_options,
    hidden_layers,
    prune_step,
    quiet_unwrapped_parameters,
    torch_pruning_failure,
)
from litcompress.errors import ConfigError
from litcompress.measure import count_macs, evaluate_cpu
from litcompress.models import find_classifier
from litcompress.models.attention import attention_modules
from litcompress.spec import Inputs, InputSpec

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Sensitivity:
    """Validation accuracy of a network with one group of layers pruned at each ratio."""

    baseline: float
    ratios: list[float]
    # Group (named by its root layer, the name layer_ratios takes) -> accuracy at each ratio.
    curves: dict[str, list[float]]
    # Group -> MACs of the network with that group pruned at each ratio.
    macs: dict[str, list[int]]
    base_macs: int

    def suggest(self, budget: float) -> dict[str, float]:
        """Per group, the largest ratio whose accuracy (and that of every smaller ratio) stays
        within ``budget`` of the baseline; 0 where even the smallest loses more."""
        chosen = {}
        for group, accuracies in self.curves.items():
            best = 0.0
            for ratio, accuracy in zip(self.ratios, accuracies, strict=True):
                if accuracy < self.baseline - budget:
                    break
                best = ratio
            chosen[group] = best
        return chosen

    def write(self, folder: str | os.PathLike[str], budget: float) -> dict[str, Path]:
        """``sensitivity.csv``, ``sensitivity.png`` and ``layer_ratios.yaml`` (for ``budget``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "csv": folder / "sensitivity.csv",
            "png": folder / "sensitivity.png",
            "layer_ratios": folder / "layer_ratios.yaml",
        }
        with paths["csv"].open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["layer", "ratio", "val_acc", "val_acc_drop", "macs"])
            writer.writerow(["(none)", 0.0, f"{self.baseline:.6f}", "0.000000", self.base_macs])
            for group, accuracies in self.curves.items():
                for ratio, accuracy, macs in zip(
                    self.ratios, accuracies, self.macs[group], strict=True
                ):
                    drop = self.baseline - accuracy
                    writer.writerow([group, ratio, f"{accuracy:.6f}", f"{drop:.6f}", macs])
        self.figure().savefig(paths["png"], dpi=120)
        suggested = self.suggest(budget)
        header = (
            f"# Per-layer pruning ratios that keep each layer's accuracy within {budget} of "
            f"{self.baseline:.4f} when pruned alone (litcompress sensitivity).\n# Use: compress="
            f"prune compress.prune.ratio=0 compress.prune.layer_ratios={paths['layer_ratios']}\n"
        )
        paths["layer_ratios"].write_text(header + yaml.safe_dump(suggested, sort_keys=False))
        return paths

    def figure(self):
        """Accuracy against ratio, a line per group."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(8, 5), layout="constrained")
        axes = figure.subplots()
        for group, accuracies in self.curves.items():
            axes.plot([0.0, *self.ratios], [self.baseline, *accuracies], marker=".", label=group)
        axes.set_xlabel("fraction of the group's channels pruned (no fine-tuning)")
        axes.set_ylabel("validation accuracy")
        axes.set_title("Pruning sensitivity per layer")
        axes.legend(fontsize=6, ncol=2 if len(self.curves) > 12 else 1, loc="lower left")
        axes.grid(alpha=0.3)
        return figure


def prunable_groups(net: nn.Module, inputs: Inputs) -> list[str]:
    """Every group of coupled layers torch-pruning can prune (the head and a Transformer's hidden
    width kept), named by its root layer, or by its attention module for attention heads."""
    head = find_classifier(net, inputs)[1]
    names = {id(m): name for name, m in net.named_modules()}
    attention = {id(p): a.name for a in attention_modules(net) for p in a.projections}
    try:
        graph = dependency_graph(net, inputs)
        with quiet_unwrapped_parameters():
            groups = list(graph.get_all_groups(ignored_layers=[head, *hidden_layers(net)]))
    except Exception as error:
        raise torch_pruning_failure(net, error, "cannot group the layers of") from error
    roots = []
    for group in groups:
        heads = [
            attention[id(d.target.module)] for d, _ in group if id(d.target.module) in attention
        ]
        module = group[0].dep.target.module
        if heads:
            roots.append(heads[0])
        elif isinstance(module, nn.Conv2d | nn.Linear) and id(module) in names:
            roots.append(names[id(module)])
    return roots


def prune_one(
    net: nn.Module, root: str, ratio: float, inputs: Inputs, importance: str = "l2"
) -> nn.Module:
    """A copy of ``net`` with the group of ``root`` (a layer, or an attention module: its heads)
    pruned at ``ratio`` and nothing else."""
    pruned = copy.deepcopy(net)
    modules = dict(pruned.named_modules())
    head = find_classifier(pruned, inputs)[1]
    example = InputSpec.of(inputs).example(1, zeros=True)
    heads = root in {a.name for a in attention_modules(pruned)}
    with quiet_unwrapped_parameters():
        pruner = tp.pruner.BasePruner(
            pruned,
            example,
            importance=IMPORTANCES[importance](),
            pruning_ratio=0.0,
            # An attention module's share of heads goes by graph_options; torch-pruning takes up
            # only groups whose channel ratio is above 0.
            pruning_ratio_dict={modules[root]: ratio},
            ignored_layers=[head, *hidden_layers(pruned)],
            **graph_options(pruned, head_ratios={root: ratio} if heads else {}),
        )
    prune_step(pruner, pruned)
    return pruned.eval()


def analyse(
    net: nn.Module,
    loader,
    num_classes: int,
    inputs: Inputs,
    ratios: Sequence[float] = RATIOS,
    max_batches: int | None = None,
    importance: str = "l2",
    progress=None,
) -> Sensitivity:
    """Prune each group of ``net`` alone at each ratio and measure accuracy on ``loader``.

    ``progress``: a ``rich.progress.Progress`` to show the work on (groups x ratios networks).
    """
    for ratio in ratios:
        if not 0 < ratio < 1:
            raise ConfigError(f"--ratios: {ratio} is not a fraction strictly between 0 and 1.")
    net = net.eval()
    # The graph first: a network torch-pruning cannot group fails before any evaluation.
    roots = prunable_groups(net, inputs)
    if not roots:
        raise ConfigError(
            "The network has no layer torch-pruning can prune alone (only the classifier head, "
            "or layers it cannot group): there is no sensitivity to analyse."
        )
    batches = list(_limit(loader, max_batches))
    baseline = evaluate_cpu(net, batches, num_classes)
    task = (
        progress.add_task("Pruning each layer alone", total=len(roots) * len(ratios))
        if (progress)
        else None
    )
    curves, macs = {}, {}
    for root in roots:
        curves[root], macs[root] = [], []
        for ratio in ratios:
            pruned = prune_one(net, root, ratio, inputs, importance)
            curves[root].append(evaluate_cpu(pruned, batches, num_classes))
            macs[root].append(count_macs(pruned, inputs))
            if progress is not None:
                progress.advance(task)
    return Sensitivity(baseline, list(ratios), curves, macs, count_macs(net, inputs))


def _limit(loader, max_batches: int | None):
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            return
        yield batch
