"""What a network takes as input, described once.

:class:`InputSpec` is built from the data module (or, for a checkpoint, from the record it
carries) and asked by everything that needs inputs: example inputs for tracing, torch-pruning and
``torch.export``, MACs, latency, calibration, the dynamic dimensions of an export, and the
preprocessing of ``predict``. Two kinds of input are described:

* ``image``: one float tensor ``N x channels x height x width``;
* ``tokens``: token ids and an attention mask, both ``N x L`` (int64), ``L`` up to
  ``max_length``; examples are ``length`` tokens long (the sequence length at which MACs and
  latency are stated).

The shape of a network's input is computed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

KINDS = ("image", "tokens")
# How messages speak of each kind.
KIND_WORDS = {"image": "images", "tokens": "text (token ids)"}
# Entry of a checkpoint's litcompress record (and of an artifact's metadata) that holds the spec.
RECORD_KEY = "input_spec"
# The largest batch an exported program accepts (a dynamic dimension needs a bound).
MAX_BATCH = 65536


@dataclass(frozen=True)
class InputSpec:
    """The inputs of one network.

    Attributes:
        kind: ``image`` or ``tokens``.
        channels, height, width: an image's size (``image``).
        vocab_size: the number of token ids (``tokens``).
        max_length: the longest sequence the network takes (``tokens``).
        length: the sequence length of example inputs (``tokens``; ``max_length`` when 0).
    """

    kind: str = "image"
    channels: int = 0
    height: int = 0
    width: int = 0
    vocab_size: int = 0
    max_length: int = 0
    length: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"InputSpec kind {self.kind!r}: choose among {', '.join(KINDS)}")

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def image(cls, channels: int, size: int | Sequence[int]) -> InputSpec:
        """Images of ``channels`` x ``size`` (one side of a square, or ``(height, width)``)."""
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return cls("image", channels=int(channels), height=int(height), width=int(width))

    @classmethod
    def tokens(cls, vocab_size: int, max_length: int, length: int = 0) -> InputSpec:
        """Token ids below ``vocab_size`` with an attention mask, up to ``max_length`` long."""
        return cls("tokens", vocab_size=vocab_size, max_length=max_length, length=length)

    @classmethod
    def of(cls, inputs: InputSpec | Sequence[int]) -> InputSpec:
        """``inputs`` as a spec: a spec as it is, or the shape of one image given by hand
        (``(channels, height, width)``, as tests and benchmarks write it)."""
        if isinstance(inputs, InputSpec):
            return inputs
        channels, height, width = (int(n) for n in inputs)
        return cls.image(channels, (height, width))

    @classmethod
    def of_model_config(cls, config: Mapping[str, Any]) -> InputSpec:
        """The inputs a network's config implies: ``vocab_size`` and ``max_length`` for a text
        network, ``in_channels`` and ``image_size`` for an image network (what checkpoints
        written before the spec was recorded say)."""
        if "vocab_size" in config:
            return cls.tokens(config["vocab_size"], config["max_length"])
        return cls.image(config["in_channels"], config["image_size"])

    @classmethod
    def of_record(cls, meta: Mapping[str, Any]) -> InputSpec:
        """The spec a checkpoint's litcompress record (or an artifact's metadata) carries, or the
        one its network config implies (older checkpoints)."""
        record = meta.get(RECORD_KEY)
        if record:
            return cls(**record)
        return cls.of_model_config(meta["model_config"])

    def to_record(self) -> dict[str, Any]:
        """Plain values, for checkpoints (``weights_only``) and artifact metadata (JSON)."""
        return asdict(self)

    # -- what callers ask ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, without the batch dimension."""
        if self.kind == "image":
            return (self.channels, self.height, self.width)
        return (self.length or self.max_length,)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the inputs, in the order the network takes them (ONNX input names)."""
        return ("images",) if self.kind == "image" else ("input_ids", "attention_mask")

    def example(
        self, batch: int = 1, device: torch.device | str | None = None, zeros: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Inputs for ``batch`` examples: random (or zero) images; random token ids with a full
        attention mask. Call the network with ``net(*spec.example(batch))``."""
        if self.kind == "image":
            make = torch.zeros if zeros else torch.randn
            return (make(batch, *self.shape, device=device),)
        size = (batch, *self.shape)
        ids = (
            torch.zeros(size, dtype=torch.long, device=device)
            if zeros
            else torch.randint(self.vocab_size, size, device=device)
        )
        return ids, torch.ones(size, dtype=torch.long, device=device)

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        """``dynamic_shapes`` for ``torch.export``: the batch dimension of every input, and the
        sequence length of token inputs."""
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        if self.kind == "image":
            return ({0: batch},)
        sequence = torch.export.Dim("sequence", min=2, max=self.max_length)
        return ({0: batch, 1: sequence}, {0: batch, 1: sequence})

    def describe(self) -> str:
        """A few words for messages and reports: ``3x32x32 images``, ``128 tokens``."""
        if self.kind == "image":
            return f"{self.channels}x{self.height}x{self.width} images"
        return f"{self.shape[0]} tokens"


# What functions that only need example inputs take: a network's spec, or one image's shape
# given by hand (``(channels, height, width)``), which :meth:`InputSpec.of` turns into a spec.
Inputs = InputSpec | tuple[int, ...]


# A set of examples as the network takes them: one tensor (images), or a tuple of tensors of the
# same first dimension (token ids and attention mask).
Examples = torch.Tensor | tuple[torch.Tensor, ...]


def as_tuple(examples: Examples) -> tuple[torch.Tensor, ...]:
    """``examples`` as a tuple of the network's inputs."""
    return (examples,) if isinstance(examples, torch.Tensor) else tuple(examples)


def count_examples(examples: Examples) -> int:
    """How many examples ``examples`` holds (the first dimension)."""
    return len(as_tuple(examples)[0])


def take_examples(examples: Examples, start: int, stop: int) -> tuple[torch.Tensor, ...]:
    """Examples ``start`` to ``stop`` of every input."""
    return tuple(x[start:stop] for x in as_tuple(examples))


def concat_examples(batches: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Batches of examples put together; token inputs (``N x L`` integers) of different lengths
    are padded with zeros (an attention mask of 0: not attended) to the longest."""
    joined = []
    for parts in zip(*batches, strict=True):
        if parts[0].dim() == 2 and not parts[0].is_floating_point():
            longest = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, longest - p.shape[1])) for p in parts]
        joined.append(torch.cat(parts))
    return tuple(joined)
