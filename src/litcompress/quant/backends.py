"""Preparing a network for int8 with one of two backends, and converting it to int8.

* ``pt2e`` (default): ``torch.export`` + torchao's PT2E flow with the x86 inductor quantizer
  (per-channel int8 weights, int8 activations); converted and compiled by inductor into oneDNN
  int8 kernels. Needs a C++ compiler.
* ``fx``: torch.ao's FX flow with the x86 qconfig; runs int8 fbgemm kernels in eager mode, no
  compiler needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from litcompress.compat import cache_pattern_graphs, cpp_compiler, cpp_compiler_setting
from litcompress.errors import ConfigError
from litcompress.models.attention import attention_modules, eager_attention
from litcompress.quant.fake_quant import FakeQuantNet
from litcompress.spec import Examples, Inputs, InputSpec, as_tuple, count_examples

BACKENDS = ("pt2e", "fx")
# Batch of the example input used to trace the network (> 1: BatchNorm trains on it).
TRACE_BATCH = 4


def check_backend(backend: str, option: str = "compress.qat.backend") -> None:
    """Raise ConfigError if ``backend`` is unknown or cannot produce int8 kernels here."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"{option}={backend!r} is unknown; choose pt2e (torchao, compiled int8) or "
            f"fx (torch.ao, eager int8, no compiler needed)."
        )
    if backend == "pt2e":
        try:
            cpp_compiler()
        except Exception as error:
            raise ConfigError(
                f"{option}=pt2e compiles its int8 kernels with inductor, which needs a "
                f"C++ compiler, and none was found (looked for {cpp_compiler_setting()}; "
                f"{type(error).__name__}: {error}). Install one (e.g. apt install g++, or set "
                f"CXX), or use {option}=fx, which runs int8 without compiling."
            ) from error
    if "x86" not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"{option}={backend} targets x86 int8 kernels, which this torch build lacks "
            f"(quantized engines: {torch.backends.quantized.supported_engines}). Run on an "
            f"x86-64 machine."
        )


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Silence the deprecation notes torch.ao's FX workflow and torch.export print at every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated")
        yield


# Activation observers of post-training quantization: how calibration picks each range.
OBSERVERS = ("histogram", "minmax")


def _ptq_quantizer(observer: str, dynamic: bool, reduce_range: bool, attention: bool) -> Any:
    """The x86 inductor quantizer for post-training int8: per-channel weights; activations static
    (ranges from calibration, by ``observer``) or ``dynamic`` (ranges at run time: linear layers
    only); with ``attention``, the matmuls of attention too (static only)."""
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer.utils import QuantizationConfig
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    config = get_default_x86_inductor_quantization_config(
        is_qat=False, is_dynamic=dynamic, reduce_range=reduce_range
    )
    if observer == "minmax" and not dynamic:  # torchao's default is the histogram observer
        activation = dataclasses.replace(
            config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12)
        )
        config = QuantizationConfig(activation, activation, config.weight, config.bias, False)
    return _with_attention(
        X86InductorQuantizer().set_global(config), config, attention and not dynamic
    )


def _with_attention(quantizer: Any, config: Any, attention: bool) -> Any:
    """``quantizer`` that also quantizes both inputs of every ``torch.matmul`` (attention's
    query x key and probabilities x value, which eager attention computes with it) when
    ``attention``."""
    return quantizer.set_function_type_qconfig(torch.matmul, config) if attention else quantizer


def quantizes_attention(net: nn.Module, attention: bool) -> bool:
    """Whether int8 of ``net`` quantizes its attention matmuls: asked for, and ``net`` has
    ``transformers`` attention modules (exported with eager attention so that they show)."""
    return attention and bool(attention_modules(net))


def export_float(net: nn.Module, inputs: Inputs, option: str, eager: bool = False) -> Any:
    """``torch.export`` of ``net`` in evaluation mode with a dynamic batch, on its device
    (``eager``: with ``transformers``' eager attention, whose matmuls int8 can quantize).

    Raises:
        ConfigError: the network cannot be captured; the message names ``option``.
    """
    device = next(net.parameters()).device
    example = InputSpec.of(inputs).example(TRACE_BATCH, device)
    net.eval()
    try:
        with quiet_deprecations(), eager_attention(net, eager):
            return torch.export.export(
                net, example, dynamic_shapes=InputSpec.of(inputs).dynamic_shapes(), strict=True
            )
    except Exception as error:
        raise ConfigError(
            f"torch.export cannot capture {type(net).__name__} for {option}: "
            f"{type(error).__name__}: {_first_lines(error)} Make that module export-friendly."
        ) from error


