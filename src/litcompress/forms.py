"""The registry of network forms: which technique records which entry of a checkpoint.

A technique that changes a network's form (pruning removes channels, QAT inserts observers,
sparsity adds masks) records it in the checkpoint under its ``form_key`` and restores it when the
checkpoint is loaded. This registry sits below both the techniques (:mod:`litcompress.compress`,
which register here when their classes are defined) and the checkpoint code
(:mod:`litcompress.checkpoint`, which looks them up here), so that neither imports the other's
folder: the checkpoint code knows techniques only through :class:`NetworkForm`.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Protocol

from hydra.utils import get_class
from torch import nn

from litcompress.errors import ConfigError


class NetworkForm(Protocol):
    """What the checkpoint code asks of a technique that records a form (the class methods of
    :class:`litcompress.compress.base.CompressionCallback`)."""

    name: ClassVar[str]
    order: ClassVar[int]
    form_key: ClassVar[str | None]
    form_needs_deploy: ClassVar[bool]
    delivered_hint: ClassVar[str]

    @classmethod
    def form_reachable(cls, done: Any, wanted: Any) -> bool: ...

    @classmethod
    def for_inference(cls, net: nn.Module, form: Any) -> nn.Module: ...

    @classmethod
    def restore_form(cls, net: nn.Module, done: Any, wanted: Any, input_spec: Any) -> nn.Module: ...


# Checkpoint entry (a technique's ``form_key``) -> the module of the built-in technique that
# records it: imported when a checkpoint holds that entry (importing it registers the technique).
BUILTIN_FORMS = {
    "pruning_history": "litcompress.compress.prune",
    "quantization": "litcompress.compress.qat",
    "sparsity": "litcompress.compress.sparsity",
}

# Checkpoint entry -> the technique that records it (filled as technique classes are defined).
FORMS: dict[str, type[NetworkForm]] = {}


def register(key: str, technique: type[NetworkForm]) -> None:
    """Record that ``technique`` owns checkpoint entry ``key``."""
    FORMS[key] = technique


def form_technique(key: str) -> type[NetworkForm] | None:
    """The technique registered for checkpoint entry ``key``, or ``None``.

    A built-in technique's module is imported (so registered) on the first lookup of its key
    (:data:`BUILTIN_FORMS`); others register when their module is imported.
    """
    if key not in FORMS and key in BUILTIN_FORMS:
        importlib.import_module(BUILTIN_FORMS[key])
    return FORMS.get(key)


def is_form_key(key: str) -> bool:
    """Whether ``key`` is a checkpoint entry some technique records (built-in or imported)."""
    return key in FORMS or key in BUILTIN_FORMS


def technique_of(key: str, owners: dict[str, str] | None = None) -> type[NetworkForm]:
    """The technique that records checkpoint entry ``key``.

    A built-in technique's module is imported on the first lookup of its key; a technique
    defined elsewhere (a user's own file) is found through the class path the checkpoint recorded
    for it (``owners``), which imports and so registers it.
    """
    technique = form_technique(key)
    if technique is None and owners and key in owners:
        get_class(owners[key])  # importing the technique's module registers it
        technique = form_technique(key)
    if technique is None:
        raise ConfigError(
            f"The checkpoint records a network form {key!r} that no compression technique "
            f"registers. Import the module that defines that technique (it must be importable: "
            f"on PYTHONPATH) before loading the checkpoint."
        )
    return technique
