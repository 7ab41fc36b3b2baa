"""Predict the classes of image files with any artifact, prepared as in training.

Every file Pillow opens is predicted (its first frame; 16- and 32-bit images scaled to 8 bits as a
viewer shows them: :mod:`litcompress.deploy.images`); a file that looks like an image but cannot
be read is skipped, with the reason. In a folder, a file looks like an image by its suffix (one
Pillow knows, :func:`PIL.Image.registered_extensions`) or by its content (Pillow recognises it);
the other files are counted and left out.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import track
from torch import Tensor

from litcompress.deploy.images import READ_ERRORS, image_suffixes, opens_as_image, unreadable_reason
from litcompress.deploy.metadata import Preprocessing
from litcompress.deploy.runtimes import Runtime, run_batched
from litcompress.errors import ConfigError

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".json")


@dataclass
class Prediction:
    """The ``top_k`` classes of one image: ``(index, name, probability)``, most likely first."""

    file: str
    top: list[tuple[int, str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "predictions": [
                {"index": index, "class": name, "probability": probability}
                for index, name, probability in self.top
            ],
        }


def gather_images(arguments: Sequence[str]) -> list[Path]:
    """The image files named by ``arguments``: files, folders (searched recursively for files
    that look like images, see the module docstring) and glob patterns (``**`` included), in
    order, each file once. Files and matches of a pattern are taken as they are: those Pillow
    cannot read are skipped by :func:`predict`, with the reason.

    Raises:
        ConfigError: an argument names nothing, or a folder or pattern holds no image file.
    """
    found: dict[Path, None] = {}
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_file():
            candidates = [path]
        elif path.is_dir():
            candidates, others = _images_in(path)
            if others:
                log.info(
                    "%s: left out %d file(s) that are not images (e.g. %s)",
                    argument,
                    len(others),
                    others[0],
                )
            if not candidates:
                raise ConfigError(
                    f"{argument} is a folder without image files (none has a suffix Pillow knows "
                    f"or content Pillow recognises as an image)."
                )
        elif glob.has_magic(argument):
            matches = sorted(glob.glob(os.path.expanduser(argument), recursive=True))
            candidates = [Path(m) for m in matches if Path(m).is_file()]
            if not candidates:
                raise ConfigError(f"{argument} matches no file.")
        else:
            raise ConfigError(f"{argument} does not exist (looked for {path.resolve()}).")
        found.update(dict.fromkeys(candidates))
    return list(found)


def _images_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(files that look like images, the other files)`` under ``folder``, sorted."""
    suffixes = image_suffixes()
    images, others = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        looks = path.suffix.lower() in suffixes or opens_as_image(path)
        (images if looks else others).append(path)
    return images, others


def predict(
    runtime: Runtime,
    files: Sequence[Path],
    preprocessing: Preprocessing,
    classes: Sequence[str] | None,
    top_k: int = 5,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[list[Prediction], list[tuple[Path, str]]]:
    """Predict ``files`` in batches of ``batch_size``.

    Returns:
        the predictions, in the order of ``files``, and the files that could not be read as
        images, each with the reason.
    """
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k} must be at least 1.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} must be at least 1.")
    predictions: list[Prediction] = []
    skipped: list[tuple[Path, str]] = []
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    for batch in track(
        batches, description="Predicting", disable=not progress or len(batches) < 2, transient=True
    ):
        images, names = [], []
        for path in batch:
            try:
                images.append(preprocessing.load(path))
                names.append(path)
            except READ_ERRORS as error:  # Pillow's errors for files it cannot read
                skipped.append((path, unreadable_reason(path, error)))
        if not images:
            continue
        logits = run_batched(runtime, torch.stack(images), batch=batch_size)
        probabilities = logits.softmax(dim=1)
        count = probabilities.shape[1]
        if classes is not None and len(classes) != count:
            raise ConfigError(
                f"{len(classes)} class names were given for a network of {count} outputs: give "
                f"exactly one name per output."
            )
        predictions += ranked(probabilities, [str(path) for path in names], classes, top_k)
    return predictions, skipped


