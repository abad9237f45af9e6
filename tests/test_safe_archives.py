"""The CIFAR archive reader unpickles only what the official batches contain and refuses links and paths
that leave the archive's folder (crafted archives, generated here in the official layout)."""

from __future__ import annotations

import io
import pickle
import re
import tarfile

import numpy as np
import pytest

from forgetless.data.cifar import read_cifar_archive
from forgetless.errors import ChecksumError

from formats import write_cifar10

BASE = "cifar-10-batches-py/"
TRAIN = [f"{BASE}data_batch_{i}" for i in range(1, 6)]


def _read(path):
    return read_cifar_archive(path, TRAIN, [f"{BASE}test_batch"], b"labels", f"{BASE}batches.meta", b"label_names")


class _SideEffect:
    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _batch(n: int = 4) -> dict:
    return {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))}


def _archive(path, replace: dict[str, object] | None = None, extra: list[tarfile.TarInfo] | None = None) -> None:
    """The official layout; ``replace`` swaps a member's object (pickled as given), ``extra`` adds members."""
    members = {**{m: _batch() for m in [*TRAIN, f"{BASE}test_batch"]},
               f"{BASE}batches.meta": {b"label_names": [f"c{i}".encode() for i in range(10)]}, **(replace or {})}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)


def test_the_official_layout_still_reads(tmp_path):
    write_cifar10(tmp_path / "c.tar.gz")  # what the other loader tests use (numpy's own pickles)
    _archive(tmp_path / "ours.tar.gz")
    for name in ("c.tar.gz", "ours.tar.gz"):
        train_x, train_y, test_x, _, classes = _read(tmp_path / name)
        assert train_x.shape[1:] == (3, 32, 32) and len(train_y) == len(train_x) and classes[0] == "c0"
        assert len(test_x) > 0


def test_a_batch_that_would_run_code_is_refused_naming_file_and_member(tmp_path):
    side = tmp_path / "side-effect"
    _archive(tmp_path / "evil.tar.gz", replace={f"{BASE}data_batch_3": {b"data": _SideEffect(side), b"labels": []}})
    with pytest.raises(ChecksumError) as err:
        _read(tmp_path / "evil.tar.gz")
    message = str(err.value)
    assert "\n" not in message and "evil.tar.gz" in message and "data_batch_3" in message
    assert re.search(r"refuses to load '(io|builtins)\.open'", message)
    assert not side.exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("member, why", [
    (_member("../evil"), "outside"),
    (_member("/tmp/evil"), "outside"),
    (_member(f"{BASE}../../evil"), "outside"),
    (_member(f"{BASE}link", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
    (_member(f"{BASE}hard", tarfile.LNKTYPE, f"{BASE}test_batch"), "a link"),
    (_member(f"{BASE}fifo", tarfile.FIFOTYPE), "not a file"),
])
def test_links_and_paths_leaving_the_folder_are_refused(tmp_path, member, why):
    _archive(tmp_path / "bad.tar.gz", extra=[member])
    with pytest.raises(ChecksumError, match=why) as err:
        _read(tmp_path / "bad.tar.gz")
    assert "bad.tar.gz" in str(err.value) and repr(member.name) in str(err.value)


def test_a_wanted_batch_that_is_a_symlink_is_refused(tmp_path):
    # a batch member replaced by a link to another member: extractfile would follow it
    path = tmp_path / "link.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_member(f"{BASE}data_batch_1", tarfile.SYMTYPE, f"{BASE}test_batch"))
    with pytest.raises(ChecksumError, match="a link"):
        _read(path)