def quantize_post_training(
    net: nn.Module,
    inputs: Inputs,
    batches: Iterable[Examples],
    observer: str = "histogram",
    dynamic: bool = False,
    reduce_range: bool = False,
    attention: bool = False,
) -> tuple[nn.Module, int]:
    """Post-training int8 of the float ``net`` (torchao PT2E, x86 inductor quantizer).

    The network is exported in evaluation mode (BatchNorm is folded into the convolutions),
    observed on the calibration ``batches`` (each the network's inputs: images, or token ids and
    attention mask) and converted. ``attention``: a Transformer's attention matmuls are int8 too
    (:func:`quantizes_attention`). Returns the int8 model (on the CPU, as ``net``) and the number
    of examples it was calibrated on.
    """
    cache_pattern_graphs()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    attention = quantizes_attention(net, attention)
    exported = export_float(net, inputs, "compress=ptq", eager=attention)
    quantizer = _ptq_quantizer(observer, dynamic, reduce_range, attention)
    with quiet_deprecations():
        prepared = prepare_pt2e(exported.module(), quantizer)
    images = 0
    with torch.no_grad():
        for x in batches:
            prepared(*as_tuple(x))
            images += count_examples(x)
    with quiet_deprecations():
        converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    return converted, images


def _x86_quantizer(reduce_range: bool, is_qat: bool, attention: bool = False) -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    config = get_default_x86_inductor_quantization_config(is_qat=is_qat, reduce_range=reduce_range)
    return _with_attention(X86InductorQuantizer().set_global(config), config, attention)


def prepare(
    net: nn.Module,
    backend: str,
    inputs: Inputs,
    reduce_range: bool = False,
    attention: bool = False,
) -> FakeQuantNet:
    """Fake-quantize ``net`` for quantization-aware training with ``backend``, on its device.

    ``net`` itself may be changed (FX fuses modules in place): pass a copy to keep it.
    ``reduce_range`` (pt2e) quantizes activations to 7 bits, so that int8 kernels on CPUs without
    VNNI do not saturate their 16-bit intermediate sums. ``attention`` (pt2e): a Transformer's
    attention matmuls are fake-quantized too (:func:`quantizes_attention`).

    Raises:
        ConfigError: the network cannot be traced; the message names the failing op or module.
    """
    cache_pattern_graphs()
    device = next(net.parameters()).device
    example = InputSpec.of(inputs).example(TRACE_BATCH, device)
    net.train()
    name = type(net).__name__
    with quiet_deprecations():
        if backend == "pt2e":
            from torchao.quantization.pt2e import move_exported_model_to_train
            from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

            attention = quantizes_attention(net, attention)
            try:
                with eager_attention(net, attention):
                    exported = torch.export.export(
                        net,
                        example,
                        dynamic_shapes=InputSpec.of(inputs).dynamic_shapes(),
                        strict=True,
                    )
            except Exception as error:
                raise ConfigError(
                    f"torch.export cannot capture {name} for compress.qat.backend=pt2e: "
                    f"{type(error).__name__}: {_first_lines(error)} Make that module "
                    f"export-friendly, or try compress.qat.backend=fx."
                ) from error
            quantizer = _x86_quantizer(reduce_range, is_qat=True, attention=attention)
            graph = prepare_qat_pt2e(exported.module(), quantizer)
            move_exported_model_to_train(graph)
        else:
            from torch.ao.quantization import get_default_qat_qconfig_mapping
            from torch.ao.quantization.quantize_fx import prepare_qat_fx

            try:
                graph = prepare_qat_fx(net, get_default_qat_qconfig_mapping("x86"), example)
            except Exception as error:
                raise ConfigError(
                    f"torch.fx cannot trace {name} for compress.qat.backend=fx: "
                    f"{type(error).__name__}: {_first_lines(error)} Make that module traceable, "
                    f"or try compress.qat.backend=pt2e."
                ) from error
    return FakeQuantNet(graph, backend).to(device)


def _first_lines(error: Exception, lines: int = 6) -> str:
    text = "\n".join(str(error).strip().splitlines()[:lines])
    return text if text.endswith(".") else text + "."


def convert(fake_quant: FakeQuantNet) -> nn.Module:
    """The int8 model of a fake-quantized network on the CPU (``fake_quant`` is consumed)."""
    cache_pattern_graphs()
    fake_quant.eval()
    fake_quant.sync_mode()
    graph = fake_quant.graph
    with quiet_deprecations():
        if fake_quant.backend == "pt2e":
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

            converted = convert_pt2e(graph)
            _drop_unused_tensors(converted)
            return converted
        from torch.ao.quantization.quantize_fx import convert_fx

        return convert_fx(graph)


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete the fp32 weights that conversion replaced by int8 constants but left attached."""
    graph.graph.eliminate_dead_code()
    graph.recompile()
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph.named_parameters(), *graph.named_buffers()]:
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            delattr(graph.get_submodule(owner_name) if owner_name else graph, attr)
