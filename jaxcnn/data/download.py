"""Atomic, verified downloads with urllib (no extra dependency).

A file is streamed to a hidden temporary name next to its destination, hashed
while it arrives, and renamed into place only when its size and SHA-256 match;
any failure removes the temporary file. So a cache directory holds official
files or nothing, never a partial or corrupt one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from jaxcnn.data.errors import ChecksumError, DataError, DownloadError
from jaxcnn.files import outermost_missing_folder

_CHUNK = 1 << 16
_USER_AGENT = "jaxcnn-data/0.1 (+urllib)"


def _stream_to(url: str, tmp: Path, expected_size: int | None, timeout: float) -> str:
    """Write the body of ``url`` to ``tmp``; return its SHA-256. Raises on a short body."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if expected_size is not None and announced is not None and announced != expected_size:
            raise DownloadError(
                f"{url} announces {announced:,} bytes, the official file has {expected_size:,}"
            )
        while block := response.read(_CHUNK):
            out.write(block)
            digest.update(block)
            received += len(block)
    wanted = announced if announced is not None else expected_size
    if wanted is not None and received < wanted:
        raise DownloadError(
            f"transfer from {url} interrupted after {received:,} of {wanted:,} bytes"
        )
    return digest.hexdigest()


def download_file(
    urls: Sequence[str],
    destination: str | Path,
    *,
    sha256: str,
    size: int | None = None,
    timeout: float = 60.0,
    quiet: bool = False,
) -> Path:
    """Download the first URL that yields the expected file to ``destination``, atomically.

    Args:
        urls: candidate URLs, tried in order.
        destination: final path; its directory is created.
        sha256: the expected SHA-256 (hex); anything else is discarded.
        size: the expected size in bytes, checked before and after the transfer.
        timeout: socket timeout per URL, seconds.
        quiet: do not print a line per attempt to stderr.

    Returns:
        ``destination`` (now holding the verified file).

    Raises:
        ChecksumError: every URL that answered served a different file (naming URL,
            expected and actual checksum).
        DownloadError: no URL could be read completely (each URL and its error listed).

    Examples:
        >>> download_file([], "/tmp/x", sha256="0" * 64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        jaxcnn.data.errors.DownloadError: no URL given to download /tmp/x
    """
    destination = Path(destination)
    if not urls:
        raise DownloadError(f"no URL given to download {destination}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise DataError(f"timeout must be a number of seconds > 0; got {timeout!r}")
    folder = destination.absolute().parent  # absolute, as the path it is compared with
    # The outermost folder this call makes: removed again if nothing could be saved.
    created = outermost_missing_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _download_to(urls, destination, sha256, size, timeout, quiet)
    except BaseException:
        if created is not None:
            _remove_empty_folders(folder, up_to=created)
        raise


def _remove_empty_folders(folder: Path, up_to: Path) -> None:
    """``folder`` and its parents up to ``up_to``, as long as each is empty."""
    while True:
        try:
            folder.rmdir()  # only an empty folder: a concurrent download's file stays
        except OSError:
            return
        if folder == up_to:
            return
        folder = folder.parent


def _download_to(urls, destination: Path, sha256: str, size, timeout, quiet) -> Path:
    failures: list[str] = []
    mismatches: list[ChecksumError] = []
    for url in urls:
        # Hidden, unique temporary name in the same directory: os.replace is atomic
        # there, and concurrent downloads of the same file never share a temp file.
        tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.part")
        if not quiet:
            print(f"jaxcnn.data: downloading {url} -> {destination}", file=sys.stderr)
        try:
            actual = _stream_to(url, tmp, size, timeout)
            if actual != sha256:
                raise ChecksumError(
                    url,
                    sha256,
                    actual,
                    f"Nothing was saved to {destination.parent}. The mirror serves a different "
                    "file: use another mirror (mirrors=[...] or JAXCNN_MIRRORS) or put the "
                    "official file there by hand.",
                )
            os.replace(tmp, destination)
            return destination
        except ChecksumError as error:
            mismatches.append(error)
            failures.append(f"{url}: sha256 {error.actual} (expected {sha256})")
        except (OSError, urllib.error.URLError, http.client.HTTPException, DownloadError) as error:
            failures.append(f"{url}: {type(error).__name__}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    if mismatches:
        first = mismatches[0]
        if len(failures) > 1:  # say what the other mirrors did too
            raise ChecksumError(
                first.path,
                first.expected,
                first.actual,
                first.advice + " Every URL tried:\n  " + "\n  ".join(failures),
            )
        raise first
    raise DownloadError(
        f"could not download {destination.name}; nothing was saved. Tried:\n  "
        + "\n  ".join(failures)
        + f"\nOffline? Put the official file at {destination}, or point data_dir "
        "(--data-dir, --config.data_dir, JAXCNN_DATA_DIR) at the folder that has it."
    )
