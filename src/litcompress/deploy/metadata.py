"""What a deployed model carries about itself: preprocessing, class names, origin, parity.

Every artifact litcompress writes holds one metadata document (a JSON object):

* ``.ckpt``: the checkpoint's ``litcompress`` record (``inputs`` since this version);
* ``.onnx``: the model's ``metadata_props["litcompress"]``;
* ``.pt2``, OpenVINO ``.xml`` (and the run's int8 ``.pt2``/``.pt``): a sidecar ``<file>.json``.

Its ``inputs`` entry (:meth:`litcompress.data.base.ClassificationData.inputs_record`) says how an
image file becomes the network's input; :class:`Preprocessing` rebuilds that transform. Its
``input_spec`` entry is the network's :class:`~litcompress.spec.InputSpec`.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from litcompress.checkpoint import CHECKPOINT_KEY, read_checkpoint
from litcompress.deploy.images import read_image
from litcompress.errors import ConfigError
from litcompress.outputs import atomic_path
from litcompress.spec import RECORD_KEY, InputSpec
from litcompress.version import __version__

META_KEY = "litcompress"


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The JSON file that holds the metadata of an artifact that cannot hold it itself."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def artifact_metadata(
    *,
    source: str,
    network: str,
    precision: str,
    runtime: str,
    inputs: dict[str, Any] | None,
    input_spec: InputSpec | None = None,
    data: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The metadata document of an artifact (see the module docstring); ``input_spec`` is what
    the network takes (:class:`~litcompress.spec.InputSpec`)."""
    return {
        "litcompress_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "network": network,
        "precision": precision,
        "runtime": runtime,
        "inputs": inputs,
        RECORD_KEY: input_spec.to_record() if input_spec is not None else None,
        "data": data,
        "report": report,
        **extra,
    }


def write_metadata(path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Attach ``meta`` to the artifact at ``path`` (inside an ONNX file, else a sidecar)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        kept = [p for p in model.metadata_props if p.key != META_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=META_KEY, value=json.dumps(meta))
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
        return
    with atomic_path(sidecar(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of the artifact at ``path``, or ``None`` when it carries none."""
    path = Path(path)
    if path.suffix == ".ckpt":
        return checkpoint_metadata(read_checkpoint(path), path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        for prop in model.metadata_props:
            if prop.key == META_KEY:
                return json.loads(prop.value)
        return None
    if sidecar(path).is_file():
        return json.loads(sidecar(path).read_text())
    return None


def checkpoint_metadata(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a loaded checkpoint says of itself, as an artifact's metadata."""
    record = checkpoint[CHECKPOINT_KEY]
    config = record.get("model_config") or {}
    spec = InputSpec.of_record(record) if (record.get(RECORD_KEY) or config) else None
    return {
        "source": str(path),
        "network": config.get("_target_"),
        "precision": "int8 (fake-quantized)" if "quantization" in record else "fp32",
        "runtime": "torch",
        "inputs": record.get("inputs") or _inputs_of_spec(spec),
        RECORD_KEY: spec.to_record() if spec else None,
        "data": record.get("data"),
    }


def _inputs_of_spec(spec: InputSpec | None) -> dict[str, Any] | None:
    """What a checkpoint from before ``inputs`` were recorded still says: the input size."""
    if spec is None or spec.kind != "image":
        return None
    return {
        "image_size": spec.height,
        "channels": spec.channels,
        "mean": None,
        "std": None,
        "classes": None,
    }


@dataclass
class Preprocessing:
    """How an image file becomes one input of the network, as in training.

    The image is read at 8 bits per channel (:func:`litcompress.deploy.images.read_image`: the
    first frame; 16- and 32-bit images scaled as a viewer shows them) and converted to RGB (a
    grayscale or palette image is expanded), then to one channel with torchvision's grayscale
    weights if the network takes one, resized to ``image_size`` squared, scaled to [0, 1] and
    normalised with ``mean`` and ``std``.
    """

    image_size: int
    channels: int
    mean: list[float]
    std: list[float]
    _transform: v2.Compose | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_inputs(
        cls, inputs: dict[str, Any] | None, artifact: str, **given: Any
    ) -> Preprocessing:
        """The preprocessing recorded in ``inputs``, completed or overridden by ``given`` values.

        Raises:
            ConfigError: a value is neither recorded nor given; the message names the option.
        """
        values = {**(inputs or {}), **{k: v for k, v in given.items() if v is not None}}
        missing = [key for key in ("image_size", "channels", "mean", "std") if not values.get(key)]
        if missing:
            options = ", ".join(f"--{key.replace('_', '-')}" for key in missing)
            raise ConfigError(
                f"{artifact} does not record how its images were prepared ({', '.join(missing)} "
                f"unknown): it was not written by litcompress, or by an older version. Give them "
                f"with {options}, as the training data was prepared (e.g. --mean 0.5 --std 0.25 "
                f"for pixels scaled to [0, 1] and then to [-1, 1])."
            )
        channels = int(values["channels"])
        mean, std = (
            _per_channel(values["mean"], channels, "mean"),
            _per_channel(values["std"], channels, "std"),
        )
        return cls(int(values["image_size"]), channels, mean, std)

    def transform(self) -> v2.Compose:
        """From a PIL RGB image to the normalised ``channels x size x size`` tensor."""
        steps: list[v2.Transform] = [v2.ToImage()]
        if self.channels == 1:
            steps.append(v2.Grayscale(num_output_channels=1))
        return v2.Compose(
            [
                *steps,
                v2.Resize((self.image_size, self.image_size)),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
                v2.ToPureTensor(),
            ]
        )

    def load(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """Read one image file and prepare it (raises one of
        :data:`~litcompress.deploy.images.READ_ERRORS` if Pillow cannot read it)."""
        rgb = read_image(path).convert("RGB")
        if self._transform is None:
            self._transform = self.transform()
        return self._transform(rgb)


def _per_channel(values: Any, channels: int, name: str) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, list | tuple) else [values])]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ConfigError(
            f"--{name} has {len(values)} values for a network of {channels} input channels: give "
            f"one value per channel, or one for all."
        )
    if name == "std" and any(v <= 0 for v in values):
        raise ConfigError(f"--std {values} must be positive.")
    return values
