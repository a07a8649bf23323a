"""Reading whole small files on local disk: a file shorter than its size a moment ago is an
error naming it, never a silently shorter document."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckpt_audit.errors import FormatError
from ckpt_audit.storage import local


def test_a_file_that_shrank_since_its_size_was_taken_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b'{"weight_map": {}}')
    fd = os.open(path, os.O_RDONLY)
    try:  # as if fstat had seen 40 bytes and a writer truncated the file before the read
        with pytest.raises(FormatError, match="shrank while being read") as exc:
            local._read_all(fd, 40, str(path))
    finally:
        os.close(fd)
    assert str(path) in str(exc.value)


def test_a_whole_file_and_the_first_bytes_of_one_are_read_exactly(tmp_path: Path) -> None:
    path = tmp_path / "latest"
    path.write_bytes(b"x" * 3000)
    assert local.read_local(str(path), 256) == b"x" * 256
    assert local.read_local(str(path), 10_000) == b"x" * 3000
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert local.read_local(str(empty), 256) == b""
