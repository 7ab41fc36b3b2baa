"""``text_files``: the user's own texts, from CSV, TSV or JSON Lines files.

One file split by fractions (``data.path=reviews.csv``), or one file per split
(``data.train=... data.val=... data.test=...``; a missing ``val``/``test`` is cut from ``train``).
The columns holding the text and the label are named in the config (``text``, ``label`` by
default). The format follows the suffix: ``.csv``, ``.tsv``, ``.jsonl``/``.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from litcompress.data.text import Splits, TextClassificationData
from litcompress.errors import ConfigError

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def read_rows(path: Path, option: str) -> list[dict]:
    """The rows of a CSV, TSV or JSON Lines file, as dicts."""
    if not path.is_file():
        raise ConfigError(f"{option}={path}: no such file.")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{option}={path}: a {suffix or 'suffix-less'} file; give a "
            f"{', '.join(SUFFIXES)} file (the format follows the suffix)."
        )
    with path.open(encoding="utf-8", newline="") as file:
        if suffix in (".jsonl", ".json"):
            rows = []
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ConfigError(
                        f"{option}={path}: line {number} is not a JSON object ({error.msg}); "
                        f"JSON Lines files hold one object per line."
                    ) from None
            return rows
        return list(csv.DictReader(file, delimiter="\t" if suffix == ".tsv" else ","))


class TextFilesData(TextClassificationData):
    """Texts and labels from the user's files.

    Args:
        path: one file holding every text, split by ``val_fraction`` and ``test_fraction``.
        train, val, test: one file per split instead (``val``/``test`` may be left out).
        text_column, label_column: the columns (keys) holding each text and its label.
        **kwargs: see :class:`~litcompress.data.text.TextClassificationData`.
    """

    def __init__(
        self,
        path: str | None = None,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if bool(path) == bool(train):
            raise ConfigError(
                "data=text_files needs either data.path=<one file> (split by fractions) or "
                "data.train=<file> (with data.val and data.test, or without), not "
                + ("both." if path else "neither.")
            )
        self.files = {"train": train or path, "val": val, "test": test}
        self.text_column, self.label_column = text_column, label_column

    def read_splits(self) -> Splits:
        parts = {}
        for split, name in self.files.items():
            if name is None:
                parts[split] = None
                continue
            option = (
                "data.path" if self.files["train"] == name and split == "train" else f"data.{split}"
            )
            rows = read_rows(Path(name).expanduser(), option)
            if not rows:
                raise ConfigError(f"{option}={name} holds no rows.")
            missing = [c for c in (self.text_column, self.label_column) if c not in rows[0]]
            if missing:
                raise ConfigError(
                    f"{option}={name} has no column {', '.join(repr(c) for c in missing)} (its "
                    f"columns: {', '.join(map(str, rows[0]))}). Name the columns with "
                    f"data.text_column=... and data.label_column=..."
                )
            parts[split] = (
                [str(row[self.text_column] or "") for row in rows],
                [str(row[self.label_column]) for row in rows],
            )
        return Splits(**parts)
