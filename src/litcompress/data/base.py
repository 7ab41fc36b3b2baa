"""Shared base of every litcompress data module."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from litcompress.compat import epoch_to_resume
from litcompress.errors import ConfigError
from litcompress.seeding import EpochSampler, SeededSamples
from litcompress.spec import InputSpec


class ClassificationData(L.LightningDataModule):
    """An image-classification data module that also describes its images to the model.

    Subclasses set ``num_classes``, ``in_channels`` and ``image_size`` in ``__init__`` (cheaply,
    without loading the data) and implement :meth:`build_datasets`; ``setup`` builds them once.
    They also set ``mean`` and ``std`` (per channel, applied to pixels scaled to [0, 1]) and
    ``classes`` (the class names) where they know them, at the latest in ``build_datasets``: runs
    record them (:meth:`inputs_record`) so that exported models predict on image files without
    being told how their images were prepared.

    The training order and every training image's augmentation depend on ``shuffle_seed`` (the
    run sets it to its ``seed``) and the epoch alone (:mod:`litcompress.seeding`); checkpoints
    record the epoch to resume at, so that a resumed run sees the same batches.

    Args:
        batch_size: images per batch, for every split.
        num_workers: DataLoader worker processes (0: load in the main process, best for
            in-memory data).
        pin_memory: pin host memory for faster copies to a GPU.
    """

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: list[str] | None = None

    def __init__(
        self, batch_size: int = 128, num_workers: int = 0, pin_memory: bool = False
    ) -> None:
        super().__init__()
        for name, value, least in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"data.{name}={value!r} must be an integer of at least {least} (e.g. "
                    f"data.{name}={max(least, 64 if name == 'batch_size' else 2)})."
                )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.shuffle_seed = 0
        # The epoch whose order the next training loader starts with (restored on resume).
        self.epoch = 0

    # Batches of the loaders are put together by this function (None: torch's default).
    collate_fn: Any = None

    def use_recorded_inputs(self, record: dict[str, Any] | None) -> None:
        """Prepare inputs as the checkpoint a run starts from or resumes did (``record``: its
        ``inputs`` entry). Images: nothing to take (the run's own preprocessing applies)."""

    def network_inputs(self) -> dict[str, Any]:
        """What the network's constructor is told about its inputs (beside ``num_classes``):
        ``in_channels`` and ``image_size`` for images."""
        return {"in_channels": self.in_channels, "image_size": self.image_size}

    @property
    def input_spec(self) -> InputSpec:
        """What the network takes: images of ``in_channels`` x ``image_size`` squared."""
        return InputSpec.image(self.in_channels, self.image_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(channels, height, width)`` of one image as the model receives it."""
        return self.input_spec.shape

    def inputs_record(self) -> dict[str, Any]:
        """How an image file becomes the network's input, and what its outputs mean.

        Recorded in checkpoints and exported artifacts (:mod:`litcompress.deploy`): the image is
        converted to ``channels`` (RGB, or grayscale from RGB as torchvision does), resized to
        ``image_size`` squared, scaled to [0, 1] and normalised with ``mean`` and ``std``.
        ``mean``, ``std`` and ``classes`` are ``None`` where this data module does not know them.
        Sets the data up if needed (some statistics and names come from the data).
        """
        self.setup()
        return {
            "image_size": self.image_size,
            "channels": self.in_channels,
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
            "classes": None if self.classes is None else [str(c) for c in self.classes],
        }

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return the ``(train, val, test)`` datasets of ``(image_tensor, label)`` pairs."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self.build_datasets()

    def _loader(self, dataset: Dataset, sampler: EpochSampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=sampler.generator if sampler is not None else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=self.collate_fn,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(len(self.train_set), self.shuffle_seed, self.epoch)
        return self._loader(SeededSamples(self.train_set), sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def state_dict(self) -> dict[str, Any]:
        fitting = self.trainer is not None and self.trainer.training
        return {"epoch": epoch_to_resume(self.trainer) if fitting else self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = int(state_dict.get("epoch", 0))