def ranked(
    probabilities: Tensor, names: Sequence[str], classes: Sequence[str] | None, top_k: int
) -> list[Prediction]:
    """The ``top_k`` classes of each row of ``probabilities``, named ``names``."""
    values, indices = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return [
        Prediction(
            name,
            [
                (int(i), classes[int(i)] if classes else str(int(i)), float(p))
                for p, i in zip(row_values, row_indices, strict=True)
            ],
        )
        for name, row_values, row_indices in zip(names, values, indices, strict=True)
    ]


def read_texts(path: str | os.PathLike[str], column: str = "text") -> list[str]:
    """The texts of a file: one per line (``.txt`` and others), or a column of a CSV/TSV file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"--file {path}: no such file.")
    if file.suffix.lower() in (".csv", ".tsv"):
        with file.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(
                handle, delimiter="\t" if file.suffix.lower() == ".tsv" else ","
            )
            if column not in (reader.fieldnames or []):
                raise ConfigError(
                    f"--file {path} has no column {column!r} (its columns: "
                    f"{', '.join(reader.fieldnames or [])}): name it with --column."
                )
            return [row[column] for row in reader]
    return [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def predict_texts(
    runtime: Runtime,
    texts: Sequence[str],
    top_k: int = 5,
    batch_size: int = 32,
) -> list[Prediction]:
    """Predict ``texts`` with a text artifact, tokenized by the tokenizer it carries."""
    from litcompress.data.text import pad_ids
    from litcompress.data.tokenizer import TextTokenizer

    inputs = (runtime.meta or {}).get("inputs") or {}
    if inputs.get("kind") != "text" or not inputs.get("tokenizer"):
        raise ConfigError(
            f"{runtime.path} records no tokenizer, so its texts cannot be tokenized as in "
            f"training: export it with litcompress from its run."
        )
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k} must be at least 1.")
    empty = [i + 1 for i, text in enumerate(texts) if not str(text).strip()]
    if empty or not texts:
        raise ConfigError(
            'No text to predict: give --text "..." or --file texts.txt'
            if not texts
            else f"Texts {', '.join(map(str, empty[:5]))} are empty: remove them."
        )
    tokenizer = TextTokenizer.from_record(inputs["tokenizer"])
    ids, _ = tokenizer.encode(list(texts), int(inputs["max_length"]))
    logits = run_batched(runtime, pad_ids(ids, tokenizer.pad_id), batch=batch_size)
    return ranked(logits.softmax(dim=1), list(texts), inputs.get("classes"), top_k)


def write_predictions(
    predictions: Iterable[Prediction], path: str | os.PathLike[str], key: str = "file"
) -> Path:
    """Write ``predictions`` to a ``.csv`` (one row per image: file, then class and probability
    for each rank) or ``.json`` (a list of ``{"file", "predictions": [...]}``) file; ``key``
    names what was predicted (``file``, or ``text`` for texts)."""
    path = Path(path)
    predictions = list(predictions)
    if path.suffix == ".json":
        documents = [p.to_dict() for p in predictions]
        for document in documents:
            document[key] = document.pop("file")
        path.write_text(json.dumps(documents, indent=2))
        return path
    k = max((len(p.top) for p in predictions), default=0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        header = [key]
        for rank in range(1, k + 1):
            header += [f"class_{rank}", f"index_{rank}", f"probability_{rank}"]
        writer.writerow(header)
        for prediction in predictions:
            row: list[Any] = [prediction.file]
            for index, name, probability in prediction.top:
                row += [name, index, f"{probability:.6f}"]
            writer.writerow(row)
    return path


def check_output(path: str | None) -> None:
    """Refuse an ``--output`` whose format is unknown or whose folder does not exist, early."""
    if path is None:
        return
    target = Path(path)
    if target.suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            f"--output {path}: the file's suffix decides its format; use .csv or .json."
        )
    if not target.expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--output {path}: the folder {target.parent} does not exist.")
