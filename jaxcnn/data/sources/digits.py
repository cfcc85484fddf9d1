"""``digits``: the embedded default, scikit-learn's bundled 8x8 handwritten digits.

1,797 real images ship inside scikit-learn, so this dataset loads on a fresh
machine with no network and no files. Pixels are 0..16 in the original; they are
scaled to uint8 0..255 (``round(v * 255 / 16)``) like every other source.

The train/test split is fixed and stratified: within each class the examples are
shuffled by numpy's PCG64 seeded with :data:`SPLIT_SEED`, and the last
``round(0.2 * class_count)`` go to test. That gives 1,438 train and 359 test
images on every machine, independent of the ``seed`` passed to ``load``.
"""

from __future__ import annotations

import numpy as np

from jaxcnn.data.dataset import Dataset, DatasetInfo, Split

SPLIT_SEED = 20240804
TEST_FRACTION = 0.2


def _stratified_test_mask(labels: np.ndarray) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(SPLIT_SEED)))
    is_test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        is_test[members[len(members) - round(TEST_FRACTION * len(members)) :]] = True
    return is_test


def load_digits_dataset(data_dir=None) -> Dataset:
    """Load the embedded 8x8 digits: 1,438 train / 359 test images ``(8, 8, 1)``, 10 classes.

    Args:
        data_dir: ignored (nothing is read from disk but scikit-learn's own file);
            accepted so that every name takes the same arguments.

    Returns:
        The dataset; ``info.source`` names scikit-learn.

    Examples:
        >>> ds = load_digits_dataset()
        >>> len(ds.train), len(ds.test), ds.image_shape
        (1438, 359, (8, 8, 1))
    """
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    del data_dir
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    is_test = _stratified_test_mask(labels)
    info = DatasetInfo(
        source="sklearn.datasets.load_digits (bundled with scikit-learn)",
        location="scikit-learn package data",
        checksum_status="not applicable (installed package data)",
    )
    return Dataset(
        "digits",
        Split(images[~is_test], labels[~is_test]),
        Split(images[is_test], labels[is_test]),
        None,
        tuple(str(d) for d in range(10)),
        info,
    )
