"""Text classification: texts and labels become token ids with an attention mask.

:class:`TextClassificationData` is the base of every text data module: a subclass says where its
texts and labels come from (:meth:`read_splits`); the base checks them, builds or loads the
tokenizer (:mod:`litcompress.data.tokenizer`), encodes every split once (cut at ``max_length``
tokens, the number cut reported) and pads each batch to its own longest text. The training order
depends on the run's seed and the epoch alone, as for images, so a resumed run sees the same
batches.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset

from litcompress.data.base import ClassificationData
from litcompress.data.tokenizer import TextTokenizer, load_tokenizer, train_tokenizer
from litcompress.errors import ConfigError
from litcompress.seeding import LengthBucketedSampler, SeededSamples
from litcompress.spec import InputSpec

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """Texts and their class names, per split (``val``/``test`` ``None``: cut from ``train``)."""

    train: tuple[list[str], list[str]]
    val: tuple[list[str], list[str]] | None = None
    test: tuple[list[str], list[str]] | None = None


class EncodedTexts(Dataset):
    """Token ids (without padding) and class indices of one split."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids = [torch.tensor(row, dtype=torch.long) for row in ids]
        self.labels = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[index], self.labels[index]


def pad_ids(
    rows: list[torch.Tensor] | list[list[int]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of texts' token ids, padded to the longest of them."""
    longest = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def pad_batch(
    items: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, labels)`` of a batch, padded to its own longest text."""
    input_ids, mask = pad_ids([ids for ids, _ in items], pad_id)
    return input_ids, mask, torch.stack([label for _, label in items])


class TextClassificationData(ClassificationData):
    """Texts and labels from :meth:`read_splits`, tokenized for a Transformer.

    Args:
        batch_size: texts per batch.
        num_workers: DataLoader worker processes.
        max_length: the longest input in tokens (special tokens included); longer texts are cut,
            and how many were is logged and recorded.
        tokenizer: a folder with a pretrained tokenizer (``AutoTokenizer.from_pretrained``), or
            ``null``: a subword (BPE) tokenizer is trained on the training split.
        vocab_size: the vocabulary of a trained tokenizer.
        lowercase: a trained tokenizer lowercases texts first.
        val_fraction, test_fraction: the share of the texts held out for validation and test
            where the source has no such split (stratified by class, fixed by ``seed``).
        seed: seed of those splits.
    """

    in_channels = 0
    image_size = 0

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        max_length: int = 64,
        tokenizer: str | None = None,
        vocab_size: int = 8000,
        lowercase: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 42,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ConfigError(
                f"data.max_length={max_length!r} must be an integer of at least 8 tokens (e.g. "
                f"data.max_length=128)."
            )
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 100:
            raise ConfigError(
                f"data.vocab_size={vocab_size!r} must be an integer of at least 100 (e.g. "
                f"data.vocab_size=8000)."
            )
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < value < 1:
                raise ConfigError(f"data.{name}={value!r} must be between 0 and 1 (e.g. 0.1).")
        self.max_length = max_length
        self.tokenizer_path = tokenizer
        self.vocab_size = vocab_size
        self.lowercase = lowercase
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.tokenizer: TextTokenizer | None = None
        self.truncated: dict[str, int] = {}
        # The share of padding in the first epoch's training batches (set by setup).
        self.padding = 0.0
        self.collate_fn = pad_batch

    # -- what a subclass provides -------------------------------------------------------------
    def read_splits(self) -> Splits:
        """The texts and their labels (class names), per split."""
        raise NotImplementedError

    # -- what the network is told -------------------------------------------------------------
    @property
    def num_classes(self) -> int:  # known once the texts are read
        self.setup()
        return len(self.classes)

    def network_inputs(self) -> dict[str, Any]:
        self.setup()
        return {"vocab_size": self.tokenizer.vocab_size, "max_length": self.max_length}

    @property
    def input_spec(self) -> InputSpec:
        self.setup()
        return InputSpec.tokens(self.tokenizer.vocab_size, self.max_length, self.max_length)

    def inputs_record(self) -> dict[str, Any]:
        """How a text becomes the network's input (the tokenizer itself, as JSON), and the class
        names: checkpoints and artifacts carry it, so that predict needs nothing else."""
        self.setup()
        return {
            "kind": "text",
            "tokenizer": self.tokenizer.to_record(),
            "max_length": self.max_length,
            "classes": list(self.classes),
            "truncated": dict(self.truncated),
            "padding": round(self.padding, 4),
        }

    def use_recorded_inputs(self, record: dict[str, Any] | None) -> None:
        """Tokenize as the checkpoint a run starts from (``init_from``) or resumes did: its
        network's token ids are that tokenizer's."""
        if record and record.get("kind") == "text" and record.get("tokenizer"):
            if self.tokenizer_path:
                log.info(
                    "data.tokenizer=%s is not used: the checkpoint carries the tokenizer its "
                    "network was trained with",
                    self.tokenizer_path,
                )
            self.tokenizer = TextTokenizer.from_record(record["tokenizer"])

    def train_dataloader(self) -> DataLoader:
        """Training batches of texts of about one length (:class:`LengthBucketedSampler`)."""
        return self._loader(SeededSamples(self.train_set), self._train_sampler(self.epoch))

    def _train_sampler(self, epoch: int) -> LengthBucketedSampler:
        lengths = [len(ids) for ids in self.train_set.ids]
        return LengthBucketedSampler(lengths, self.batch_size, self.shuffle_seed, epoch)

    def padding_share(self) -> float:
        """The share of padding in the training batches of the first epoch."""
        lengths = [len(ids) for ids in self.train_set.ids]
        order = [index for index, _ in self._train_sampler(0)]
        padded = real = 0
        for start in range(0, len(order), self.batch_size):
            batch = [lengths[i] for i in order[start : start + self.batch_size]]
            padded += max(batch) * len(batch)
            real += sum(batch)
        return 1 - real / padded if padded else 0.0

    # -- building ------------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        splits = self.read_splits()
        train, val, test = self._split(splits)
        classes = sorted(set(train[1]))
        if len(classes) < 2:
            raise ConfigError(
                f"{type(self).__name__}: the training texts have {len(classes)} class "
                f"({', '.join(classes) or 'none'}); a classifier needs at least two."
            )
        for name, (_, labels) in (("val", val), ("test", test)):
            unseen = sorted(set(labels) - set(classes))
            if unseen:
                raise ConfigError(
                    f"{type(self).__name__}: the {name} texts have labels the training texts "
                    f"never have ({', '.join(map(str, unseen[:5]))}): a classifier cannot learn "
                    f"them. Give every class training texts, or drop those rows."
                )
        self.classes = classes
        if self.tokenizer is None:
            self.tokenizer = (
                load_tokenizer(self.tokenizer_path, "data.tokenizer")
                if self.tokenizer_path
                else train_tokenizer(train[0], self.vocab_size, self.lowercase)
            )
            # Every process of a run (DDP ranks) must tokenize alike: the fingerprint says so.
            log.info(
                "%s: tokenizer %s, %d tokens (fingerprint %s)",
                type(self).__name__,
                self.tokenizer_path or "trained on the training texts",
                self.tokenizer.vocab_size,
                self.tokenizer.fingerprint(),
            )
        # Batches are padded with the tokenizer's own padding id (a RoBERTa's is 1, not 0).
        self.collate_fn = functools.partial(pad_batch, pad_id=self.tokenizer.pad_id)
        index = {name: i for i, name in enumerate(classes)}
        datasets = []
        for name, (texts, labels) in (("train", train), ("val", val), ("test", test)):
            ids, cut = self.tokenizer.encode(texts, self.max_length)
            self.truncated[name] = cut
            if cut:
                log.info(
                    "%s: %d of %d %s texts cut at data.max_length=%d tokens",
                    type(self).__name__,
                    cut,
                    len(texts),
                    name,
                    self.max_length,
                )
            datasets.append(EncodedTexts(ids, [index[label] for label in labels]))
        self.train_set = datasets[0]
        self.padding = self.padding_share()
        log.info(
            "%s: training batches of %d texts of about one length: %.1f%% of their tokens are "
            "padding",
            type(self).__name__,
            self.batch_size,
            100 * self.padding,
        )
        return tuple(datasets)

    def _split(
        self, splits: Splits
    ) -> tuple[
        tuple[list[str], list[str]], tuple[list[str], list[str]], tuple[list[str], list[str]]
    ]:
        """Check every split's texts and cut ``val`` and ``test`` from ``train`` where missing."""
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        for name, part in parts.items():
            if part is None:
                continue
            texts, labels = part
            empty = [i for i, text in enumerate(texts) if not str(text).strip()]
            if empty:
                raise ConfigError(
                    f"{type(self).__name__}: {len(empty)} {name} texts are empty (rows "
                    f"{', '.join(str(i + 1) for i in empty[:5])}{', ...' if len(empty) > 5 else ''}"
                    f"): remove them, or fill them in."
                )
            if len(texts) != len(labels):
                raise ConfigError(f"{type(self).__name__}: {name} has texts and labels unpaired.")
        texts, labels = (list(v) for v in splits.train)
        rest: list[int] = list(range(len(texts)))
        held: dict[str, list[int]] = {}
        for name, fraction in (("test", self.test_fraction), ("val", self.val_fraction)):
            if parts[name] is not None:
                continue
            share = fraction / (1 - sum(len(v) for v in held.values()) / len(texts))
            rest, held[name] = train_test_split(
                rest, test_size=share, random_state=self.seed, stratify=np.array(labels)[rest]
            )

        def take(indices: list[int]) -> tuple[list[str], list[str]]:
            return [texts[i] for i in indices], [labels[i] for i in indices]

        return (
            take(sorted(rest)),
            parts["val"] or take(sorted(held["val"])),
            parts["test"] or take(sorted(held["test"])),
        )
