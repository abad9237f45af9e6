"""torchvision-layout backbones: key layouts against torchvision's, weight files, a hand-computed ResNet-50,
backbone options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from forgetless.errors import ConfigError
from forgetless.nn import backbones, torchvision_layouts
from forgetless.nn.taskwise import TaskBatchNorm

REFERENCE = Path("/work/shared/reference/torchvision_state_dicts.json")
NAMES = ("resnet18", "resnet50", "densenet121")
CLASSIFIER = torchvision_layouts.CLASSIFIER_PREFIXES


def _create(name: str, side: int = 32, **opts) -> torch.nn.Module:
    if name == "resnet18" and "pretrained" not in opts:
        opts.setdefault("stem", "imagenet")
    return backbones.create(name, (3, side, side), **opts)


def _reference(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not present")
    return [(k, tuple(s), d) for k, s, d in json.loads(REFERENCE.read_text())[name] if not k.startswith(CLASSIFIER)]


def _layout(entries) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(s), str(d).removeprefix("torch.")) for k, s, d in entries]


def _random_state(net: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The network's state with random weights and batch-norm statistics, plus a fake 1000-way ``fc``."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in net.state_dict().items():
        if v.dtype == torch.int64:
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * (0.1 if v.dim() > 1 else 0.5)
    return state


def _save(tmp_path: Path, net: torch.nn.Module, name: str = "w.pth") -> tuple[Path, dict[str, torch.Tensor]]:
    state = _random_state(net)
    file = {**state, "fc.weight": torch.randn(1000, net.out_features), "fc.bias": torch.zeros(1000)}
    torch.save(file, tmp_path / name)
    return tmp_path / name, state


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_is_torchvisions(name):
    net = _create(name)
    assert _layout((k, v.shape, v.dtype) for k, v in net.state_dict().items()) == _reference(name)
    assert net.out_features == {"resnet18": 512, "resnet50": 2048, "densenet121": 1024}[name]
    assert net.normalize == (torchvision_layouts.IMAGENET_MEAN, torchvision_layouts.IMAGENET_STD)
    assert net.input_size == 224


def test_task_batch_norm_reads_the_same_layout():
    net = _create("resnet18", task_bn=3)
    assert sum(isinstance(m, TaskBatchNorm) for m in net.modules()) == 20
    assert _layout(torchvision_layouts.plain_state_layout(net)) == _reference("resnet18")


@pytest.mark.parametrize("name", NAMES)
def test_torchvision_file_loads(tmp_path, name):
    path, state = _save(tmp_path, _create(name))
    net = _create(name, pretrained=str(path)).eval()
    loaded = net.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, net.out_features)


def test_pretrained_batch_norm_fills_every_task_slot(tmp_path):
    path, state = _save(tmp_path, _create("resnet18"))
    net = _create("resnet18", pretrained=str(path), task_bn=3)
    for slot in range(3):
        bn = net.layer2[0].downsample[1].slot(slot)
        assert torch.equal(bn.weight, state["layer2.0.downsample.1.weight"])
        assert torch.equal(bn.running_var, state["layer2.0.downsample.1.running_var"])
    plain = _create("resnet18", pretrained=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net.eval()(x), plain(x), atol=1e-6)


def test_bad_weight_files_are_one_line_errors(tmp_path):
    net = _create("resnet18")
    _, state = _save(tmp_path, net)

    def error(file_state) -> str:
        torch.save(file_state, tmp_path / "bad.pth")
        with pytest.raises(ConfigError) as info:
            _create("resnet18", pretrained=str(tmp_path / "bad.pth"))
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "missing key 'layer3.1.bn2.running_mean'" in error({k: v for k, v in state.items()
                                                                 if k != "layer3.1.bn2.running_mean"})
    assert "unexpected key 'layer5.weight'" in error({**state, "layer5.weight": torch.zeros(1)})
    assert "mis-shaped key 'layer1.0.conv1.weight' (shape (64, 64, 1, 1)" in error(
        {**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)})
    assert "is not a state dict" in error([torch.zeros(1)])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="is not a torch state-dict file"):
        _create("resnet18", pretrained=str(tmp_path / "text.pth"))
    with pytest.raises(ConfigError, match="not found"):
        _create("resnet18", pretrained=str(tmp_path / "absent.pth"))
    # the small-image stem cannot take torchvision's weights
    with pytest.raises(ConfigError, match="stem=imagenet"):
        backbones.create("resnet18", (3, 32, 32), stem="cifar", pretrained=str(tmp_path / "bad.pth"))


def _bn(x: torch.Tensor, s: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        training=False, eps=1e-5)


def _bottleneck(x: torch.Tensor, s: dict[str, torch.Tensor], p: str, stride: int) -> torch.Tensor:
    out = F.relu(_bn(F.conv2d(x, s[f"{p}.conv1.weight"]), s, f"{p}.bn1"))
    out = F.relu(_bn(F.conv2d(out, s[f"{p}.conv2.weight"], stride=stride, padding=1), s, f"{p}.bn2"))
    out = _bn(F.conv2d(out, s[f"{p}.conv3.weight"]), s, f"{p}.bn3")
    identity = x
    if f"{p}.downsample.0.weight" in s:
        identity = _bn(F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride), s, f"{p}.downsample.1")
    return F.relu(out + identity)


def test_resnet50_features_match_a_hand_computation(tmp_path):
    path, s = _save(tmp_path, _create("resnet50"))
    net = _create("resnet50", pretrained=str(path)).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stem = F.max_pool2d(F.relu(_bn(F.conv2d(x, s["conv1.weight"], stride=2, padding=3), s, "bn1")), 3, 2, 1)
        assert torch.allclose(net.maxpool(net.relu(net.bn1(net.conv1(x)))), stem, atol=1e-5)
        block = _bottleneck(stem, s, "layer1.0", 1)
        assert torch.allclose(net.layer1[0](stem), block, atol=1e-5)
        h = stem
        for i, n in enumerate((3, 4, 6, 3)):
            for j in range(n):
                h = _bottleneck(h, s, f"layer{i + 1}.{j}", 2 if i > 0 and j == 0 else 1)
        features = net(x)
    assert features.shape == (2, 2048)
    assert torch.allclose(features, h.mean(dim=(2, 3)), rtol=1e-4, atol=1e-4)


def test_resnet18_stem_follows_the_input_size():
    assert isinstance(backbones.create("resnet18", (3, 32, 32)), backbones.ResNet)  # CIFAR network unchanged
    assert "stages.0.0.conv1.weight" in backbones.create("resnet18", (3, 32, 32)).state_dict()
    assert isinstance(backbones.create("resnet18", (3, 128, 128)), torchvision_layouts.TorchvisionResNet)
    with pytest.raises(ConfigError, match="unknown resnet stem 'big'; valid: cifar, imagenet"):
        backbones.create("resnet18", (3, 32, 32), stem="big")


def test_unknown_backbone_options_are_errors():
    with pytest.raises(ConfigError, match="unknown option 'pretrained' for backbone 'mlp'; valid: hidden, task_bn, "
                                          "activation"):
        backbones.create("mlp", (1, 8, 8), pretrained="x.pth")
    with pytest.raises(ConfigError, match="unknown option 'hidden' for backbone 'densenet121'; valid: task_bn, "
                                          "pretrained"):
        backbones.create("densenet121", (3, 32, 32), hidden=(4,))
    assert backbones.options("resnet18") == ("width", "task_bn", "stem", "pretrained")
