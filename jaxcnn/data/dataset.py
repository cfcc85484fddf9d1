"""The containers every source returns: :class:`Split`, :class:`DatasetInfo`, :class:`Dataset`.

Images are kept as uint8 ``(N, H, W, C)`` arrays (``C == 1`` for grayscale) and
labels as int32 ``(N,)``: the smallest faithful form, cheap to keep on an
accelerator, normalised later inside jit.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from jaxcnn.data.errors import DataError

# Independent random streams for the two seeded splits: with one seed, the test
# carve-out and the validation carve-out are different draws, not the same one twice.
_VALIDATION_STREAM = 0x56414C  # "VAL"
_TEST_STREAM = 0x54455354  # "TEST"


def is_count(value, lowest: int) -> bool:
    """Whether ``value`` is an int (numpy's too, not a bool) of at least ``lowest``: the
    check behind every size, seed and worker count the data room takes.

    Examples:
        >>> is_count(np.int64(3), 1), is_count(True, 0), is_count(0, 1)
        (True, False, False)
    """
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Integral)
        and bool(value >= lowest)
    )


@dataclass(frozen=True)
class Split:
    """One split of a dataset: uint8 images and their int32 labels.

    Args:
        images: uint8 array ``(N, H, W, C)``.
        labels: integer array ``(N,)``; stored as int32.

    Examples:
        >>> s = Split(np.zeros((2, 8, 8, 1), np.uint8), np.array([0, 1]))
        >>> len(s), s.labels.dtype
        (2, dtype('int32'))
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        if labels.ndim == 1 and labels.size == 0:
            labels = labels.astype(np.int32)  # np.asarray([]) is float64
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(
                f"Split images must be uint8 (N, H, W, C); got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"Split labels must be integers (N,); got {labels.dtype} {labels.shape}"
            )
        if len(labels) != len(images):
            raise DataError(f"Split has {len(images)} images but {len(labels)} labels")
        bounds = np.iinfo(np.int32)
        if labels.size and (labels.min() < bounds.min or labels.max() > bounds.max):
            # Checked before the int32 cast, which would wrap 2**32 + 1 to 1 silently.
            raise DataError(
                f"Split labels must be class indices; got values from {labels.min()} to "
                f"{labels.max()}"
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> Split:
        """The examples at ``indices``, in that order."""
        return Split(self.images[indices], self.labels[indices])

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Examples per class, ``(num_classes,)`` int64."""
        return np.bincount(self.labels, minlength=num_classes)


@dataclass(frozen=True)
class FileCheck:
    """One file a dataset was read from and what was checked.

    Attributes:
        path: where the file was found (or downloaded to).
        sha256: its SHA-256, or ``None`` when not computed.
        status: ``"verified"``, ``"downloaded, verified"``, ``"not verified"`` ...
    """

    path: str
    sha256: str | None
    status: str


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset came from and what was verified.

    Attributes:
        source: a short description (``"official IDX files"``, ``"image folder"``...).
        location: the directory or package it was read from.
        checksum_status: ``"verified"`` (every file matched its official SHA-256),
            ``"skipped"``, ``"downloaded, verified"`` or ``"not applicable"``.
        files: the files read, with their checksums.
        counts: examples per split, e.g. ``{"train": 60000, "test": 10000}``.
        notes: anything else worth printing (skipped files, cache used...).
    """

    source: str
    location: str
    checksum_status: str
    files: tuple[FileCheck, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: train/test (and optional validation) splits plus metadata.

    Examples:
        >>> ds = from_arrays(np.zeros((4, 2, 2), np.uint8), [0, 1, 0, 1],
        ...                  np.zeros((2, 2, 2), np.uint8), [1, 0])
        >>> ds.num_classes, ds.image_shape, ds.info.counts["train"]
        (2, (2, 2, 1), 4)
    """

    name: str
    train: Split
    test: Split
    validation: Split | None
    class_names: tuple[str, ...]
    info: DatasetInfo

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        for split_name, split in self.splits().items():
            if split.images.shape[1:] != self.train.images.shape[1:]:
                raise DataError(
                    f"{self.name}: {split_name} images are {split.images.shape[1:]}, "
                    f"train images are {self.train.images.shape[1:]}"
                )
            if len(split) and (split.labels.min() < 0 or split.labels.max() >= self.num_classes):
                raise DataError(
                    f"{self.name}: {split_name} labels run {split.labels.min()}.."
                    f"{split.labels.max()}, valid: 0..{self.num_classes - 1} "
                    f"({self.num_classes} class names)"
                )
        counts = {name: len(split) for name, split in self.splits().items()}
        object.__setattr__(self, "info", dataclasses.replace(self.info, counts=counts))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(self.train.images.shape[1:])

    def splits(self) -> dict[str, Split]:
        """The present splits by name: ``train``, ``validation`` (if any), ``test``."""
        present = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: split for name, split in present.items() if split is not None}


def seeded_partition(num_examples: int, fraction: float, seed: int, stream: int, what: str):
    """Split ``range(num_examples)`` into (kept, taken) index arrays, both sorted.

    The permutation comes from numpy's PCG64 seeded with the sequence
    ``(seed, stream)``, so it is the same on every machine and every run.

    Args:
        num_examples: how many examples there are.
        fraction: share taken, in ``(0, 1)``; ``round(fraction * num_examples)`` examples.
        seed: the user's seed.
        stream: a constant per purpose (validation, test) so purposes never collide.
        what: the parameter name, for the error message.

    Returns:
        ``(kept, taken)`` int64 index arrays.

    Examples:
        >>> kept, taken = seeded_partition(10, 0.2, seed=0, stream=1, what="x")
        >>> len(kept), len(taken)
        (8, 2)
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{what} must be in (0, 1) here; got {fraction!r}")
    num_taken = round(fraction * num_examples)
    if num_taken < 1 or num_taken >= num_examples:
        raise DataError(
            f"{what}={fraction} of {num_examples} examples gives {num_taken}; it must leave at "
            "least one example on each side"
        )
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
    order = rng.permutation(num_examples)
    return np.sort(order[num_taken:]), np.sort(order[:num_taken])


def split_off_validation(dataset: Dataset, validation_split: float, seed: int) -> Dataset:
    """Move ``round(validation_split * len(train))`` seeded examples from train to validation."""
    if validation_split == 0.0:
        return dataset
    if dataset.validation is not None:
        raise DataError(
            f"{dataset.name} already has a validation split ({len(dataset.validation)} "
            f"examples); validation_split={validation_split} must be 0.0"
        )
    kept, taken = seeded_partition(
        len(dataset.train), validation_split, seed, _VALIDATION_STREAM, "validation_split"
    )
    return dataclasses.replace(
        dataset, train=dataset.train.take(kept), validation=dataset.train.take(taken)
    )


def split_off_test(train: Split, test_split: float, seed: int) -> tuple[Split, Split]:
    """Carve a seeded test split out of ``train`` (for sources that have no test set)."""
    kept, taken = seeded_partition(len(train), test_split, seed, _TEST_STREAM, "test_split")
    return train.take(kept), train.take(taken)


def _as_uint8_images(images, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:  # (N, H, W) grayscale: add the channel axis
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"{what} must be (N, H, W) or (N, H, W, C); got shape {images.shape}")
    if images.shape[1] in (1, 3, 4) and images.shape[-1] > 4:
        raise DataError(
            f"{what} of shape {images.shape} look channels-first (N, C, H, W), as PyTorch "
            "keeps them; jaxcnn takes (N, H, W, C): pass images.transpose(0, 2, 3, 1)"
        )
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if images.size and not np.isfinite(images).all():
            raise DataError(f"{what} hold NaN or infinite values; pass float 0..1")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise DataError(
                f"{what} are float but not in [0, 1] (min {images.min()}, "
                f"max {images.max()}); pass uint8 0..255 or float 0..1"
            )
        return np.round(images * 255.0).astype(np.uint8)
    raise DataError(f"{what} must be uint8 0..255 or float 0..1; got dtype {images.dtype}")


def from_arrays(
    train_images,
    train_labels,
    test_images,
    test_labels,
    *,
    class_names: Sequence[str] | None = None,
    name: str = "arrays",
    validation_split: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """A :class:`Dataset` from numpy arrays you already hold.

    Args:
        train_images: ``(N, H, W)`` or ``(N, H, W, C)``, uint8 0..255 or float 0..1.
        train_labels: integer labels ``(N,)``, 0-based.
        test_images: as ``train_images``.
        test_labels: as ``train_labels``.
        class_names: one name per class; default ``"0", "1", ...`` up to the largest label.
        name: the dataset's name in messages and reports.
        validation_split: share of train moved to a seeded validation split.
        seed: seed of that split.

    Returns:
        The dataset, ``info.source == "arrays"``.

    Examples:
        >>> ds = from_arrays(np.ones((10, 4, 4, 3), np.float32), np.arange(10) % 2,
        ...                  np.ones((2, 4, 4, 3), np.float32), [0, 1], validation_split=0.2)
        >>> len(ds.train), len(ds.validation), int(ds.train.images.max())
        (8, 2, 255)
    """
    if not is_count(seed, 0):
        raise DataError(f"seed must be a non-negative int; got {seed!r}")
    if class_names is not None:
        if isinstance(class_names, str):
            raise DataError(
                f"class_names={class_names!r} is one string; give one name per class, "
                "e.g. ['cat', 'dog']"
            )
        repeated = sorted({str(c) for c in class_names if list(class_names).count(c) > 1})
        if repeated:
            raise DataError(f"class_names repeat {repeated}; each class needs its own name")
    train = Split(_as_uint8_images(train_images, "train_images"), np.asarray(train_labels))
    test = Split(_as_uint8_images(test_images, "test_images"), np.asarray(test_labels))
    if class_names is None:
        largest = max(int(train.labels.max(initial=0)), int(test.labels.max(initial=0)))
        class_names = [str(i) for i in range(largest + 1)]
    info = DatasetInfo(source="arrays", location="memory", checksum_status="not applicable")
    dataset = Dataset(name, train, test, None, tuple(class_names), info)
    return split_off_validation(dataset, validation_split, int(seed))
