"""jaxcnn.data against the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import data

pytestmark = pytest.mark.realdata

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("name", "train_counts", "test_counts"),
    [("mnist", MNIST_TRAIN, MNIST_TEST), ("fashion_mnist", [6000] * 10, [1000] * 10)],
)
def test_idx_datasets_load_verified_with_published_counts(
    shared_data, name, train_counts, test_counts
):
    ds = data.load(name, shared_data, download=False)
    assert (len(ds.train), len(ds.test)) == (60_000, 10_000)
    assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.train.class_counts(10).tolist() == train_counts
    assert ds.test.class_counts(10).tolist() == test_counts
    assert ds.info.checksum_status == "verified"
    official = {f.sha256 for f in data.OFFICIAL_FILES[name]}
    assert {check.sha256 for check in ds.info.files} == official
    assert all(check.status == "verified" for check in ds.info.files)


def test_mnist_through_the_environment_variable(shared_data, monkeypatch):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(shared_data))
    ds = data.load("mnist", download=False, validation_split=0.1, seed=3)
    assert (len(ds.train), len(ds.validation)) == (54_000, 6_000)
    assert ds.info.location == str(shared_data / "mnist")


@pytest.fixture(scope="module")
def cifar10_jpg(shared_data, tmp_path_factory):
    """The 60,000 JPEGs extracted to a temp dir, in RAM (/dev/shm) where there is one:
    creating 60,000 files on a busy shared disk took 40-80 s here, in tmpfs 1 s."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        target = Path(tempfile.mkdtemp(prefix="jaxcnn-cifar10-", dir=shm))
    else:
        target = tmp_path_factory.mktemp("cifar10_jpg")
    archive = shared_data / "cifar10_jpg" / "cifar10_jpg.tar.gz"
    try:
        if shutil.which("tar"):  # GNU tar is ~10x faster than Python's tarfile here
            subprocess.run(["tar", "-xzf", str(archive), "-C", str(target)], check=True)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_cifar10_from_jpeg_folders(cifar10_jpg):
    folder, cache = cifar10_jpg / "cifar10_jpg", cifar10_jpg / "cache"
    started = time.perf_counter()
    ds = data.load(f"folder:{folder}", cache)
    first = time.perf_counter() - started
    assert (len(ds.train), len(ds.test)) == (50_000, 10_000)
    assert ds.class_names == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    assert ds.image_shape == (32, 32, 3)
    assert ds.train.class_counts(10).tolist() == [5000] * 10
    assert ds.test.class_counts(10).tolist() == [1000] * 10
    started = time.perf_counter()
    cached = data.load(f"folder:{folder}", cache)
    second = time.perf_counter() - started
    np.testing.assert_array_equal(cached.test.images, ds.test.images)
    print(f"cifar10 jpg folder: first load {first:.1f} s, cached {second:.1f} s")
    assert first < 60 and second < first
