"""``hf_dataset``: a Hugging Face ``datasets`` dataset, saved with ``save_to_disk`` (offline), or
downloaded by name where the machine is online.

A ``DatasetDict`` gives its splits (``train``, and ``validation``/``test`` where it has them; a
missing one is cut from ``train``); a single ``Dataset`` is split by fractions. Labels stored as a
``ClassLabel`` are named with its names; other labels are used as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litcompress.data.text import Splits, TextClassificationData
from litcompress.errors import ConfigError


class HFDatasetData(TextClassificationData):
    """Texts and labels of a ``datasets`` dataset.

    Args:
        path: the folder ``save_to_disk`` wrote (offline).
        name: a dataset's name on the Hugging Face Hub instead (``load_dataset``; needs the
            network).
        text_column, label_column: the columns holding each text and its label.
        train_split, val_split, test_split: the splits' names in a ``DatasetDict``.
        **kwargs: see :class:`~litcompress.data.text.TextClassificationData`.
    """

    def __init__(
        self,
        path: str | None = None,
        name: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if bool(path) == bool(name):
            raise ConfigError(
                "data=hf_dataset needs either data.path=<a folder save_to_disk wrote> or "
                "data.name=<a dataset on the Hub> (online), not "
                + ("both." if path else "neither.")
            )
        self.path, self.name = path, name
        self.text_column, self.label_column = text_column, label_column
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}

    def read_splits(self) -> Splits:
        import datasets

        if self.path:
            folder = Path(self.path).expanduser()
            if not folder.is_dir():
                raise ConfigError(
                    f"data.path={self.path}: no such folder (save_to_disk writes one)."
                )
            try:
                loaded = datasets.load_from_disk(str(folder))
            except FileNotFoundError as error:
                raise ConfigError(
                    f"data.path={self.path} holds no dataset save_to_disk wrote ({error})."
                ) from None
        else:
            loaded = datasets.load_dataset(self.name)
        if isinstance(loaded, datasets.Dataset):
            return Splits(train=self._texts(loaded, "train"))
        if self.split_names["train"] not in loaded:
            raise ConfigError(
                f"data.train_split={self.split_names['train']}: the dataset has the splits "
                f"{', '.join(loaded)}; name the training one."
            )
        parts = {
            split: self._texts(loaded[name], split) if name in loaded else None
            for split, name in self.split_names.items()
        }
        return Splits(**parts)

    def _texts(self, dataset: Any, split: str) -> tuple[list[str], list[str]]:
        missing = [c for c in (self.text_column, self.label_column) if c not in dataset.features]
        if missing:
            raise ConfigError(
                f"The {split} split of the dataset has no column "
                f"{', '.join(repr(c) for c in missing)} (its columns: "
                f"{', '.join(dataset.features)}). Name them with data.text_column=... and "
                f"data.label_column=..."
            )
        feature = dataset.features[self.label_column]
        labels = dataset[self.label_column]
        if hasattr(feature, "int2str"):  # a ClassLabel: its names
            labels = [feature.int2str(int(label)) for label in labels]
        return [str(text or "") for text in dataset[self.text_column]], [str(v) for v in labels]
