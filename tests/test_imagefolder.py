"""Image folders (decoding, resize rule, cache, corrupt files) and the ImageNet-to-Sketch configs run end to
end on a tiny generated folder chain with a torchvision-format resnet18 file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetless import benchmarks, data
from forgetless.data import imagefolder
from forgetless.errors import ConfigError, CorruptImageError
from forgetless.nn import backbones

Image = pytest.importorskip("PIL.Image")
pytestmark = pytest.mark.usefixtures("one_thread")


def _make_folder(root: Path, classes: int = 2, per_class: int = 8, test: bool = True, seed: int = 0) -> Path:
    """``root/train/<c>/*`` (+ ``root/test/<c>/*``): random PNG and JPEG images of assorted sizes, class c
    brighter than class c-1 so the classes are learnable."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", per_class // 2)) if test else (("train", per_class),):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                h, w = (32, 40) if i % 2 else (36, 32)
                pixels = rng.integers(0, 100, (h, w, 3)) + 70 * c
                suffix = ".png" if i % 3 else ".jpg"
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(d / f"{i}{suffix}")
    return root


def test_folder_is_decoded_resized_and_cached(tmp_path, monkeypatch):
    root = _make_folder(tmp_path / "birds")
    ds = data.load_folder(root, size=16, cache_root=tmp_path / "cache")
    assert ds.name == "birds" and ds.classes == ["class0", "class1"]
    assert ds.train_x.shape == (16, 3, 16, 16) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (8, 3, 16, 16) and ds.train_y.tolist() == [0] * 8 + [1] * 8
    cached = list((tmp_path / "cache" / "cache" / "imagefolder").glob("birds-*.pt"))
    assert len(cached) == 1
    assert set(torch.load(cached[0], weights_only=True)) == {"train_x", "train_y", "test_x", "test_y", "bad"}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "_decode_all", no_decoding)
    again = data.load_folder(root, size=16, cache_root=tmp_path / "cache")
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)
    touched = root / "train" / "class0" / "1.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):  # a changed file list is a new cache key
        data.load_folder(root, size=16, cache_root=tmp_path / "cache")


def test_resize_rule_is_shorter_side_then_centre_crop(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # a white centre band of half the width: the centre crop of a 2:1 image
    Image.fromarray(image).save(tmp_path / "wide.png")
    out = imagefolder.decode_image(tmp_path / "wide.png", 10)
    assert out.shape == (10, 10, 3)
    assert out[:, 1:-1].min() == 255  # the crop is the white band (edges blur by one pixel)


def test_folder_without_test_split_is_stratified(tmp_path):
    root = _make_folder(tmp_path / "art", classes=3, per_class=10, test=False)
    ds = data.load_folder(root, size=8, cache_root=tmp_path, test_fraction=0.2)
    assert ds.test_y.bincount().tolist() == [2, 2, 2] and ds.train_y.bincount().tolist() == [8, 8, 8]


def test_corrupt_image_is_named_or_skipped(tmp_path):
    root = _make_folder(tmp_path / "cars")
    bad = root / "train" / "class1" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(CorruptImageError, match=r"broken\.jpg: cannot decode image") as info:
        data.load_folder(root, size=8, cache_root=tmp_path)
    assert "\n" not in str(info.value) and "skip_bad_images=true" in str(info.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.load_folder(root, size=8, cache_root=tmp_path, skip_bad_images=True)
    assert len(ds.train_y) == 16
    assert any("skipped 1 image file" in str(w.message) for w in caught)


def test_domain_chain_reads_folders(tmp_path):
    a = _make_folder(tmp_path / "a")
    _make_folder(tmp_path / "b", classes=3, seed=1)  # read as <data root>/b
    chain = benchmarks.build("domain-chain", "task", seed=0, data_root=str(tmp_path), datasets=f"folder:{a},b",
                             size=16, mean_std="imagenet", val_fraction=0.0)
    assert [t.name for t in chain.tasks] == ["a", "b"] and chain.input_shape == (3, 16, 16)
    assert chain.n_outputs == 5
    x = chain.tasks[0].test.inputs()
    raw = chain.tasks[0].test.x.float() / 255
    assert torch.allclose(x[:, 0], (raw[:, 0] - 0.485) / 0.229, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown dataset 'nowhere'"):
        benchmarks.build("domain-chain", "task", seed=0, data_root=str(tmp_path), datasets="nowhere")


def test_mancini_config_runs_end_to_end_with_a_pretrained_file(tmp_path):
    from forgetless.reproduce import reproduce

    folders = [_make_folder(tmp_path / name, classes=2 + (i == 1), seed=i)
               for i, name in enumerate(("imagenet", "cubs", "sketch"))]
    net = backbones.create("resnet18", (3, 32, 32), stem="imagenet")
    state = {**net.state_dict(), "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "resnet18.pth")
    tiny = {"backbone": "resnet18", "pretrained": str(tmp_path / "resnet18.pth"), "iterations": 2,
            "pretrain_iterations": 1, "batch_size": 8, "pretrain_batch_size": 8}
    result = reproduce("mancini2018-table1-resnet50", out=tmp_path / "runs", only="Piggyback with BN",
                       overrides=tiny, bench_overrides={"datasets": [f"folder:{f}" for f in folders], "size": 32},
                       data_root=str(tmp_path))
    row = next(r for r in result["rows"] if r["metric"] == "T2")
    assert row["ours"] is not None and 0 <= row["ours"][0] <= 100
    storage = next(r for r in result["rows"] if r["metric"] == "storage.params_ratio")
    assert storage["ours"][0] > 1


def test_a_pretrained_backbone_is_not_retrained_on_task_1(tmp_path):
    """With a weight file, task 1 learns only its classifier: the backbone (and its batch-norm statistics)
    stays the loaded network."""
    from forgetless import benchmarks, methods, runner

    folders = [_make_folder(tmp_path / name, classes=2, seed=i) for i, name in enumerate(("imagenet", "cubs"))]
    net = backbones.create("resnet18", (3, 32, 32), stem="imagenet")
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    bench = benchmarks.build("domain-chain", "task", 0, str(tmp_path), datasets=[f"folder:{f}" for f in folders],
                             size=32)
    method = methods.create("classifier-only", bench.info(), backbone="resnet18",
                            pretrained=str(tmp_path / "resnet18.pth"), pretrain_iterations=3, iterations=2,
                            batch_size=4, pretrain_batch_size=4, norm=False)
    loaded = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    head = method.heads.heads[0].weight.detach().clone()
    runner.run(method, bench, scenario="task", quiet=True)
    after = method.backbone.state_dict()
    assert all(torch.equal(loaded[k], after[k]) for k in loaded)
    assert not torch.equal(head, method.heads.heads[0].weight)
