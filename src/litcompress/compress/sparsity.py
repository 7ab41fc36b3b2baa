"""Unstructured magnitude sparsity on a schedule (TF-MOT's ``prune_low_magnitude``), through
``torch.nn.utils.prune``.

Individual weights of conv and linear layers are set to zero by magnitude, following TF-MOT's
schedules: ``polynomial`` (from ``initial_sparsity`` to ``final_sparsity`` between ``begin_step``
and ``end_step``, every ``frequency`` steps) or ``constant`` (``final_sparsity`` from
``begin_step``). Masks are ``torch.nn.utils.prune`` reparametrisations (``weight = weight_orig *
weight_mask``): the optimizer keeps updating ``weight_orig`` while the forward pass sees zeros,
so pruned weights stay zero through every step; the masked layers are the technique's network
form, so checkpoints resume and reload. At the end of the run the masks are made permanent.

With a quantization-aware technique after it (``compress=[sparsity,qat]``: sparsity-preserving
QAT, as TF-MOT's PQAT), the final sparsity must be reached before QAT starts; the masks are then
folded into the weights and the zeros pinned: after every optimizer step the weights that are
zero are set to zero again, in the float network and then in the fake-quantized graph (symmetric
int8 weights keep zero at zero), so the int8 model keeps the sparsity.

Sparsity gives no CPU speed-up by itself (dense kernels multiply the zeros): its value is size,
once the weights are compressed on disk, and ``pattern=2:4`` (two of every four consecutive
weights kept), which GPUs with sparse tensor cores (NVIDIA Ampere and later) accelerate.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.utils import prune

from litcompress.compress.base import CompressionCallback, fingerprint
from litcompress.deploy.int8 import ARTIFACTS
from litcompress.errors import ConfigError
from litcompress.measure import ModelStats
from litcompress.models import find_classifier, resolve_layers
from litcompress.module import ClassifierModule
from litcompress.pictures import has_tensorboard, layer_bars, log_figure
from litcompress.spec import Inputs

log = logging.getLogger(__name__)

SCHEDULES = ("polynomial", "constant")
PATTERNS = ("2:4",)


def deflated_bytes(data: bytes) -> int:
    """Size of ``data`` in a zip archive (deflate), as TF-MOT measures compressed models."""
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model", data)
    return packed.tell()


def zipped_bytes(net: nn.Module) -> int:
    """Size of ``net``'s state dict saved and zip-compressed (deflate), as TF-MOT measures it."""
    raw = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, raw)
    return deflated_bytes(raw.getvalue())


def _masked(module: nn.Module) -> bool:
    return hasattr(module, "weight_mask")


def make_permanent(net: nn.Module, names: Sequence[str]) -> None:
    """Fold the masks of the layers ``names`` of ``net`` into plain weights (zeros stay)."""
    modules = dict(net.named_modules())
    for name in names:
        if _masked(modules[name]):
            prune.remove(modules[name], "weight")


def _effective_weight(module: nn.Module) -> torch.Tensor:
    return module.weight_orig * module.weight_mask if _masked(module) else module.weight


