"""Cache files are published whole by ``write_atomically``, also when writers of the same file interleave."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustser.paths import write_atomically


def test_interleaved_writers_of_one_file_both_succeed_and_leave_one_whole_file(tmp_path):
    target = tmp_path / "cache" / "entry.bin"

    def outer(tmp: str) -> None:
        Path(tmp).write_bytes(b"A" * 1000)
        # a second process publishes the same file while this one is between writing and publishing
        write_atomically(target, lambda inner: Path(inner).write_bytes(b"B" * 1000))

    write_atomically(target, outer)
    assert target.read_bytes() in (b"A" * 1000, b"B" * 1000)
    assert [p.name for p in target.parent.iterdir()] == ["entry.bin"]  # no temporary leftovers


def test_a_writer_that_fails_leaves_neither_the_target_nor_a_temporary_file(tmp_path):
    target = tmp_path / "entry.bin"

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert list(tmp_path.iterdir()) == []


def test_a_published_file_has_the_usual_permissions_not_the_temporary_files_owner_only_ones(tmp_path):
    import os

    target = tmp_path / "entry.bin"
    old = os.umask(0o022)
    try:
        write_atomically(target, lambda tmp: Path(tmp).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644  # mkstemp alone would leave 0o600
