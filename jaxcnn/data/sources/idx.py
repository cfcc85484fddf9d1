"""MNIST, Fashion-MNIST and KMNIST from their official gzipped IDX files.

IDX layout (big-endian): two zero bytes, a type byte (0x08 = uint8), the number
of dimensions, one uint32 per dimension, then the values in row-major order.
Images are ``0x00000803`` (N, rows, cols) and labels ``0x00000801`` (N,).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxcnn.data.dataset import Dataset, DatasetInfo, Split
from jaxcnn.data.errors import DataFormatError
from jaxcnn.data.locate import fetch_official_files

# IDX type byte -> numpy dtype (big-endian where it matters).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    # Kuzushiji-MNIST: one row of hiragana, romanised (as in the KMNIST class map).
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as stream:
        raw = stream.read()
    if raw[:2] != b"\x1f\x8b":  # not gzip: an already-decompressed IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataFormatError(
            f"{path}: corrupt or truncated gzip ({error}); delete it and load again"
        ) from error


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian numpy array.

    Args:
        path: the file.
        ndim: the number of dimensions it must have (3 for images, 1 for labels).

    Returns:
        The array, shape as the header says.

    Raises:
        DataFormatError: wrong magic, wrong number of dimensions, or a body that is
            shorter or longer than the header promises, naming the path.

    Examples:
        >>> import tempfile, struct
        >>> with tempfile.NamedTemporaryFile(suffix=".idx", delete=False) as f:
        ...     _ = f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 8, 9]))
        >>> read_idx(f.name, ndim=1)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise DataFormatError(
            f"{path}: not an IDX file (magic 0x{magic}; expected 0x00000803 for images or "
            "0x00000801 for labels)"
        )
    dims = data[3]
    if ndim is not None and dims != ndim:
        raise DataFormatError(
            f"{path}: IDX magic 0x{data[:4].hex()} has {dims} dimensions, expected {ndim} "
            f"(magic 0x0000080{ndim})"
        )
    header_size = 4 + 4 * dims
    if len(data) < header_size:
        raise DataFormatError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = struct.unpack(f">{dims}I", data[4:header_size])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header_size
    if body != expected:
        state = "truncated" if body < expected else "has trailing bytes"
        raise DataFormatError(
            f"{path}: {state}: header says shape {shape} ({expected:,} bytes), file holds "
            f"{body:,} bytes of data"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_split(paths: dict[str, Path], prefix: str) -> Split:
    images_path = paths[f"{prefix}-images-idx3-ubyte.gz"]
    labels_path = paths[f"{prefix}-labels-idx1-ubyte.gz"]
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataFormatError(f"{images_path}, {labels_path}: expected uint8 IDX data")
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels"
        )
    return Split(images[..., None], labels)


def load_idx_dataset(
    name: str,
    data_dir=None,
    *,
    download: bool = True,
    mirrors=None,
    verify_checksums: bool = True,
    timeout: float = 60.0,
) -> Dataset:
    """Load ``mnist``, ``fashion_mnist`` or ``kmnist`` from the official files.

    Args:
        name: one of ``mnist``, ``fashion_mnist``, ``kmnist``.
        data_dir: searched first (see :mod:`jaxcnn.data.locate`).
        download: fetch missing files from the mirrors.
        mirrors: base URLs replacing the default mirror list.
        verify_checksums: check each file's SHA-256 against the official one.
        timeout: socket timeout per URL, seconds.

    Returns:
        The dataset: 60,000 train and 10,000 test images ``(28, 28, 1)``.
    """
    paths, checks = fetch_official_files(
        name,
        data_dir,
        download=download,
        mirrors=mirrors,
        verify_checksums=verify_checksums,
        timeout=timeout,
    )
    train, test = _read_split(paths, "train"), _read_split(paths, "t10k")
    status = "verified" if verify_checksums else "skipped"
    location = str(Path(checks[0].path).parent)
    info = DatasetInfo("official IDX files", location, status, checks)
    return Dataset(name, train, test, None, CLASS_NAMES[name], info)
