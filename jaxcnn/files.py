"""Files written whole or not at all, and folders a failed attempt does not leave behind.

Every file a run, a report or a figure leaves (``config.json``, ``metrics.jsonl``,
``results.json``, ``report.html``, PNGs) goes through :func:`write_atomic`, so a crash
or a full disk never leaves a half-written one, and readers never see a partial file.
A training run or a download that fails removes the folders it made, from
:func:`outermost_missing_folder` down.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` through a rename; returns the path.

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask),
    not the ``0o600`` of ``tempfile.mkstemp``: a workdir is often read by other users
    or hosts.

    Examples:
        >>> import tempfile
        >>> write_atomic(Path(tempfile.mkdtemp()) / "a.txt", "hi").read_text()
        'hi'
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def outermost_missing_folder(path: str | os.PathLike) -> Path | None:
    """The first folder that ``Path(path).mkdir(parents=True)`` would create, or ``None``.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> outermost_missing_folder(root / "runs" / "a") == root / "runs"
        True
        >>> outermost_missing_folder(root) is None
        True
    """
    path = Path(path).absolute()
    return next((p for p in (*reversed(path.parents), path) if not p.exists()), None)
