"""Randomness that depends on the run's seed and the epoch alone, so that a resumed run repeats
the uninterrupted one bit for bit.

Lightning 2.6 restores weights, optimizers, schedulers and loop counters from a checkpoint, but
not the random number generators: a run resumed from ``last.ckpt`` shuffled, augmented and
dropped out differently from the same run uninterrupted. Here every epoch draws from generators
seeded with ``(seed, epoch)``: the training order and each image's augmentation
(:class:`EpochSampler`, :class:`SeededSamples`) and the global generators that layers such as
dropout use (:class:`litcompress.callbacks.EpochSeed`). Nothing needs saving but the epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

# Streams drawn from one (seed, epoch): independent generators for independent jobs.
ORDER_STREAM = 0
GLOBAL_STREAM = 1
LOADER_STREAM = 2
BUCKET_STREAM = 3


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for ``stream`` in ``epoch`` of a run seeded with ``seed``."""
    state = np.random.SeedSequence([seed % 2**63, epoch, stream]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def seed_global_generators(seed: int) -> None:
    """Seed torch (every device), numpy and Python's ``random``, quietly."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffles ``size`` samples as a function of ``(seed, epoch)`` and gives each its own seed.

    Yields ``(index, sample_seed)`` pairs for :class:`SeededSamples`: an image's augmentation
    then depends on the run's seed, the epoch and the image alone, not on the order, the number
    of workers or what ran before. Lightning calls :meth:`set_epoch` at the start of every epoch;
    an iteration without it (under a distributed wrapper) moves to the next epoch by itself.

    Give the DataLoader :attr:`generator`: it draws its workers' base seed from it instead of
    from torch's global generator, which training (dropout) then finds as the epoch left it.
    """

    def __init__(self, size: int, seed: int = 0, epoch: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(epoch_seed(self.seed, epoch, LOADER_STREAM))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, ORDER_STREAM))
        order = torch.randperm(self.size, generator=generator).tolist()
        seeds = torch.randint(2**62, (self.size,), generator=generator).tolist()
        self.set_epoch(self.epoch + 1)
        return iter(zip(order, seeds, strict=True))


class LengthBucketedSampler(EpochSampler):
    """:class:`EpochSampler`'s order of an epoch, cut into windows of ``window`` batches, each
    window sorted by length and cut into batches, the batches then shuffled: every batch holds
    examples of about one length (little padding), the order still depends on ``(seed, epoch)``
    alone. A DataLoader of ``batch_size`` over it batches consecutive examples; under DDP, each
    rank takes every ``world_size``-th example, still of about one length."""

    def __init__(
        self, lengths: list[int], batch_size: int, seed: int = 0, epoch: int = 0, window: int = 50
    ) -> None:
        super().__init__(len(lengths), seed, epoch)
        self.lengths, self.batch_size, self.window = lengths, batch_size, window

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        pairs = list(super().__iter__())  # this epoch's order and sample seeds; on to the next
        size, batch, batches, left = self.batch_size * self.window, self.batch_size, [], []
        for start in range(0, len(pairs), size):
            chunk = sorted(pairs[start : start + size], key=self._length)
            full = len(chunk) - len(chunk) % batch
            batches += [chunk[i : i + batch] for i in range(0, full, batch)]
            left += chunk[full:]
        # What no full batch of its window took: batched together, the one short batch last, so
        # that the DataLoader's batches are these batches.
        left.sort(key=self._length)
        cut = len(left) - len(left) % batch
        batches += [left[i : i + batch] for i in range(0, cut, batch)]
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, BUCKET_STREAM))
        order = torch.randperm(len(batches), generator=generator).tolist()
        return iter([*(pair for index in order for pair in batches[index]), *left[cut:]])

    def _length(self, pair: tuple[int, int]) -> int:
        return self.lengths[pair[0]]


class SeededSamples(Dataset):
    """``dataset`` whose items, asked for as ``(index, seed)``, are drawn with torch's generator
    seeded with ``seed`` (and restored after); a plain index reads the item as it is."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        assert isinstance(self.dataset, Sized)
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        # The CPU generator alone, directly: torch.manual_seed and fork_rng also visit every
        # device type and cost 60 times more (130 us against 2 us a sample).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