def _magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest ``1 - sparsity`` of ``|weight|`` (zeros already there go first)."""
    zeros = round(sparsity * weight.numel())
    mask = torch.ones_like(weight)
    if zeros:
        order = weight.abs().flatten().argsort()
        mask.view(-1)[order[:zeros]] = 0
    return mask


def _two_of_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest of every four consecutive weights along the input dimension."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    groups = flat.reshape(flat.shape[0], -1, 4).abs()
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(weight.shape)


class SparsityCallback(CompressionCallback):
    """``compress=sparsity``: unstructured magnitude sparsity on a TF-MOT schedule.

    Args:
        final_sparsity: fraction of the weights that are zero at the end, in [0, 1).
        initial_sparsity: (polynomial) fraction zero at ``begin_step``.
        schedule: ``polynomial`` (TF-MOT's ``PolynomialDecay``) or ``constant``
            (``ConstantSparsity``).
        begin_step: optimizer step of the first mask update; ``None``: the first step after the
            techniques before it (pruning) are done, step 0 when there are none.
        end_step: (polynomial) step at which ``final_sparsity`` is reached; ``None``: two thirds of
            the steps from ``begin_step`` to the end of the run, or to the epochs kept for the
            techniques after it (quantization-aware training); the rest fine-tunes at the final
            sparsity.
        frequency: steps between mask updates (one more at ``end_step``: the final sparsity is
            always reached).
        power: exponent of the polynomial schedule (3, as TF-MOT).
        scope: ``layer`` (each layer at the schedule's sparsity) or ``global`` (one magnitude
            threshold over all layers: wide layers lose more).
        ignored_layers: module names kept dense (the classifier head always is).
        pattern: ``2:4`` (two of every four consecutive weights kept: 50%, for GPUs that
            accelerate it) or ``None``.
    """

    name = "sparsity"
    order = 20  # after structural pruning (the masks follow the pruned shapes), before int8
    form_key = "sparsity"

    def __init__(
        self,
        final_sparsity: float = 0.75,
        initial_sparsity: float = 0.0,
        schedule: str = "polynomial",
        begin_step: int | None = None,
        end_step: int | None = None,
        frequency: int = 100,
        power: float = 3.0,
        scope: str = "layer",
        ignored_layers: Sequence[str] = (),
        pattern: str | None = None,
    ) -> None:
        for option, value in (
            ("final_sparsity", final_sparsity),
            ("initial_sparsity", initial_sparsity),
        ):
            if not 0.0 <= value < 1.0:
                raise ConfigError(
                    f"compress.sparsity.{option}={value} must be in [0, 1): the fraction of the "
                    f"weights set to zero, e.g. 0.75."
                )
        if initial_sparsity > final_sparsity:
            raise ConfigError(
                f"compress.sparsity.initial_sparsity={initial_sparsity} is above final_sparsity="
                f"{final_sparsity}: sparsity only grows. Lower initial_sparsity."
            )
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"compress.sparsity.schedule={schedule!r} is unknown; choose one of "
                f"{', '.join(SCHEDULES)}."
            )
        if scope not in ("layer", "global"):
            raise ConfigError(
                f"compress.sparsity.scope={scope!r} is unknown; choose layer or global."
            )
        if pattern is not None and str(pattern) not in PATTERNS:
            raise ConfigError(
                f"compress.sparsity.pattern={pattern!r} is not supported; use 2:4 (two of every "
                f"four consecutive weights kept) or null."
            )
        if (begin_step is not None and begin_step < 0) or frequency < 1:
            raise ConfigError(
                f"compress.sparsity.begin_step={begin_step} must be >= 0 and frequency="
                f"{frequency} >= 1."
            )
        if end_step is not None and begin_step is not None and end_step < begin_step:
            raise ConfigError(
                f"compress.sparsity.end_step={end_step} is before begin_step={begin_step}: the "
                f"schedule would end before it starts. Set end_step > begin_step."
            )
        self.final_sparsity = 0.5 if pattern else final_sparsity
        self.initial_sparsity = initial_sparsity
        self.schedule = schedule
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self.power = power
        self.scope = scope
        self.ignored_layers = list(ignored_layers)
        self.pattern = str(pattern) if pattern else None
        self.current: float = 0.0  # the sparsity the masks have now (restored on resume)
        # Masks folded and zeros pinned (for quantization-aware training after this technique).
        self.pinned = False
        self._pins: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pinned_net: nn.Module | None = None
        self._quantized_later = False
        self._steps_per_epoch: int | None = None
        self._output_dir: str | None = None
        self.dense_zip_bytes: int | None = None
        self.final: dict[str, Any] | None = None

    # -- the form: which layers carry masks -------------------------------------------------------
    @classmethod
    def form_reachable(cls, done: Any, wanted: Any) -> bool:
        return set(done or []) <= set(wanted or [])

    @classmethod
    def restore_form(
        cls, net: nn.Module, done: Any, wanted: list[str], inputs: Inputs
    ) -> nn.Module:
        modules = dict(net.named_modules())
        for name in wanted:
            if not _masked(modules[name]):
                prune.identity(modules[name], "weight")  # the checkpoint's mask is loaded into it
        return net

    @classmethod
    def for_inference(cls, net: nn.Module, form: list[str]) -> nn.Module:
        """Masks folded into the weights: plain layers with zeros (no per-call multiply)."""
        make_permanent(net, form)
        return net

    def state_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "dense_zip_bytes": self.dense_zip_bytes,
            "pinned": self.pinned,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.current = state_dict["current"]
        self.dense_zip_bytes = state_dict["dense_zip_bytes"]
        self.pinned = state_dict.get("pinned", False)

    def last_form_change_epoch(self) -> int | None:
        """The first epoch that starts with the final masks (the last update is within a batch)."""
        if not self._steps_per_epoch:
            return None
        return self._final_step() // self._steps_per_epoch + 1

    def _final_step(self) -> int:
        """The step whose mask update reaches the final sparsity."""
        if self.schedule == "constant" or self.pattern:
            return self.begin_step
        return max(self.end_step, self.begin_step)

    # -- hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: ClassifierModule, stage: str) -> None:
        if stage != "fit":
            return
        net = pl_module.net
        head = find_classifier(net, pl_module.input_spec)[1]
        ignored = {
            id(m)
            for m in [
                head,
                *resolve_layers(net, self.ignored_layers, "compress.sparsity.ignored_layers"),
            ]
        }
        names = {id(m): n for n, m in net.named_modules()}
        self._layers = [
            names[id(m)]
            for m in net.modules()
            if isinstance(m, nn.Conv2d | nn.Linear) and id(m) not in ignored
        ]
        if self.pattern:
            odd = [n for n in self._layers if _inputs_per_output(net, n) % 4]
            if odd:
                raise ConfigError(
                    f"compress.sparsity.pattern=2:4 needs layers with a multiple of 4 weights per "
                    f"output; {', '.join(odd[:4])} have not: add them to "
                    f"compress.sparsity.ignored_layers."
                )
        self._plan(trainer)
        # Quantization-aware training freezes the form: QAT checks last_form_change_epoch().
        self._quantized_later = any(
            isinstance(c, CompressionCallback) and c.form_needs_deploy and c.order > self.order
            for c in trainer.callbacks
        )

    def _plan(self, trainer: L.Trainer) -> None:
        """Fix ``begin_step`` and ``end_step`` (``None``: between the techniques before and after
        this one), and check them against the run and those techniques."""
        total = trainer.estimated_stepping_batches
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if max_epochs is None or total == float("inf"):  # no epochs to plan in: from step 0
            self.begin_step = self.begin_step or 0
            if self.end_step is None:
                self.end_step = self.begin_step
            return
        steps = self._steps_per_epoch = max(int(total) // max_epochs, 1)
        earlier = self.earlier_forms_done_epoch(trainer)
        begin_given = self.begin_step is not None
        if not begin_given:
            self.begin_step = earlier * steps
        later, successor = self.epochs_left_for_later(trainer)
        given = ["begin_step"] if begin_given else []
        given += ["end_step"] if self.end_step is not None else []
        room_end = (max_epochs - later) * steps  # the first step kept for the techniques after
        if self.end_step is None:
            self.end_step = self.begin_step + 2 * max(room_end - self.begin_step, 0) // 3
        problems = []
        if begin_given and self.begin_step < earlier * steps:
            problems.append(
                f"compress.sparsity.begin_step={self.begin_step} is before the last change of "
                f"form of the techniques before it (epoch {earlier}): set it >= "
                f"{earlier * steps}, or null (it then begins when they are done)"
            )
        final = self._final_step()
        if final >= min(room_end, int(total)) and not trainer.ckpt_path:
            after = ""
            if successor is not None:
                after = f", and {later} epoch(s) kept for compress.{successor.name} after it"
            problems.append(
                f"compress.sparsity reaches its final sparsity at step {final} "
                f"(begin_step={self.begin_step}, end_step={self.end_step}; {steps} steps an "
                f"epoch), but the run has {int(total)} optimizer steps{after}: "
                + ", or ".join(self._fixes(trainer, final, steps, successor, room_end, given))
            )
        if problems:
            raise ConfigError("; ".join(problems) + ".")

    def _fixes(
        self,
        trainer: L.Trainer,
        final: int,
        steps: int,
        successor: CompressionCallback | None,
        room_end: int,
        given: list[str],
    ) -> list[str]:
        """The changes that each make the final sparsity at step ``final`` fit in the run, with
        the epochs kept for ``successor`` (the technique after it that needs the most); ``given``:
        the steps the user set."""
        max_epochs = trainer.max_epochs
        fixes = []
        # More epochs help only where what the techniques after need does not grow as fast (a
        # null start; not an explicit one).
        longer = next(
            (
                epochs
                for epochs in range(max_epochs + 1, max_epochs + 10_000)
                if final < (epochs - self.epochs_left_for_later(trainer, epochs)[0]) * steps
            ),
            None,
        )
        if longer is not None:
            fixes.append(f"raise trainer.max_epochs to {longer}")
        done = final // steps + 1  # the first epoch that trains with the final masks throughout
        if successor is not None and getattr(successor, "start_epoch", None) is not None:
            fix = f"set compress.{successor.name}.start_epoch={done} (or null)"
            if done >= max_epochs:
                fix += f" with trainer.max_epochs={done + 1}"
            fixes.append(fix)
        polynomial = self.schedule == "polynomial" and not self.pattern
        if polynomial and "end_step" in given and room_end - 1 >= self.begin_step:
            fixes.append(f"lower compress.sparsity.end_step to at most {room_end - 1}")
        if given:
            steps_given = "/".join(f"compress.sparsity.{name}" for name in given)
            fixes.append(f"set {steps_given} to null (then they fit in)")
        return fixes

    def target(self, step: int) -> float:
        """The sparsity the schedule asks for at optimizer step ``step``."""
        if step < self.begin_step:
            return 0.0
        if self.schedule == "constant" or self.pattern:
            return self.final_sparsity
        span = max(self.end_step - self.begin_step, 1)
        progress = min((step - self.begin_step) / span, 1.0)
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * (1 - progress) ** self.power
        )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ClassifierModule, batch: Any, batch_idx: int
    ) -> None:
        if self.pinned:
            self._pin(pl_module.net)
            return
        step = trainer.global_step
        # Every `frequency` steps, and at end_step itself: the final sparsity is always reached.
        due = step == self.end_step or not (step - self.begin_step) % self.frequency
        if step < self.begin_step or not due:
            return
        wanted = self.target(step)
        if wanted <= self.current and self.current:
            return
        self.update_masks(pl_module, wanted)
        if wanted >= self.final_sparsity:
            # The network the run delivers has this sparsity: earlier, denser checkpoints no
            # longer compete for "best" (they move to checkpoints/before_sparsity/).
            self.network_changed(trainer, pl_module)
            self._picture(trainer, pl_module.net, step)
            if self._quantized_later:
                # Quantization-aware training follows: plain weights whose zeros stay pinned.
                make_permanent(pl_module.net, pl_module.form.pop(self.form_key, []))
                self.pinned = True
                self._pin(pl_module.net)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: ClassifierModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.pinned:  # the optimizer step moved the zeros: set them back
            with torch.no_grad():
                for weight, keep in self._pins:
                    weight.mul_(keep)

    def _pin(self, net: nn.Module) -> None:
        """Pin the zero weights of the sparse layers of ``net`` (again when the network object
        changed: once prepared for quantization, or rebuilt from a checkpoint)."""
        if net is self._pinned_net:
            return
        params = dict(net.named_parameters())
        self._pins = []
        for name in self._layers:
            # A network prepared by torch.export keeps the names, under its graph module.
            weight = params.get(f"{name}.weight", params.get(f"graph.{name}.weight"))
            if weight is None:
                raise RuntimeError(
                    f"compress.sparsity cannot find the weights of {name} in the network "
                    f"prepared for quantization (parameters: {', '.join(list(params)[:6])}, ...)."
                )
            self._pins.append((weight, weight != 0))
        self._pinned_net = net

    def _picture(self, trainer: L.Trainer, net: nn.Module, step: int) -> None:
        """The zero weights of each layer, as a bar chart in TensorBoard."""
        if not has_tensorboard(trainer.loggers):
            return
        per_layer = self.per_layer(net)
        figure = layer_bars(
            list(per_layer),
            list(per_layer.values()),
            f"Zero weights per layer at step {step} ({self.overall(net):.1%} overall)",
            "fraction of the weights that are zero",
        )
        log_figure(trainer.loggers, "sparsity/per_layer", figure, step)

    @torch.no_grad()
    def update_masks(self, pl_module: ClassifierModule, sparsity: float) -> None:
        """Mask the smallest weights so that ``sparsity`` of them are zero (zeros stay zero)."""
        if self.dense_zip_bytes is None:  # the network as sparsity found it (pruned, if it was)
            self.dense_zip_bytes = zipped_bytes(pl_module.net)
        modules = dict(pl_module.net.named_modules())
        layers = [modules[name] for name in self._layers]
        if self.pattern:
            masks = [_two_of_four_mask(_effective_weight(m)) for m in layers]
        elif self.scope == "global":
            weights = torch.cat([_effective_weight(m).abs().flatten() for m in layers])
            zeros = round(sparsity * weights.numel())
            threshold = weights.kthvalue(zeros).values if zeros else weights.min() - 1
            masks = [(_effective_weight(m).abs() > threshold).float() for m in layers]
        else:
            masks = [_magnitude_mask(_effective_weight(m), sparsity) for m in layers]
        for name, module, mask in zip(self._layers, layers, masks, strict=True):
            if _masked(module):
                module.weight_mask.copy_(module.weight_mask * mask)
            else:
                prune.custom_from_mask(module, "weight", mask)
            pl_module.form.setdefault(self.form_key, [])
            if name not in pl_module.form[self.form_key]:
                pl_module.form[self.form_key].append(name)
        self.current = sparsity
        log.info(
            "Sparsity %.1f%% at step %d", 100 * self.overall(pl_module.net), pl_module.global_step
        )
        if pl_module.trainer.world_size > 1:  # every rank must hold the very same masks
            log.info(
                "Rank %d at sparsity %.3f (step %d): masks %s",
                pl_module.global_rank,
                sparsity,
                pl_module.global_step,
                fingerprint(m.weight_mask for m in layers),
            )

    def per_layer(self, net: nn.Module) -> dict[str, float]:
        """The fraction of zero weights of each layer the technique masks."""
        modules = dict(net.named_modules())
        return {n: float((_effective_weight(modules[n]) == 0).float().mean()) for n in self._layers}

    def overall(self, net: nn.Module) -> float:
        modules = dict(net.named_modules())
        zeros = sum(int((_effective_weight(modules[n]) == 0).sum()) for n in self._layers)
        total = sum(_effective_weight(modules[n]).numel() for n in self._layers)
        return zeros / total if total else 0.0

    # -- the run's end ----------------------------------------------------------------------------
    def deploy(
        self,
        module: ClassifierModule,
        data: L.LightningDataModule,
        output_dir: str | os.PathLike[str],
        evaluate: bool,
        measure: bool,
        min_run_time_s: float = 1.0,
        time_torch: bool = True,
    ) -> ModelStats | None:
        """Make the masks permanent (plain weights with zeros) and record what was achieved; the
        network is then measured and delivered like any other."""
        net = module.net
        self._output_dir = str(output_dir)
        if self.pinned:
            self._pin(net)
            names = self._layers
            weights = [weight for weight, _ in self._pins]
        else:
            modules = dict(net.named_modules())
            names = module.form.pop(self.form_key, [])
            make_permanent(net, names)
            weights = [modules[name].weight for name in names]
        per_layer = {n: float((w == 0).float().mean()) for n, w in zip(names, weights, strict=True)}
        zeros = sum(int((w == 0).sum()) for w in weights)
        total = sum(w.numel() for w in weights)
        self.final = {
            "per_layer": per_layer,
            "overall": zeros / total if total else 0.0,
            "zip_bytes": zipped_bytes(net),
        }
        return None

    def report_entries(self) -> dict[str, Any]:
        """What this technique adds to report.json: the sparsity achieved and the zipped size."""
        entry: dict[str, Any] = {
            "schedule": self.schedule,
            "scope": self.scope,
            "pattern": self.pattern,
            "final_sparsity": self.final_sparsity,
            "dense_zip_bytes": self.dense_zip_bytes,
        }
        if self.final:
            entry.update(
                achieved_sparsity=self.final["overall"],
                per_layer=self.final["per_layer"],
                zip_bytes=self.final["zip_bytes"],
            )
            ratio = self.final["zip_bytes"] / self.dense_zip_bytes if self.dense_zip_bytes else None
            entry["summary"] = (
                f"asked {self.final_sparsity:.0%} zero weights, achieved "
                f"{self.final['overall']:.1%} over {len(self.final['per_layer'])} layers; "
                f"zip-compressed weights {self.final['zip_bytes']:,} bytes against "
                f"{self.dense_zip_bytes:,} dense ({ratio:.2f}x). No CPU speed-up by itself: "
                f"dense kernels multiply the zeros."
            )
            folder = Path(self._output_dir or ".")
            artifacts = [folder / name for name in ARTIFACTS.values() if (folder / name).is_file()]
            if self.pinned and artifacts:
                # Sparsity-preserving QAT: the int8 model keeps the zeros.
                entry["int8_zip_bytes"] = deflated_bytes(artifacts[0].read_bytes())
                entry["summary"] += (
                    f" Kept through quantization-aware training: {artifacts[0].name} "
                    f"zip-compressed {entry['int8_zip_bytes']:,} bytes "
                    f"({entry['int8_zip_bytes'] / self.dense_zip_bytes:.2f}x the dense float)."
                )
        return {"sparsity": entry}


def _inputs_per_output(net: nn.Module, name: str) -> int:
    weight = dict(net.named_modules())[name].weight
    return weight[0].numel()
