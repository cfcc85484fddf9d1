"""Datasets and the input pipeline: ``load(name)`` -> uint8 arrays; batching; augmentation.

Sources: ``digits`` (embedded, offline), ``mnist`` / ``fashion_mnist`` / ``kmnist``
(official IDX files), ``cifar10`` / ``cifar100`` (official binary archives), all
SHA-256 verified and downloaded atomically when missing; ``tfds:<name>``;
``folder:<path>``; and arrays you hold (:func:`from_arrays`).

The loaders import only numpy (and PIL / scikit-learn / TFDS when used); the
JAX-side helpers (:mod:`~jaxcnn.data.pipeline`, :mod:`~jaxcnn.data.augment`)
are imported on first use, so decoding worker processes never import JAX.

Examples:
    >>> from jaxcnn import data
    >>> ds = data.load("digits")
    >>> ds.train.images.shape, ds.train.images.dtype, ds.class_names[:3]
    ((1438, 8, 8, 1), dtype('uint8'), ('0', '1', '2'))
"""

from __future__ import annotations

import importlib

from jaxcnn.data.checksums import OFFICIAL_FILES, sha256_file
from jaxcnn.data.dataset import Dataset, DatasetInfo, FileCheck, Split, from_arrays
from jaxcnn.data.download import download_file
from jaxcnn.data.errors import (
    ChecksumError,
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    DownloadError,
)
from jaxcnn.data.loader import load, names
from jaxcnn.data.locate import data_roots, default_cache_dir

_LAZY = {
    "augment": ("jaxcnn.data.augment", None),
    "pipeline": ("jaxcnn.data.pipeline", None),
    "normalization_stats": ("jaxcnn.data.pipeline", "normalization_stats"),
    "normalize": ("jaxcnn.data.pipeline", "normalize"),
    "epoch_indices": ("jaxcnn.data.pipeline", "epoch_indices"),
    "eval_indices": ("jaxcnn.data.pipeline", "eval_indices"),
    "device_put_split": ("jaxcnn.data.pipeline", "device_put_split"),
    "batch_sharding": ("jaxcnn.data.pipeline", "batch_sharding"),
    "DeviceSplit": ("jaxcnn.data.pipeline", "DeviceSplit"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'jaxcnn.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "OFFICIAL_FILES",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DeviceSplit",
    "DownloadError",
    "FileCheck",
    "Split",
    "augment",
    "batch_sharding",
    "data_roots",
    "default_cache_dir",
    "device_put_split",
    "download_file",
    "epoch_indices",
    "eval_indices",
    "from_arrays",
    "load",
    "names",
    "normalization_stats",
    "normalize",
    "pipeline",
    "sha256_file",
]
