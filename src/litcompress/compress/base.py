"""The protocol every compression technique follows.

A technique is a Lightning callback that subclasses :class:`CompressionCallback`. The run
(:mod:`litcompress.run`) and the checkpoint code (:mod:`litcompress.checkpoint`, through the
registry of :mod:`litcompress.forms`) only talk to techniques through this class, so a new
technique is one file, one YAML in ``conf/compress/`` and its tests: nothing else in the package
names it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from litcompress.compat import forget_best_checkpoints
from litcompress.forms import register
from litcompress.measure import ModelStats
from litcompress.spec import Inputs

log = logging.getLogger(__name__)


class CompressionCallback(Callback):
    """A compression technique: a Lightning callback with what the run and checkpoints need.

    Class attributes:
        name: the technique's name: its ``conf/compress/<name>.yaml``, its report entry and the
            ``checkpoints/before_<name>/`` folder of the checkpoints it made obsolete.
        order: techniques run in increasing ``order``, whatever order the command line gives:
            structural changes (pruning) before those that follow the network (distillation)
            and those that freeze it (quantization).
        form_key: the checkpoint entry in which the technique records how it changed the
            network's form (``None``: it leaves the form alone). Defining a subclass with a
            ``form_key`` registers it, so that checkpoints restore that form through
            :meth:`restore_form` without the checkpoint code knowing the technique.
        form_needs_deploy: a network in this form is not deliverable as it is (fake-quantized):
            only this technique's :meth:`deploy` makes the model a run delivers, so a run that
            starts from such a checkpoint must use the technique again.
        delivered_hint: where the model this technique delivers is, and how to load it.
        delivers_int8: the model this technique delivers runs int8 kernels, whose speed depends
            on the layers' widths (pruning before it warns about widths they run slowly).

    A technique that changes the form records it in ``pl_module.form[form_key]`` (a plain,
    ``weights_only``-safe value) and, when it does so mid-training, calls
    :meth:`network_changed`.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 50
    form_key: ClassVar[str | None] = None
    form_needs_deploy: ClassVar[bool] = False
    delivered_hint: ClassVar[str] = ""
    delivers_int8: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only the class that declares a form owns it (a subclass of PruneCallback does not).
        if cls.__dict__.get("form_key") is not None:
            register(cls.form_key, cls)

    # -- schedule ---------------------------------------------------------------------------------
    def last_form_change_epoch(self) -> int | None:
        """The last epoch at which this technique changes the network's form (``None``: never).

        Known once ``setup`` has run. Techniques that freeze the form (quantization) check it on
        the techniques that run before them.
        """
        return None

    def forms_changed_after(
        self, trainer: L.Trainer, epoch: int
    ) -> list[tuple[CompressionCallback, int]]:
        """The techniques that run before this one (lower ``order``) and still change the
        network's form after ``epoch``, each with its last such epoch (known after their setup)."""
        late = []
        for callback in trainer.callbacks:
            if isinstance(callback, CompressionCallback) and callback.order < self.order:
                last = callback.last_form_change_epoch()
                if last is not None and last > epoch:
                    late.append((callback, last))
        return late

    def epochs_needed_at_end(self, max_epochs: int) -> int:
        """Epochs this technique needs at the end of a run of ``max_epochs`` after the techniques
        before it stopped changing the form (quantization-aware training trains in that form).

        A technique before it whose schedule ends at ``None`` ends early enough to leave them
        (:meth:`epochs_left_for_later`). Known before ``setup``; 0 by default.
        """
        return 0

    def earlier_forms_done_epoch(self, trainer: L.Trainer) -> int:
        """The first epoch at which every technique before this one (lower ``order``) has made
        its last change of form (0 when none changes it): where a ``None`` start starts."""
        return max(
            (last for _, last in self.forms_changed_after(trainer, 0)),
            default=0,
        )

    def epochs_left_for_later(
        self, trainer: L.Trainer, max_epochs: int | None = None
    ) -> tuple[int, CompressionCallback | None]:
        """Epochs that the techniques after this one (higher ``order``) need at the end of the
        run (of ``max_epochs``, default the trainer's), and the technique that needs the most
        (``None``: none needs any): a schedule that ends at ``None`` ends before them."""
        if max_epochs is None:
            max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        needs = [
            (callback.epochs_needed_at_end(max_epochs), callback)
            for callback in trainer.callbacks
            if isinstance(callback, CompressionCallback) and callback.order > self.order
        ]
        epochs, callback = max(needs, key=lambda need: need[0], default=(0, None))
        return epochs, (callback if epochs else None)

    def network_changed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the run's bookkeeping afresh after the network changed form mid-training.

        The best validation accuracy so far (``val/acc_best``, the default sweep objective)
        restarts, so that it describes the network the run delivers, and the best checkpoints
        of the old form are moved to ``checkpoints/before_<name>/``: they hold another
        architecture and cannot be "the best" of this one, but a run trained from scratch has
        no other trained network of the old form (a teacher, a baseline).
        """
        pl_module.restart_best()
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            paths = forget_best_checkpoints(callback)
            if trainer.is_global_zero and callback.dirpath:
                _move_apart(paths, Path(callback.dirpath) / f"before_{self.name or 'change'}")

    # -- the run's end ----------------------------------------------------------------------------
    def deploy(
        self,
        module: L.LightningModule,
        data: L.LightningDataModule,
        output_dir: str | os.PathLike[str],
        evaluate: bool,
        measure: bool,
        min_run_time_s: float = 1.0,
        time_torch: bool = True,
    ) -> ModelStats | None:
        """Turn the trained network into what is deployed, if this technique makes another one.

        Returns the deployed model's statistics (the report's ``after`` entry), or ``None`` when
        the trained network itself is what is deployed (the default). ``measure``: measure it at
        all (the report is on); ``time_torch``: time it in torch too (``report.time_torch``;
        without it its latencies stay ``None``).
        """
        return None

    @classmethod
    def companions(
        cls, options: Mapping[str, Any], chosen: Collection[str], init_from: str | None
    ) -> dict[str, dict[str, Any]]:
        """Techniques a run with this one's ``options`` adds when they are not ``chosen`` (the
        names of ``compress=[...]``), for a run from ``init_from``: name -> config (a
        ``_target_`` and options; the others take the technique's defaults). None by default;
        depth pruning adds distillation from the deeper network. Asked once, when a run starts:
        the run records them with its techniques, so that a resumed run has them too."""
        return {}

    def report_entries(self) -> dict[str, Any]:
        """Entries this technique adds to report.json (by convention under its ``name``)."""
        return {}

    # -- forms in checkpoints ---------------------------------------------------------------------
    @classmethod
    def form_reachable(cls, done: Any, wanted: Any) -> bool:
        """Whether a network of form ``done`` can be brought to ``wanted`` (default: from none)."""
        return done is None

    @classmethod
    def for_inference(cls, net: nn.Module, form: Any) -> nn.Module:
        """``net``, loaded in this technique's ``form``, as the plain network that inference and
        export use (e.g. masks folded into the weights); by default the network as it is."""
        return net

    @classmethod
    def restore_form(cls, net: nn.Module, done: Any, wanted: Any, inputs: Inputs) -> nn.Module:
        """Bring ``net`` (form ``done``) to the form ``wanted``; returns the network.

        Called on a freshly built network when a checkpoint is loaded, before its weights are.
        """
        raise NotImplementedError(f"{cls.__name__} records {cls.form_key!r} but cannot restore it")


def _move_apart(paths: list[str], folder: Path) -> None:
    for path in map(Path, paths):
        if path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.move(path, folder / path.name)
            log.info("Checkpoint of the earlier network form moved to %s", folder / path.name)


def fingerprint(chunks: Iterable[torch.Tensor | bytes]) -> str:
    """A short hash of tensors (their raw bytes) and byte strings: under DDP every rank logs it
    after a technique's step, so that ranks holding different networks show."""
    digest = hashlib.sha256()
    for chunk in chunks:
        if isinstance(chunk, torch.Tensor):
            # As raw bytes: numpy has no bfloat16, so a bf16 network could not be hashed through it.
            chunk = chunk.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        digest.update(chunk)
    return digest.hexdigest()[:16]
