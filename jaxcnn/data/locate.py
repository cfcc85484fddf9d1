"""Where dataset files are looked for, and fetching the official ones.

Lookup order (first hit wins): the ``data_dir`` argument, then the
``JAXCNN_DATA_DIR`` environment variable, then the cache directory
(``$XDG_CACHE_HOME/jaxcnn``, default ``~/.cache/jaxcnn``). Inside each root a
file ``F`` of dataset ``NAME`` is looked for as ``ROOT/NAME/F``, then in TFDS's
manual-download layout ``ROOT/downloads/manual/F``, then as ``ROOT/F``.
Downloads go to ``FIRST_ROOT/NAME/F``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from jaxcnn.data.checksums import OFFICIAL_FILES, OFFICIAL_MIRRORS, OfficialFile, verify_file
from jaxcnn.data.dataset import FileCheck
from jaxcnn.data.download import download_file
from jaxcnn.data.errors import DataError, DatasetNotFoundError

ENV_DATA_DIR = "JAXCNN_DATA_DIR"
ENV_MIRRORS = "JAXCNN_MIRRORS"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxcnn``, or ``~/.cache/jaxcnn``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxcnn"


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched, in order: ``data_dir``, ``$JAXCNN_DATA_DIR``, the cache dir.

    Examples:
        >>> data_roots("/data")[0]
        PosixPath('/data')
    """
    roots = []
    for candidate in (data_dir, os.environ.get(ENV_DATA_DIR) or None, default_cache_dir()):
        if candidate is not None:
            path = Path(candidate).expanduser()
            if path not in roots:
                roots.append(path)
    return roots


def candidate_paths(name: str, filename: str, roots: Sequence[Path]) -> list[Path]:
    """Every place ``filename`` of dataset ``name`` may be, in lookup order."""
    paths = []
    for root in roots:
        paths += [root / name / filename, root / "downloads" / "manual" / filename, root / filename]
    return paths


def mirror_urls(name: str, filename: str, mirrors: Sequence[str] | None) -> list[str]:
    """URLs for one file: ``mirrors`` if given, else ``$JAXCNN_MIRRORS`` then the official ones."""
    if isinstance(mirrors, str):
        raise DataError(f"mirrors must be a list of base URLs, got the string {mirrors!r}")
    if mirrors is None:
        from_env = [m for m in os.environ.get(ENV_MIRRORS, "").split(",") if m.strip()]
        mirrors = [*from_env, *OFFICIAL_MIRRORS.get(name, ())]
    return [base.strip().rstrip("/") + "/" + filename for base in mirrors]


def fetch_official_files(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    verify_checksums: bool = True,
    timeout: float = 60.0,
) -> tuple[dict[str, Path], tuple[FileCheck, ...]]:
    """Find (or download) and verify every official file of dataset ``name``.

    Args:
        name: a key of :data:`~jaxcnn.data.checksums.OFFICIAL_FILES` (``"mnist"``...).
        data_dir: searched first; see the module docstring for the order.
        download: fetch missing files from the mirrors; if False, a missing file raises.
        mirrors: base URLs replacing the default list (``$JAXCNN_MIRRORS`` + official).
        verify_checksums: compare each found file's SHA-256 with the official one.
        timeout: socket timeout per URL, seconds.

    Returns:
        ``({filename: path}, file checks)``.

    Raises:
        ChecksumError: a found file differs from the official one.
        DatasetNotFoundError: a file is missing and ``download`` is False.
        DownloadError: a file is missing and no mirror delivered it.
    """
    roots = data_roots(data_dir)
    paths: dict[str, Path] = {}
    checks = []
    for official in OFFICIAL_FILES[name]:
        found = next(
            (p for p in candidate_paths(name, official.filename, roots) if p.is_file()), None
        )
        if found is None:
            if not download:
                raise DatasetNotFoundError(_not_found_message(name, official, roots))
            found = download_file(
                mirror_urls(name, official.filename, mirrors),
                roots[0] / name / official.filename,
                sha256=official.sha256,
                size=official.size,
                timeout=timeout,
            )
            checks.append(FileCheck(str(found), official.sha256, "downloaded, verified"))
        elif verify_checksums:
            checks.append(FileCheck(str(found), verify_file(found, official), "verified"))
        else:
            checks.append(FileCheck(str(found), None, "not verified (verify_checksums=False)"))
        paths[official.filename] = found
    return paths, tuple(checks)


def _not_found_message(name: str, official: OfficialFile, roots: Sequence[Path]) -> str:
    looked = "\n  ".join(str(p) for p in candidate_paths(name, official.filename, roots))
    urls = mirror_urls(name, official.filename, None)
    return (
        f"{name}: {official.filename} not found and download=False. Looked in:\n  {looked}\n"
        f"Put the official file (sha256 {official.sha256}) in {roots[0] / name}/, e.g. from "
        f"{urls[0]}, or set data_dir / {ENV_DATA_DIR}, or allow download=True."
    )
