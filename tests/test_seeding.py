"""The training order and each image's augmentation depend on (seed, epoch, image) alone."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from litcompress.seeding import EpochSampler, SeededSamples


class RandomlyShifted(Dataset):
    """Image ``i`` plus noise from torch's global generator (an augmentation)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((3,), float(index)) + torch.rand(3), index


def epoch_batches(seed: int, epoch: int, workers: int = 0) -> list[tuple[torch.Tensor, ...]]:
    data = SeededSamples(RandomlyShifted())
    sampler = EpochSampler(len(data), seed)
    sampler.set_epoch(epoch)
    loader = DataLoader(
        data, batch_size=16, sampler=sampler, num_workers=workers, generator=sampler.generator
    )
    return list(loader)


def same(a: list, b: list) -> bool:
    pairs = [pair for ba, bb in zip(a, b, strict=True) for pair in zip(ba, bb, strict=True)]
    return all(torch.equal(x, y) for x, y in pairs)


def test_order_and_augmentation_depend_on_seed_and_epoch_alone():
    first = epoch_batches(seed=1, epoch=3)
    torch.manual_seed(123)  # whatever the global generator went through meanwhile
    torch.rand(1000)
    assert same(first, epoch_batches(seed=1, epoch=3))
    assert same(first, epoch_batches(seed=1, epoch=3, workers=2))  # workers change nothing
    assert not same(first, epoch_batches(seed=1, epoch=4))
    assert not same(first, epoch_batches(seed=2, epoch=3))
    # Each image's augmentation is its own: the same noise whichever worker draws it.
    noise = {
        int(i): image - i
        for images, labels in first
        for image, i in zip(images, labels, strict=True)
    }
    later = {
        int(i): image - i
        for images, labels in epoch_batches(seed=1, epoch=3, workers=2)
        for image, i in zip(images, labels, strict=True)
    }
    assert len(noise) == 64 and all(torch.equal(noise[i], later[i]) for i in noise)


def test_the_global_generator_is_left_as_it_was():
    # It is what dropout draws from: reading a batch, even in a fresh iterator, must not move it.
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    epoch_batches(seed=1, epoch=0)
    assert torch.equal(torch.rand(4), expected)


def test_an_iteration_without_set_epoch_moves_to_the_next_epoch():
    sampler = EpochSampler(32, seed=5)
    orders = [list(sampler) for _ in range(2)]
    assert orders[0] != orders[1]
    sampler.set_epoch(0)
    assert list(sampler) == orders[0]
