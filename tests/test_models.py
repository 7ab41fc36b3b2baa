"""Tests for litcompress.models: shapes, param counts, config errors, weights, pruning graphs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn as nn
import torchvision

from litcompress.errors import ConfigError
from litcompress.models import (
    CifarResNet,
    SmallCNN,
    find_classifier,
    mobilenet_v2,
    torchvision_classifier,
    vit,
)

NUM_CLASSES = 10

# factory -> qualified name of its logits head
FACTORIES = {
    SmallCNN: "classifier",
    CifarResNet: "fc",
    mobilenet_v2: "classifier.1",
    vit: "heads.head",
}

# torchvision name -> qualified name of its logits head
TORCHVISION = {
    "resnet18": "fc",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_small": "classifier.3",
    "efficientnet_b0": "classifier.1",
    "densenet121": "classifier",
    "regnet_x_400mf": "fc",
    "convnext_tiny": "classifier.2",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # batch-2 CPU work gains nothing from threads, and OpenMP spin-waits ~100x slower on busy cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(factory, in_channels: int, image_size: int, **kwargs) -> nn.Module:
    # the way Hydra's partial is completed by the data module
    return factory(
        num_classes=NUM_CLASSES, in_channels=in_channels, image_size=image_size, **kwargs
    )


@pytest.mark.parametrize("in_channels,image_size", [(1, 8), (3, 32)])
@pytest.mark.parametrize("factory", list(FACTORIES), ids=lambda f: f.__name__)
def test_forward_shape_and_head(factory, in_channels: int, image_size: int) -> None:
    model = _build(factory, in_channels, image_size)
    logits = model(torch.randn(2, in_channels, image_size, image_size))  # train mode: BN on batch 2
    assert logits.shape == (2, NUM_CLASSES)
    logits.sum().backward()
    name, head = find_classifier(model)
    assert name == FACTORIES[factory]
    assert head is model.get_submodule(name) and head.out_features == NUM_CLASSES


@pytest.mark.parametrize("factory", [SmallCNN, CifarResNet], ids=lambda f: f.__name__)
def test_each_relu_module_used_once(factory) -> None:
    # PT2E QAT quantizers break on a ReLU module called twice
    model = _build(factory, 3, 32)
    calls: Counter[str] = Counter()
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda *_, name=name: calls.update([name]))
    model(torch.randn(2, 3, 32, 32))
    assert calls and set(calls.values()) == {1}


@pytest.mark.parametrize("depth,expected", [(20, 272_474), (56, 855_770)])
def test_cifar_resnet_param_count(depth: int, expected: int) -> None:
    # paper (option A): 0.27M / 0.85M; option B adds 2 projections (1x1 conv + BN) = 2,752 params
    n = sum(p.numel() for p in _build(CifarResNet, 3, 32, depth=depth).parameters())
    assert n == expected
    paper = {20: 0.27e6, 56: 0.85e6}[depth]
    assert abs(n - paper) / paper < 0.03


@pytest.mark.parametrize("depth", [2, 7, 18, 21])
def test_cifar_resnet_bad_depth(depth: int) -> None:
    with pytest.raises(ConfigError, match=rf"depth={depth}\b.*110"):
        _build(CifarResNet, 3, 32, depth=depth)


def test_vit_bad_patch_size() -> None:
    with pytest.raises(ConfigError, match=r"patch_size=5.*image_size=32"):
        _build(vit, 3, 32, patch_size=5)


def test_vit_bad_heads() -> None:
    with pytest.raises(ConfigError, match=r"heads=5.*dim=192"):
        _build(vit, 3, 32, heads=5, dim=192)


def test_torchvision_unknown_name() -> None:
    with pytest.raises(ConfigError, match=r"resnet19.*resnet18.*list_models"):
        _build(torchvision_classifier, 3, 32, name="resnet19")


def test_torchvision_missing_weights(tmp_path) -> None:
    missing = tmp_path / "missing.pth"
    with pytest.raises(ConfigError, match="missing.pth"):
        _build(torchvision_classifier, 3, 32, weights_path=str(missing))


def test_torchvision_weights_round_trip(tmp_path) -> None:
    saved = torchvision.models.resnet18(num_classes=1000).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    model = _build(torchvision_classifier, 3, 32, name="resnet18", weights_path=str(path))
    assert torch.equal(model.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])
    assert model.fc.out_features == NUM_CLASSES
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, NUM_CLASSES)
    # without the small-input stem rebuild the pretrained stem survives too
    model = _build(torchvision_classifier, 3, 224, name="resnet18", weights_path=str(path))
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    with pytest.raises(ConfigError, match="resnet34"):
        _build(torchvision_classifier, 3, 32, name="resnet34", weights_path=str(path))


def test_torchvision_small_input_stem() -> None:
    small = _build(torchvision_classifier, 1, 32, name="resnet18")
    assert small.conv1.in_channels == 1
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, nn.Identity)
    big = _build(torchvision_classifier, 3, 32, name="resnet18", small_input=False)
    assert big.conv1.stride == (2, 2) and isinstance(big.maxpool, nn.MaxPool2d)


@pytest.mark.parametrize("factory", [SmallCNN, CifarResNet, mobilenet_v2], ids=lambda f: f.__name__)
def test_cnn_prunes_with_head_kept(factory) -> None:
    import torch_pruning as tp

    model = _build(factory, 3, 32).eval()
    x = torch.randn(1, 3, 32, 32)
    before = sum(p.numel() for p in model.parameters())
    pruner = tp.pruner.MagnitudePruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[find_classifier(model)[1]],
    )
    pruner.step()
    assert sum(p.numel() for p in model.parameters()) < before / 2
    assert model(x).shape == (1, NUM_CLASSES)


@pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")  # convnext's layer_scale params
@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models(name: str) -> None:
    import torch_pruning as tp

    with torch.no_grad():
        for in_channels, image_size in [(3, 32), (1, 8)]:
            model = _build(torchvision_classifier, in_channels, image_size, name=name).eval()
            x = torch.randn(2, in_channels, image_size, image_size)
            assert model(x).shape == (2, NUM_CLASSES)
            head_name, head = find_classifier(model)
            assert head_name == TORCHVISION[name] and head.out_features == NUM_CLASSES
    model = _build(torchvision_classifier, 3, 32, name=name).eval()
    tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 32, 32))
