"""Dataset loaders: original formats, checksums, offline errors, verified and resumable downloads."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetless import data
from forgetless.data import base as dbase
from forgetless.errors import ChecksumError, ConfigError, DatasetNotFoundError

from formats import write_cifar10, write_cifar100, write_idx, write_idx_dataset, write_svhn

REAL_URLOPEN = urllib.request.urlopen


@pytest.fixture(autouse=True)
def _fresh_cache():
    data._load_cached.cache_clear()
    yield
    data._load_cached.cache_clear()


def _spec_for(directory: Path, names) -> tuple[data.RemoteFile, ...]:
    """RemoteFiles whose MD5s are those of the tiny files we wrote (the official ones cannot match)."""
    return tuple(data.RemoteFile(n, data.md5sum(directory / n), (f"http://127.0.0.1:9/{n}",)) for n in names)


def test_read_idx_roundtrip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "x.gz"), images)


def test_read_idx_rejects_bad_magic_and_size(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as fh:
        fh.write(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")  # float magic
    with pytest.raises(ChecksumError, match="magic"):
        data.read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ChecksumError, match="payload"):
        data.read_idx(tmp_path / "short.gz")
    with gzip.open(tmp_path / "long.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"abc")
    with pytest.raises(ChecksumError, match="payload"):
        data.read_idx(tmp_path / "long.gz")


@pytest.mark.parametrize("shape", [(50, 1, 7, 5), (33, 3, 4, 4)])
def test_channel_statistics_of_uint8_equal_the_float_computation(shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = x.double() / 255.0
    mean, std = dbase.channel_statistics(x, chunk=100)  # a small chunk: many chunks of 2 samples
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), reference.mean(dim=(0, 2, 3)),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), reference.std(dim=(0, 2, 3)),
                               rtol=1e-12, atol=0)
    # and what the dataset used to compute: float32, the same to float32 rounding
    old = x.float().div_(255.0)
    torch.testing.assert_close(torch.tensor(mean), old.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std), old.std(dim=(0, 2, 3)))
    assert (data.Dataset("r", x, torch.zeros(len(x)), x, torch.zeros(len(x)), ["0"]).mean) == mean


def test_dataset_statistics_leave_float_inputs_untouched():
    x = torch.full((4, 3), 51.0)
    ds = data.Dataset("f", x, torch.zeros(4), x, torch.zeros(4), ["0"])
    assert torch.equal(x, torch.full((4, 3), 51.0))  # they were divided by 255 in place
    assert ds.mean == pytest.approx((0.2, 0.2, 0.2))


@pytest.mark.parametrize("name,attr", [("mnist", "MNIST_FILES"), ("fashion-mnist", "FASHION_FILES"),
                                       ("kmnist", "KMNIST_FILES")])
def test_idx_datasets_load_from_original_format(tmp_path, monkeypatch, name, attr):
    write_idx_dataset(tmp_path / name)
    names = [f.name for f in getattr(data, attr)]
    monkeypatch.setattr(data, attr, _spec_for(tmp_path / name, names))
    ds = data.load(name, tmp_path)
    assert ds.train_x.shape == (40, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (20, 1, 28, 28)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist()[:3] == [0, 1, 2]
    assert len(ds.classes) == 10 and len(ds.mean) == 1


def test_cifar10_and_cifar100_archives(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    write_cifar100(tmp_path / "cifar100" / "cifar-100-python.tar.gz")
    monkeypatch.setattr(data, "CIFAR10_FILES", _spec_for(tmp_path / "cifar10", ["cifar-10-python.tar.gz"]))
    monkeypatch.setattr(data, "CIFAR100_FILES", _spec_for(tmp_path / "cifar100", ["cifar-100-python.tar.gz"]))
    c10 = data.load("cifar10", tmp_path)
    assert c10.train_x.shape == (100, 3, 32, 32) and c10.test_x.shape == (20, 3, 32, 32)
    assert c10.classes[0] == "c0" and c10.train_y.max() == 9
    c100 = data.load("cifar100", tmp_path)
    assert c100.train_x.shape == (200, 3, 32, 32) and c100.n_classes == 100 and c100.train_y.max() == 99


def test_svhn_mat_maps_label_10_to_zero(tmp_path, monkeypatch):
    write_svhn(tmp_path / "svhn" / "train_32x32.mat", n=30)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", n=10, seed=1)
    monkeypatch.setattr(data, "SVHN_FILES", _spec_for(tmp_path / "svhn", ["train_32x32.mat", "test_32x32.mat"]))
    ds = data.load("svhn", tmp_path)
    assert ds.train_x.shape == (30, 3, 32, 32)
    assert ds.train_y[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    # Pixel layout: X[h, w, c, n] -> x[n, c, h, w]
    import scipy.io

    raw = scipy.io.loadmat(tmp_path / "svhn" / "train_32x32.mat")["X"]
    assert int(ds.train_x[3, 2, 5, 7]) == int(raw[5, 7, 2, 3])


def test_corrupt_file_is_a_checksum_error(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(data, "CIFAR10_FILES", _spec_for(tmp_path / "cifar10", ["cifar-10-python.tar.gz"]))
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(ChecksumError, match="checksum mismatch") as err:
        data.load("cifar10", tmp_path)
    assert str(path) in str(err.value)


def test_official_checksums_enforced_on_a_truncated_real_file(tmp_path, mnist_root):
    shutil.copytree(mnist_root / "mnist", tmp_path / "mnist")
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz"):
        data.load("mnist", tmp_path, download=False)


def test_missing_files_offline_error_names_everything(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        data.load("kmnist", tmp_path)  # the network is disabled in tests: the download fails
    msg = str(err.value)
    for part in ("kmnist", str(tmp_path / "kmnist"), "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "FORGETLESS_DATA", "--data-dir"):
        assert part in msg
    assert "\n" not in msg


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="valid: cifar10, cifar100, digits"):
        data.load("imagenet")


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("FORGETLESS_DATA", str(tmp_path))
    assert data.resolve_root() == tmp_path
    assert data.resolve_root("/x") == Path("/x")
    monkeypatch.delenv("FORGETLESS_DATA")
    assert data.resolve_root() == dbase.DEFAULT_ROOT


def test_digits_need_no_files():
    ds = data.load("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.train_x.dtype == torch.uint8
    assert len(ds.train_x) + len(ds.test_x) == 1797
    assert set(ds.test_y.tolist()) == set(range(10))
    assert int(ds.train_x.max()) == 255


def test_real_mnist(mnist_root):
    ds = data.load("mnist", mnist_root, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.test_y).tolist()[:3] == [980, 1135, 1032]
    assert abs(ds.mean[0] - 0.1307) < 1e-3


# ------------------------------------------------------------------------------------- downloads

class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and honours 'Range: bytes=N-' (SimpleHTTPRequestHandler does not)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))  # before answering: no race
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        blob = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(blob) - start))
        self.end_headers()
        self.wfile.write(blob[start:])


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", REAL_URLOPEN)  # loopback only
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    httpd.shutdown()


def test_download_verifies_and_falls_back_to_a_mirror(tmp_path, server):
    served, url, _ = server
    (served / "blob.bin").write_bytes(b"x" * 5000)
    md5 = data.md5sum(served / "blob.bin")
    spec = (data.RemoteFile("blob.bin", md5, (f"{url}/missing/blob.bin", f"{url}/blob.bin")),)
    paths = dbase.ensure_files("toy", spec, tmp_path / "root")
    assert paths["blob.bin"].read_bytes() == b"x" * 5000
    assert not list((tmp_path / "root" / "toy").glob("*.part"))


def test_download_resumes_a_partial_file(tmp_path, server):
    served, url, requests = server
    blob = bytes(range(256)) * 40
    (served / "blob.bin").write_bytes(blob)
    spec = (data.RemoteFile("blob.bin", data.md5sum(served / "blob.bin"), (f"{url}/blob.bin",)),)
    target = tmp_path / "root" / "toy"
    target.mkdir(parents=True)
    (target / "blob.bin.part").write_bytes(blob[:3000])  # an interrupted earlier download
    dbase.ensure_files("toy", spec, tmp_path / "root")
    assert (target / "blob.bin").read_bytes() == blob
    assert requests[-1][1] == "bytes=3000-"


def test_downloaded_file_with_wrong_checksum_is_removed(tmp_path, server):
    served, url, _ = server
    (served / "blob.bin").write_bytes(b"tampered")
    spec = (data.RemoteFile("blob.bin", "0" * 32, (f"{url}/blob.bin",)),)
    with pytest.raises(DatasetNotFoundError, match="checksum mismatch"):
        dbase.ensure_files("toy", spec, tmp_path / "root")
    assert not (tmp_path / "root" / "toy" / "blob.bin").exists()
