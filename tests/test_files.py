"""jaxcnn.files.write_atomic: whole files with a plain open()'s mode, or nothing."""

from __future__ import annotations

import os

import pytest

from jaxcnn.files import write_atomic


def test_text_and_bytes_land_whole_with_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        text = write_atomic(tmp_path / "deep" / "config.json", "{}\n")
        data = write_atomic(tmp_path / "figure.png", b"\x89PNG")
    finally:
        os.umask(umask)
    assert text.read_text() == "{}\n" and data.read_bytes() == b"\x89PNG"
    # Not mkstemp's 0600: other users and hosts read a workdir.
    assert text.stat().st_mode & 0o777 == data.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "results.json", "old")
    with pytest.raises(TypeError):
        write_atomic(path, 12345)  # neither text nor bytes: fails mid-write
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
