"""``load(name, ...)``: one entry point for every source."""

from __future__ import annotations

import inspect
import numbers
import os

from jaxcnn.data.dataset import Dataset, is_count, split_off_validation
from jaxcnn.data.errors import DataError

_OFFICIAL = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100")
_ALIASES = {
    "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
}


def names() -> tuple[str, ...]:
    """The names ``load`` accepts (two are prefixes taking a TFDS name or a path).

    Examples:
        >>> names()[:3]
        ('digits', 'mnist', 'fashion_mnist')
    """
    return ("digits", *_OFFICIAL, "tfds:<name>", "folder:<path>")


def _source(name: str):
    """``(loader function, positional name argument)`` for a dataset name."""
    from jaxcnn.data.sources import cifar, digits, folder, idx, tfds_source

    if name.startswith("tfds:"):
        return tfds_source.load_tfds_dataset, name[len("tfds:") :]
    if name.startswith("folder:"):
        return folder.load_folder_dataset, name[len("folder:") :]
    key = _ALIASES.get(name.lower(), name.lower())
    if key == "digits":
        return digits.load_digits_dataset, None
    if key in ("mnist", "fashion_mnist", "kmnist"):
        return idx.load_idx_dataset, key
    if key in ("cifar10", "cifar100"):
        return cifar.load_cifar_dataset, key
    raise DataError(f"unknown dataset name {name!r}; valid: {', '.join(names())}")


def _check_options(function, options: dict, name: str) -> None:
    accepted = [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"{name}: unknown option(s) {unknown}; valid options: {accepted or 'none'}")


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    validation_split: float = 0.0,
    seed: int = 0,
    **source_options,
) -> Dataset:
    """Load a dataset by name as uint8 ``(N, H, W, C)`` images and int32 labels.

    Args:
        name: ``digits`` (embedded, offline), ``mnist``, ``fashion_mnist``, ``kmnist``,
            ``cifar10``, ``cifar100`` (official files, SHA-256 verified, downloaded when
            missing), ``tfds:<tfds name>``, or ``folder:<path>``.
        data_dir: searched first; then ``$JAXCNN_DATA_DIR``, then ``~/.cache/jaxcnn``.
        validation_split: share of train moved into ``Dataset.validation`` (seeded).
        seed: seed of the validation split (numpy PCG64, same on every machine).
        **source_options: per source, e.g. ``download=False``, ``mirrors=[...]``,
            ``verify_checksums``, ``label_mode`` (cifar100), ``image_size``,
            ``color_mode``, ``skip_bad`` (folder), ``train_split`` (tfds).

    Returns:
        The :class:`~jaxcnn.data.Dataset`.

    Raises:
        DataError: (and its subclasses) with a message naming what is wrong and the fix.

    Examples:
        >>> ds = load("digits", validation_split=0.1)
        >>> len(ds.train), len(ds.validation), len(ds.test), ds.num_classes
        (1294, 144, 359, 10)
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"name must be a non-empty string; got {name!r}; valid: {names()}")
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, numbers.Real)
        or not 0.0 <= validation_split < 1.0
    ):
        raise DataError(f"validation_split must be a number in [0, 1); got {validation_split!r}")
    if not is_count(seed, 0):
        raise DataError(f"seed must be a non-negative int; got {seed!r}")
    function, argument = _source(name)
    _check_options(function, source_options, name)
    if argument is None:
        dataset = function(data_dir, **source_options)
    else:
        if not argument:
            prefix = name.partition(":")[0]
            example = {"folder": "folder:~/photos"}.get(prefix.lower(), f"{prefix}:mnist")
            raise DataError(f"{name!r} needs a value after the colon, e.g. {example!r}")
        dataset = function(argument, data_dir, **source_options)
    return split_off_validation(dataset, float(validation_split), int(seed))
