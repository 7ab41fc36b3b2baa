"""What ``litcompress auto`` searches: techniques and their settings, as ``train.py`` overrides.

A point of the search is a :data:`Settings` mapping:

* ``ratio``: share of channels (Transformers: of heads and FFN neurons) pruned, 0 for none;
* ``round_to``: channel counts kept multiples of it (``None``: any), when channels are pruned;
* ``depth``: how many of the removable residual blocks (encoder layers) are removed, 0 for none;
* ``distill``: fine-tune by distilling from the entering network, when something is pruned;
* ``quant``: ``none``, ``ptq`` (int8 after fine-tuning) or ``qat`` (int8-aware fine-tuning);
* ``epochs``: epochs of fine-tuning (0 when nothing changes the network's form, or PTQ alone).

Optuna samples them define-by-run (a setting that cannot matter is not sampled), and a point
given by hand (``--try``) names them as ``ratio=0.5 depth=0.25 quant=qat epochs=2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from litcompress.errors import ConfigError

Settings = dict[str, Any]
QUANT = ("none", "ptq", "qat")
ROUND_TO = (None, 8)
STEP = 0.05  # of the ratio
MAX_DEPTH_SHARE = 0.75  # the most of a network's removable blocks a trial removes


@dataclass(frozen=True)
class Space:
    """The bounds of the search.

    Attributes:
        max_ratio: the largest channel ratio tried.
        max_depth: the most blocks removed (0: the network has none to remove).
        max_epochs: the most epochs of fine-tuning.
        quant: the int8 methods tried (``none`` among them: fp32 delivered).
    """

    max_ratio: float = 0.8
    max_depth: int = 0
    max_epochs: int = 3
    quant: tuple[str, ...] = QUANT
    rounded_ratio: float = 0.8

    @classmethod
    def of(
        cls,
        blocks: int,
        budget: int,
        narrowest: int,
        max_epochs: int,
        quant: tuple[str, ...],
    ) -> Space:
        """The space of a network with ``blocks`` removable blocks of which ``budget`` can go
        (up to three quarters of them are tried), whose narrowest prunable layer has
        ``narrowest`` channels (with ``round_to`` it must keep that many at least)."""
        most = min(budget, max(1, int(blocks * MAX_DEPTH_SHARE))) if blocks else 0
        rounded = round(math.floor(round((1 - ROUND_TO[-1] / narrowest) / STEP, 6)) * STEP, 2)
        return cls(
            max_depth=most, max_epochs=max_epochs, quant=quant, rounded_ratio=max(rounded, 0.0)
        )

    def suggest(self, trial: Any) -> Settings:
        """The settings of an Optuna ``trial`` (sampled, or those enqueued for it)."""
        ratio = trial.suggest_float("ratio", 0.0, self.max_ratio, step=STEP)
        depth = trial.suggest_int("depth", 0, self.max_depth) if self.max_depth > 0 else 0
        prunes = ratio > 0 or depth > 0
        rounds = ROUND_TO if self.rounded_ratio > 0 else ROUND_TO[:1]
        round_to = trial.suggest_categorical("round_to", rounds) if ratio > 0 else None
        if round_to and ratio > self.rounded_ratio:
            # The narrowest layers keep round_to channels: above, the run would refuse.
            ratio = self.rounded_ratio
        settings: Settings = {
            "ratio": ratio,
            "round_to": round_to,
            "depth": depth,
            "distill": trial.suggest_categorical("distill", (False, True)) if prunes else False,
            "quant": trial.suggest_categorical("quant", self.quant),
        }
        trains = prunes or settings["quant"] == "qat"
        settings["epochs"] = trial.suggest_int("epochs", 1, self.max_epochs) if trains else 0
        return settings


def changes_nothing(settings: Settings) -> bool:
    """Whether ``settings`` deliver the network as it is (nothing pruned, fp32)."""
    return settings["ratio"] == 0 and settings["depth"] == 0 and settings["quant"] == "none"


def overrides(settings: Settings) -> list[str]:
    """The ``train.py`` overrides of ``settings`` (the run starts from the trained network)."""
    techniques, options = [], []
    if settings["ratio"] > 0 or settings["depth"] > 0:
        techniques.append("prune")
        options += [
            f"compress.prune.ratio={settings['ratio']}",
            f"compress.prune.depth={int(settings['depth']) or 'null'}",
            f"compress.prune.round_to={settings.get('round_to') or 'null'}",
        ]
        if settings["distill"]:
            techniques.append("distill")
        else:
            options.append("compress.prune.depth_distill=false")
    if settings["quant"] != "none":
        techniques.append(settings["quant"])
    chosen = f"[{','.join(techniques)}]" if techniques else "none"
    return [f"compress={chosen}", *options, f"trainer.max_epochs={settings['epochs']}"]


def describe(settings: Settings) -> str:
    """A few words for progress lines and tables: ``prune 0.45/8 + depth 0.25 + distill + qat,
    2 epochs``."""
    parts = []
    if settings["ratio"] > 0:
        rounding = f"/{settings['round_to']}" if settings.get("round_to") else ""
        parts.append(f"prune {settings['ratio']:.2f}{rounding}")
    if settings["depth"] > 0:
        count = settings["depth"]
        parts.append(f"{count} block{'s' if count != 1 else ''}")
    if settings["distill"]:
        parts.append("distill")
    if settings["quant"] != "none":
        parts.append(settings["quant"])
    what = " + ".join(parts) or "as it is"
    epochs = settings["epochs"]
    return f"{what}, {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else what


def parse_point(text: str, space: Space) -> Settings:
    """A point given by hand (``--try``): ``key=value`` words; the others are sampled.

    Raises:
        ConfigError: an unknown key or a value outside the space.
    """
    point: Settings = {}
    for word in text.split():
        key, _, value = word.partition("=")
        if key == "ratio":  # on the grid Optuna samples (it resamples values off it)
            point[key] = _number(word, value, 0.0, space.max_ratio)
            if abs(point[key] / STEP - round(point[key] / STEP)) > 1e-6:
                raise ConfigError(f"--try {word}: ratio is searched in steps of {STEP}.")
        elif key == "depth":
            point[key] = _count(word, value, space.max_depth, "blocks removed")
        elif key == "round_to":
            point[key] = None if value in ("null", "none", "") else int(_number(word, value, 1, 64))
        elif key == "distill":
            point[key] = _flag(word, value)
        elif key == "quant":
            if value not in space.quant:
                raise ConfigError(f"--try {word}: quant is one of {', '.join(space.quant)}.")
            point[key] = value
        elif key == "epochs":
            point[key] = _count(word, value, space.max_epochs, "epochs")
        else:
            raise ConfigError(
                f"--try {word}: unknown setting {key!r}; the settings are ratio, round_to, "
                f"depth, distill, quant and epochs (e.g. --try 'ratio=0.5 quant=qat epochs=2')."
            )
    return point


def _number(word: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--try {word}: {value!r} is not a number.") from None
    if not low <= number <= high:
        raise ConfigError(f"--try {word}: must be within [{low}, {high}].")
    return number


def _count(word: str, value: str, most: int, what: str) -> int:
    number = _number(word, value, 0, most)
    if not number.is_integer():
        raise ConfigError(f"--try {word}: a whole number of {what}.")
    return int(number)


def _flag(word: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"--try {word}: give true or false.")
