"""Benchmarks and scenarios: labels, splits, permutations, transforms, options and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forgetless import benchmarks, data
from forgetless.benchmarks.base import Split, union
from forgetless.benchmarks.transforms import Compose, PermutePixels, RandomAffine, RandomCropFlip, ToFloat
from forgetless.errors import ConfigError

from conftest import synthetic_benchmark
from formats import write_cifar10, write_cifar100


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_split_digits_labels_follow_the_scenario(scenario):
    bench = benchmarks.build("split-digits", scenario, seed=0)
    assert len(bench) == 5
    for t, task in enumerate(bench):
        assert task.classes == [2 * t, 2 * t + 1]
        expected = [0, 1] if scenario == "domain" else [2 * t, 2 * t + 1]
        assert task.labels == expected
        assert set(task.train.y.tolist()) == set(expected) == set(task.test.y.tolist())
    assert bench.n_outputs == (2 if scenario == "domain" else 10)
    info = bench.info()
    if scenario == "task":
        assert info.active_labels(3) == [6, 7]
    elif scenario == "class":
        assert info.active_labels(2) == [0, 1, 2, 3, 4, 5]
    else:
        assert info.active_labels(4) == [0, 1]


def test_class_order_and_classes_per_task():
    bench = benchmarks.build("split-digits", "class", 0, class_order="9,8,7,6,5,4,3,2,1,0", classes_per_task=5)
    assert [t.classes for t in bench] == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]
    # labels are numbered in arrival order: class 9 is label 0, class 5 label 4
    digits = data.load("digits")
    task0 = bench.tasks[0]
    assert task0.labels == [0, 1, 2, 3, 4]
    assert int((task0.test.y == 0).sum()) == int((digits.test_y == 9).sum())
    assert int((task0.test.y == 4).sum()) == int((digits.test_y == 5).sum())
    one = benchmarks.build("split-digits", "class", 0, classes_per_task=1)
    assert len(one) == 10 and one.tasks[7].labels == [7]
    r1 = benchmarks.build("split-digits", "class", 1, class_order="random")
    r2 = benchmarks.build("split-digits", "class", 1, class_order="random")
    r3 = benchmarks.build("split-digits", "class", 2, class_order="random")
    assert [t.classes for t in r1] == [t.classes for t in r2] != [t.classes for t in r3]
    assert sorted(c for t in r1 for c in t.classes) == list(range(10))
    assert len(benchmarks.build("split-digits", "class", 0, n_tasks=3)) == 3


def test_vandeven_class_order_is_van_de_ven_and_tolias_pairing():
    # their data.py: np.random.seed(seed); p = np.random.permutation(list(range(10))); digit y gets label p[y];
    # task k holds labels 2k, 2k+1 and, in domain-IL, digit y is answered with p[y] - 2k
    np.random.seed(5)
    p = np.random.permutation(list(range(10)))
    bench = benchmarks.build("split-digits", "domain", 5, class_order="vandeven")
    assert [t.classes for t in bench] == [[6, 5], [2, 9], [3, 1], [8, 4], [7, 0]]
    for k, task in enumerate(bench):
        assert sorted(task.classes) == sorted(y for y in range(10) if p[y] // 2 == k)
        assert [int(p[y]) - 2 * k for y in task.classes] == task.labels == [0, 1]
    zero = benchmarks.build("split-digits", "domain", 0, class_order="vandeven")  # their seed-0 exception
    assert [t.classes for t in zero] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_validation_split_is_held_out_and_stratified():
    bench = benchmarks.build("split-digits", "class", 0, val_fraction=0.25)
    ds = data.load("digits")
    for task in bench:
        assert len(task.val) > 0
        assert set(task.val.y.tolist()) == set(task.labels)
        ratio = len(task.val) / (len(task.val) + len(task.train))
        assert abs(ratio - 0.25) < 0.02
        # no image is both in train and val (rows of the original training set)
        train_rows = {tuple(r.tolist()) for r in task.train.x.flatten(1)}
        assert not any(tuple(r.tolist()) in train_rows for r in task.val.x.flatten(1)[:20])
    assert sum(len(t.train) + len(t.val) for t in bench) == len(ds.train_x)
    none = benchmarks.build("split-digits", "class", 0, val_fraction=0)
    assert all(len(t.val) == 0 for t in none)


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown --bench key 'colors' for split-digits; valid: augment"):
        benchmarks.build("split-digits", "class", 0, colors=3)
    with pytest.raises(ConfigError, match="cannot be split into tasks of 3"):
        benchmarks.build("split-digits", "class", 0, classes_per_task=3)
    with pytest.raises(ConfigError, match="class_order"):
        benchmarks.build("split-digits", "class", 0, class_order="1,1,2")
    with pytest.raises(ConfigError, match="valid: class, domain, task"):
        benchmarks.build("split-digits", "incremental", 0)
    with pytest.raises(ConfigError, match="is not a valid int"):
        benchmarks.build("split-digits", "class", 0, classes_per_task="two")
    with pytest.raises(ConfigError, match="domain scenario needs the same number"):
        benchmarks.assign_labels([[0, 1], [2, 3, 4]], "domain")


def test_permuted_mnist(mnist_root):
    bench = benchmarks.build("permuted-mnist", "task", 0, mnist_root, n_tasks=3, train_per_class=20,
                             test_per_class=10)
    assert bench.input_shape == (1, 32, 32)
    assert [t.labels[0] for t in bench] == [0, 10, 20] and bench.n_outputs == 30
    x0 = bench.tasks[0].test.inputs(slice(0, 5))
    x1 = bench.tasks[1].test.inputs(slice(0, 5))
    raw = torch.nn.functional.pad(bench.tasks[0].test.x[:5].float() / 255, (2, 2, 2, 2))
    assert torch.equal(x0, raw)  # task 1 is unpermuted, padded to 32x32, pixels in [0, 1]
    assert not torch.equal(x0, x1)
    assert torch.equal(x0.flatten().sort().values, x1.flatten().sort().values)  # same pixels, new places
    domain = benchmarks.build("permuted-mnist", "domain", 0, mnist_root, n_tasks=2, train_per_class=5)
    assert domain.n_outputs == 10 and domain.tasks[1].labels == list(range(10))


def test_split_mnist_real_data(mnist_root):
    bench = benchmarks.build("split-mnist", "class", 0, mnist_root)
    assert [t.classes for t in bench] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert len(bench.tasks[0].test) == 980 + 1135
    assert sum(len(t.train) + len(t.val) for t in bench) == 60000


def test_cifar10_100_from_tiny_archives(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz", per_batch=20)
    write_cifar100(tmp_path / "cifar100" / "cifar-100-python.tar.gz", n_train=300, n_test=100)
    for attr, sub, name in (("CIFAR10_FILES", "cifar10", "cifar-10-python.tar.gz"),
                            ("CIFAR100_FILES", "cifar100", "cifar-100-python.tar.gz")):
        path = tmp_path / sub / name
        monkeypatch.setattr(data, attr, (data.RemoteFile(name, data.md5sum(path), ()),))
    data._load_cached.cache_clear()
    bench = benchmarks.build("cifar10-100", "class", 0, tmp_path, val_fraction=0)
    assert len(bench) == 6
    assert bench.tasks[0].classes == list(range(10)) and bench.tasks[1].classes == list(range(10, 20))
    assert bench.tasks[5].labels == list(range(50, 60)) and bench.n_outputs == 60
    x, _ = next(bench.tasks[1].train.batches(8, train=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    data._load_cached.cache_clear()


def test_random_crop_flip_is_batchwise_and_seeded():
    x = torch.arange(4 * 3 * 6 * 6, dtype=torch.float32).view(4, 3, 6, 6)
    aug = RandomCropFlip(pad=2, flip=True)
    assert torch.equal(aug(x, train=False), x)
    a = aug(x, True, torch.Generator().manual_seed(3))
    b = aug(x, True, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    # every output pixel is either padding (0) or a pixel of the same image and channel
    for n in range(4):
        for c in range(3):
            assert set(a[n, c].flatten().tolist()) <= set(x[n, c].flatten().tolist()) | {0.0}
    flip_only = RandomCropFlip(pad=0, flip=True)(x, True, torch.Generator().manual_seed(0))
    for n in range(4):
        assert torch.equal(flip_only[n], x[n]) or torch.equal(flip_only[n], x[n].flip(2))


def test_random_affine_moves_each_image_within_its_bounds_and_keeps_the_background():
    x = torch.full((64, 1, 15, 15), -1.0)
    x[:, :, 7, 7] = 1.0  # one bright pixel at the centre, which rotation about the centre does not move
    shifted = RandomAffine(shift=2, degrees=0, fill=-1.0)(x, True, torch.Generator().manual_seed(0))
    assert torch.equal(RandomAffine(2, 10, -1.0)(x, train=False), x)
    assert torch.equal(shifted, RandomAffine(2, 0, -1.0)(x, True, torch.Generator().manual_seed(0)))  # seeded
    assert torch.allclose(RandomAffine(2, 10, -1.0)(torch.full_like(x, -1.0), True), torch.full_like(x, -1.0))
    mass = (shifted + 1).flatten(1)
    assert torch.allclose(mass.sum(1), torch.full((64,), 2.0), atol=1e-4)  # bilinear moves, never loses, the dot
    grid = torch.arange(15.0)
    cy = ((shifted + 1).sum(3).squeeze(1) * grid).sum(1) / 2 - 7
    cx = ((shifted + 1).sum(2).squeeze(1) * grid).sum(1) / 2 - 7
    assert cy.abs().max() <= 2 + 1e-4 and cx.abs().max() <= 2 + 1e-4
    assert len({round(float(v), 3) for v in cx}) > 32  # a shift of its own per image
    turned = RandomAffine(shift=0, degrees=30, fill=-1.0)(x, True, torch.Generator().manual_seed(1))
    assert torch.allclose(turned[:, :, 7, 7], torch.ones(64, 1), atol=1e-5)


def test_pixel_permutation_and_normalisation():
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    out = Compose(ToFloat((0.5,), (0.25,)), PermutePixels(perm))(x)
    expected = ((x.float() / 255 - 0.5) / 0.25).flatten(2)[:, :, perm].view(2, 1, 4, 4)
    assert torch.allclose(out, expected)


def test_union_keeps_each_samples_own_transform():
    a = Split(torch.full((3, 1, 2, 2), 10, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), Compose(ToFloat()))
    b = Split(torch.full((2, 1, 2, 2), 10, dtype=torch.uint8), torch.ones(2, dtype=torch.long),
              Compose(ToFloat((0.0,), (0.5,))))
    u = union([a, b])
    x = u.inputs()
    assert len(u) == 5 and torch.allclose(x[:3], torch.full((3, 1, 2, 2), 10 / 255))
    assert torch.allclose(x[3:], torch.full((2, 1, 2, 2), 20 / 255))
    sub = u.subset(torch.tensor([4, 0]))
    assert sorted(sub.y.tolist()) == [0, 1]


def test_from_tensors_builds_tasks_from_user_data():
    bench = synthetic_benchmark("task", n_tasks=3, classes_per_task=2, per_class=30)
    assert len(bench) == 3 and bench.n_outputs == 6
    assert all(len(t.test) > 0 and len(t.val) > 0 for t in bench)
    feats = benchmarks.from_tensors(torch.randn(100, 5), torch.arange(100) % 4, classes_per_task=2)
    assert feats.input_shape == (5,) and feats.default_backbone == "mlp"
    with pytest.raises(ConfigError, match="x has 10 samples but y has 9"):
        benchmarks.from_tensors(torch.zeros(10, 3), torch.zeros(9))


def test_from_dataset_accepts_indexable_pairs():
    pairs = [(torch.randn(3), i % 4) for i in range(80)]
    bench = benchmarks.from_dataset(pairs, classes_per_task=2, scenario="domain")
    assert len(bench) == 2 and bench.n_outputs == 2
