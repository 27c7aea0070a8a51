"""Atomic writes: the result appears only on success; leftovers of a killed writer go. File
digests."""

from __future__ import annotations

import hashlib

import pytest

from recur.io import atomic_path, sha256, write_text_atomic


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "out" / "x.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(".x.")
        assert tmp.name.endswith(".part.nii.gz")
        tmp.write_bytes(b"ok")
    assert target.read_bytes() == b"ok"

    def fail() -> None:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert target.read_bytes() == b"ok"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.nii.gz"]


def test_leftover_of_a_killed_writer_is_removed_by_the_next_one(tmp_path):
    # a writer killed with SIGKILL leaves its temporary file behind
    stale = tmp_path / ".P0009.gumkg_qt.part.npz"
    stale.write_bytes(b"half")
    other = tmp_path / ".P0010.abc.part.npz"  # another target's temporary file: kept
    other.write_bytes(b"busy")
    write_text_atomic(tmp_path / "P0009.npz", "done")
    assert not stale.exists()
    assert other.exists()
    assert (tmp_path / "P0009.npz").read_text() == "done"


def test_sha256_of_known_bytes(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = tmp_path / "big"  # more than one 1 MiB block
    big.write_bytes(b"x" * ((1 << 20) + 3))
    assert sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
