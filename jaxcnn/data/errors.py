"""Errors raised by :mod:`jaxcnn.data`, each one a message a person can act on.

All derive from :class:`DataError` (a ``ValueError``), so ``except ValueError``
catches bad input and bad files alike.
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class: a dataset could not be found, read or verified."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The files of a dataset are in none of the searched places (and were not downloaded)."""


class DataFormatError(DataError):
    """A file exists but is not what it should be (truncated, wrong magic, undecodable)."""


class ChecksumError(DataError):
    """A file's SHA-256 differs from the official one.

    Attributes:
        path: the file (or URL) that was checked.
        expected: the official SHA-256 (hex).
        actual: the SHA-256 that was computed (hex).
        advice: what to do about it.
    """

    def __init__(self, path: str, expected: str, actual: str, advice: str):
        self.path, self.expected, self.actual = str(path), expected, actual
        self.advice = advice
        super().__init__(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. {advice}"
        )


class DownloadError(DataError):
    """Every mirror failed; the message lists each URL and why."""
