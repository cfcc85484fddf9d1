"""jaxcnn.data sources without the shared real data: digits, arrays, IDX, CIFAR, folders, TFDS."""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from jaxcnn import data
from jaxcnn.data.sources.cifar import read_cifar_archive
from jaxcnn.data.sources.folder import decode_image, load_folder_dataset
from jaxcnn.data.sources.idx import read_idx


# ---------------------------------------------------------------- digits and arrays
def test_digits_loads_offline_fast_and_deterministic(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path))  # nothing there: must not matter
    started = time.perf_counter()
    ds = data.load("digits")
    assert time.perf_counter() - started < 5.0
    assert (len(ds.train), len(ds.test)) == (1438, 359)
    assert ds.image_shape == (8, 8, 1) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.dtype == np.int32 and ds.num_classes == 10
    assert ds.train.images.max() == 255 and ds.train.images.min() == 0
    # Stratified: every class keeps ~20 % of its examples in test.
    test_share = ds.test.class_counts(10) / (ds.train.class_counts(10) + ds.test.class_counts(10))
    assert np.all(np.abs(test_share - 0.2) < 0.01)
    again = data.load("digits", seed=123)  # the train/test split never depends on seed
    np.testing.assert_array_equal(again.test.labels, ds.test.labels)
    assert ds.info.counts == {"train": 1438, "test": 359}
    assert not list(tmp_path.iterdir())


def test_validation_split_is_seeded_and_disjoint():
    a = data.load("digits", validation_split=0.25, seed=7)
    b = data.load("digits", validation_split=0.25, seed=7)
    c = data.load("digits", validation_split=0.25, seed=8)
    assert len(a.validation) == round(0.25 * 1438) and len(a.train) == 1438 - len(a.validation)
    np.testing.assert_array_equal(a.validation.images, b.validation.images)
    assert not np.array_equal(a.validation.images, c.validation.images)
    assert a.info.counts == {"train": len(a.train), "validation": len(a.validation), "test": 359}
    # Disjoint and complete: the two parts together are the original train split.
    full = data.load("digits").train
    together = np.concatenate([a.train.images, a.validation.images]).reshape(1438, -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, full.images.reshape(1438, -1)))


def test_from_arrays_converts_and_checks():
    ds = data.from_arrays(
        np.random.default_rng(0).random((10, 5, 5)),
        np.arange(10) % 3,
        np.zeros((4, 5, 5), np.uint8),
        [0, 1, 2, 0],
        class_names=["a", "b", "c"],
    )
    assert ds.image_shape == (5, 5, 1) and ds.class_names == ("a", "b", "c")
    assert ds.train.images.dtype == np.uint8 and ds.info.source == "arrays"
    with pytest.raises(data.DataError, match=r"not in \[0, 1\]"):
        data.from_arrays(np.full((2, 3, 3), 2.0), [0, 1], np.zeros((1, 3, 3)), [0])
    with pytest.raises(data.DataError, match="labels run 0..5, valid: 0..1"):
        data.from_arrays(
            np.zeros((2, 3, 3)), [0, 5], np.zeros((1, 3, 3)), [0], class_names=["a", "b"]
        )
    with pytest.raises(data.DataError, match="test images are"):
        data.from_arrays(np.zeros((2, 3, 3)), [0, 1], np.zeros((1, 4, 4)), [0])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # int32 would wrap 2**32 + 1 to 1: the range is checked before the cast.
        ({"train_labels": [0, 2**32 + 1]}, r"labels must be class indices; got values from 0"),
        ({"train_images": np.full((2, 3, 3), np.nan)}, "train_images hold NaN or infinite"),
        (
            {"train_images": np.zeros((2, 3, 8, 8), np.uint8)},
            r"look channels-first \(N, C, H, W\).*transpose\(0, 2, 3, 1\)",
        ),
        ({"class_names": "ab"}, "class_names='ab' is one string; give one name per class"),
        ({"class_names": ["a", "a"]}, r"class_names repeat \['a'\]"),
        ({"seed": -1}, "seed must be a non-negative int; got -1"),
    ],
)
def test_from_arrays_refuses_what_would_load_as_nonsense(arguments, message):
    given = {
        "train_images": np.zeros((2, 3, 3), np.uint8),
        "train_labels": [0, 1],
        "test_images": np.zeros((1, 3, 3), np.uint8),
        "test_labels": [0],
        **arguments,
    }
    with pytest.raises(data.DataError, match=message):
        data.from_arrays(
            given.pop("train_images"),
            given.pop("train_labels"),
            given.pop("test_images"),
            given.pop("test_labels"),
            **given,
        )


def test_from_arrays_and_load_take_numpy_scalars_and_empty_label_lists():
    ds = data.from_arrays(
        np.zeros((4, 3, 3), np.uint8), [0, 1, 0, 1], np.zeros((0, 3, 3), np.uint8), [],
        validation_split=np.float32(0.5), seed=np.int64(3),
    )  # fmt: skip
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (2, 2, 0)
    assert len(data.load("digits", validation_split=np.float64(0.1), seed=np.int64(1)).train)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: data.load("mnistt"), "unknown dataset name 'mnistt'; valid: digits, mnist"),
        (
            lambda: data.load("digits", validation_split=1.0),
            r"validation_split must be a number in \[0, 1\); got 1.0",
        ),
        (lambda: data.load("digits", seed=-1), "seed must be a non-negative int"),
        (lambda: data.load("digits", image_size=3), r"unknown option\(s\) \['image_size'\]"),
        (lambda: data.load("mnist", colour="rgb"), "valid options: .*'download'"),
        (lambda: data.load("tfds:"), "needs a value after the colon"),
    ],
)
def test_load_rejects_bad_arguments(call, message):
    with pytest.raises(data.DataError, match=message):
        call()


# ---------------------------------------------------------------- IDX
def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_reads_gzip_and_raw(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (tmp_path / "a.idx").write_bytes(_idx_bytes(images))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", ndim=3), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), images)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 4) + bytes(10)),
            r"truncated: header says shape \(2, 3, 4\) \(24 bytes\), file holds 10 bytes",
        ),
        (
            gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 2, 2) + bytes(9)),
            "has trailing bytes",
        ),
        (
            gzip.compress(b"PK\x03\x04" + bytes(20)),
            "not an IDX file \\(magic 0x504b0304; expected 0x00000803 for images",
        ),
        (
            gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes(3)),
            "has 1 dimensions, expected 3",
        ),
        (
            gzip.compress(_idx_bytes(np.random.default_rng(0).integers(0, 255, (5, 9, 9))))[:200],
            "corrupt or truncated gzip",
        ),
        (b"\x1f\x8b\x08\x00garbage-not-deflate", "corrupt or truncated gzip"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    ],
    ids=[
        "truncated-body",
        "trailing",
        "wrong-magic",
        "wrong-ndim",
        "truncated-gzip",
        "corrupt-gzip",
        "short-header",
    ],
)
def test_read_idx_bad_files_name_the_path(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(data.DataFormatError, match=message) as caught:
        read_idx(path, ndim=3)
    assert str(path) in str(caught.value)


def test_corrupt_official_file_raises_checksum_error(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for official in data.OFFICIAL_FILES["mnist"]:
        (folder / official.filename).write_bytes(b"\x1f\x8bnot the official file")
    with pytest.raises(data.ChecksumError) as caught:
        data.load("mnist", tmp_path, download=False)
    message = str(caught.value)
    first = data.OFFICIAL_FILES["mnist"][0]
    assert str(folder / first.filename) in message and first.sha256 in message
    assert data.sha256_file(folder / first.filename) in message and "Delete it" in message


def test_missing_files_without_download_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("fashion_mnist", tmp_path / "arg", download=False)
    message = str(caught.value)
    order = [
        str(tmp_path / p)
        for p in (
            "arg/fashion_mnist/train-images-idx3-ubyte.gz",
            "arg/downloads/manual/train-images-idx3-ubyte.gz",
            "env/fashion_mnist",
            "xdg/jaxcnn/fashion_mnist",
        )
    ]
    positions = [message.index(p) for p in order]
    assert positions == sorted(positions) and "download=True" in message


# ---------------------------------------------------------------- CIFAR binary archives
def _fake_cifar_archive(path, name="cifar10", records_per_batch=3):
    """A tiny archive in the official binary layout; first image red plane 255."""
    rng = np.random.default_rng(0)
    label_bytes = 1 if name == "cifar10" else 2
    folder = "cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary"
    if name == "cifar10":
        members = {f"data_batch_{i}.bin": records_per_batch for i in range(1, 6)}
        members["test_batch.bin"] = 2
        text = {"batches.meta.txt": "\n".join(f"class{i}" for i in range(10)) + "\n\n"}
    else:
        members = {"train.bin": records_per_batch, "test.bin": 2}
        text = {
            "fine_label_names.txt": "\n".join(f"fine{i}" for i in range(100)),
            "coarse_label_names.txt": "\n".join(f"coarse{i}" for i in range(20)),
        }
    with tarfile.open(path, "w:gz") as tar:

        def add(member, payload):
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for member, count in members.items():
            records = rng.integers(0, 256, (count, label_bytes + 3072), dtype=np.uint8)
            records[:, 0] = np.arange(count) % 20  # coarse (cifar100) or the label (cifar10)
            if label_bytes == 2:
                records[:, 1] = 50 + np.arange(count)
            records[0, label_bytes : label_bytes + 1024] = 255  # red plane of image 0
            add(member, records.tobytes())
        for member, content in text.items():
            add(member, content.encode())


def test_cifar_archive_with_bad_checksum_is_refused(tmp_path):
    _fake_cifar_archive(tmp_path / "cifar-10-binary.tar.gz")
    with pytest.raises(data.ChecksumError) as caught:
        data.load("cifar10", tmp_path, download=False)
    message = str(caught.value)
    assert str(tmp_path / "cifar-10-binary.tar.gz") in message
    assert data.OFFICIAL_FILES["cifar10"][0].sha256 in message
    assert "170,052,171 bytes" in message and "Delete it" in message


def test_cifar_binary_layout_is_read_as_nhwc(tmp_path):
    _fake_cifar_archive(tmp_path / "cifar-10-binary.tar.gz")
    ds = data.load("cifar10", tmp_path, download=False, verify_checksums=False)
    assert (len(ds.train), len(ds.test), ds.image_shape) == (15, 2, (32, 32, 3))
    assert ds.class_names == tuple(f"class{i}" for i in range(10))
    assert np.all(ds.train.images[0, :, :, 0] == 255)  # the red plane went to channel 0
    assert ds.train.labels[:3].tolist() == [0, 1, 2] and ds.info.checksum_status == "skipped"

    _fake_cifar_archive(tmp_path / "c100.tar.gz", "cifar100")
    train, test, names = read_cifar_archive(tmp_path / "c100.tar.gz", "cifar100", "fine")
    assert train.labels[:3].tolist() == [50, 51, 52] and len(names) == 100 and len(test) == 2
    _, _, coarse_names = read_cifar_archive(tmp_path / "c100.tar.gz", "cifar100", "coarse")
    assert len(coarse_names) == 20


def test_cifar_archive_errors(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not a tarball at all")
    with pytest.raises(data.DataFormatError, match="broken.tar.gz: not a readable .tar.gz"):
        read_cifar_archive(bad)
    with tarfile.open(tmp_path / "partial.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 3073 + 5
        tar.addfile(info, io.BytesIO(bytes(3078)))
    with pytest.raises(data.DataFormatError, match=r"missing member\(s\) \['batches.meta.txt'"):
        read_cifar_archive(tmp_path / "partial.tar.gz")
    with pytest.raises(data.DataError, match="label_mode='coarse' applies to cifar100 only"):
        data.load("cifar10", tmp_path, label_mode="coarse")
    # Checked before the archive is looked for: the option, not a missing file, is named.
    with pytest.raises(data.DataError, match=r"label_mode='medium' for cifar100; valid: \["):
        data.load("cifar100", tmp_path / "empty", label_mode="medium", download=False)


# ---------------------------------------------------------------- image folders
@pytest.fixture
def image_folder(tmp_path):
    """root/{cat,dog,emu}/ with png, jpg, bmp and gif files of mixed sizes."""
    root = tmp_path / "pets"
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i, ext in enumerate(["png", "jpg", "bmp", "gif", "PNG"]):
            Image.new("RGB", (12 + i, 10), colour).save(root / name / f"{i}.{ext}")
        (root / name / "notes.txt").write_text("ignored")
    return root


def test_folder_loads_resizes_and_caches(image_folder, tmp_path):
    ds = data.load(f"folder:{image_folder}", tmp_path / "cache", image_size=8, test_split=0.2)
    assert ds.class_names == ("cat", "dog", "emu") and ds.image_shape == (8, 8, 3)
    assert (len(ds.train), len(ds.test)) == (12, 3)
    red = ds.train.images[ds.train.labels == 0]
    assert np.all(red[..., 0] > 240) and np.all(red[..., 1] < 15)
    assert any("decoded 15 images" in note for note in ds.info.notes)
    again = data.load(f"folder:{image_folder}", tmp_path / "cache", image_size=8, test_split=0.2)
    assert any("read from cache" in note for note in again.info.notes)
    np.testing.assert_array_equal(again.train.images, ds.train.images)
    assert not list((tmp_path / "cache" / "folder_cache").glob(".*part"))
    gray = data.load(
        f"folder:{image_folder}", image_size=(4, 6), color_mode="grayscale", cache=False
    )
    assert gray.image_shape == (4, 6, 1)


def test_folder_default_size_is_the_first_image(image_folder):
    ds = load_folder_dataset(image_folder, cache=False)
    assert ds.image_shape == (10, 12, 3)


def test_folder_with_broken_file_names_it(image_folder, tmp_path):
    broken = image_folder / "dog" / "9.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(data.DataFormatError) as caught:
        data.load(f"folder:{image_folder}", tmp_path, image_size=8)
    assert str(broken) in str(caught.value) and "skip_bad=True" in str(caught.value)
    assert not (tmp_path / "folder_cache").exists()  # a failed load caches nothing
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\)"):
        ds = data.load(f"folder:{image_folder}", tmp_path, image_size=8, skip_bad=True)
    assert len(ds.train) + len(ds.test) == 15
    with pytest.warns(UserWarning, match="skipped 1"):  # the cache remembers the skip
        data.load(f"folder:{image_folder}", tmp_path, image_size=8, skip_bad=True)


def test_folder_cache_of_a_skip_bad_run_still_refuses_without_skip_bad(image_folder, tmp_path):
    (image_folder / "dog" / "9.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1"):
        data.load(f"folder:{image_folder}", tmp_path, image_size=8, skip_bad=True)
    with pytest.raises(data.DataFormatError, match="skip_bad=True to skip them"):
        data.load(f"folder:{image_folder}", tmp_path, image_size=8)  # from the cache


def test_folder_reads_nested_folders_and_16_bit_images(image_folder):
    nested = image_folder / "cat" / "more" / "deeper"
    nested.mkdir(parents=True)
    Image.new("RGB", (12, 10), (255, 0, 0)).save(nested / "x.png")
    ramp = (np.arange(12 * 10, dtype=np.uint32).reshape(10, 12) * 546).astype(np.uint16)
    Image.fromarray(ramp).save(image_folder / "emu" / "wide.png")  # mode I;16
    ds = load_folder_dataset(image_folder, cache=False, image_size=(10, 12), test_split=0.1)
    # Subfolders count, as in torchvision's ImageFolder: 15 + 1 nested + 1 16-bit.
    assert len(ds.train) + len(ds.test) == 17
    grey = decode_image(image_folder / "emu" / "wide.png", (10, 12), grayscale=True)[..., 0]
    np.testing.assert_array_equal(grey, ramp >> 8)  # the top 8 bits, not clipped at 255


def test_folder_split_folders_without_classes_are_refused(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / split / "a.png")
    with pytest.raises(data.DataFormatError, match=r"train holds images but no class subfolders"):
        data.load(f"folder:{tmp_path}", cache=False)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"test_split": 1.5}, r"test_split must be a fraction in \(0, 1\)"),
        ({"test_split": 0}, r"test_split must be a fraction in \(0, 1\)"),
        ({"split_seed": -1}, "split_seed must be a non-negative int; got -1"),
        ({"workers": "2"}, "workers must be None .* or an int >= 1; got '2'"),
        ({"image_size": True}, "image_size must be a positive int or"),
        ({"skip_bad": "no"}, "skip_bad must be True or False; got 'no'"),
        ({"cache": "no"}, "cache must be True or False"),
    ],
)
def test_folder_options_are_checked_before_any_file_is_read(tmp_path, option, message):
    # The folder does not even exist: the option is reported, not the missing folder.
    with pytest.raises(data.DataError, match=message):
        data.load(f"folder:{tmp_path / 'nope'}", **option)


def test_folder_takes_numpy_sizes_and_survives_an_unwritable_cache(image_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("the cache folder cannot be made under a file")
    with pytest.warns(UserWarning, match="could not write the decoded-array cache"):
        ds = data.load(f"folder:{image_folder}", blocker, image_size=np.int64(8))
    assert ds.image_shape == (8, 8, 3)


NO_GUARD_SCRIPT = """
import os
from jaxcnn import data
from jaxcnn.data.sources import folder
folder._SERIAL_BELOW = 0  # a pool even for a tiny folder
dataset = data.load("folder:pets", cache=False, workers=2)
with open("ran.txt", "a") as log:
    log.write(f"{os.getpid()}\\n")  # stands for the rest of a user's script (training)
"""


def test_a_script_without_main_guard_runs_its_rest_once(image_folder):
    # Spawned workers import the script; they must stop at the load, not train too.
    script = image_folder.parent / "train_no_guard.py"
    script.write_text(NO_GUARD_SCRIPT)
    run = subprocess.run(
        [sys.executable, script.name], cwd=image_folder.parent, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "decoding serially" in run.stderr and "__main__" in run.stderr
    assert len((image_folder.parent / "ran.txt").read_text().split()) == 1


def test_folder_with_empty_class_is_an_error(image_folder):
    (image_folder / "yak").mkdir()
    (image_folder / "yak" / "readme.md").write_text("no images")
    with pytest.raises(data.DataFormatError, match=r"class folder .*yak holds no image file"):
        data.load(f"folder:{image_folder}", cache=False)


def test_folder_layout_errors(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(data.DatasetNotFoundError, match="has no class subfolders"):
        data.load(f"folder:{tmp_path / 'flat'}")
    with pytest.raises(data.DataError, match="color_mode must be 'rgb' or 'grayscale'"):
        data.load(f"folder:{tmp_path / 'flat'}", color_mode="RGB")


def test_folder_train_test_layout_and_unknown_test_class(tmp_path):
    for split, classes in (("train", "ab"), ("test", "ab")):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (5, 5), 40 * i).save(tmp_path / split / name / f"{i}.png")
    ds = data.load(
        f"folder:{tmp_path}", cache=False, color_mode="grayscale", validation_split=1 / 3
    )
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (4, 2, 6)
    (tmp_path / "test" / "zebra").mkdir()
    with pytest.raises(data.DataFormatError, match="class 'zebra' is not among the train"):
        data.load(f"folder:{tmp_path}", cache=False)


# ---------------------------------------------------------------- TFDS
def test_tfds_reads_through_the_data_source(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from jaxcnn.data.sources import tfds_source

    # mock_data replaces TFDS's preparation, so it runs without TensorFlow.
    monkeypatch.setattr(tfds_source, "_tensorflow_installed", lambda: True)
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("tfds:mnist", tmp_path, download=True, validation_split=0.25)
    assert ds.name == "tfds:mnist" and ds.image_shape == (28, 28, 1)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (9, 3, 12)
    assert ds.num_classes == 10 and ds.train.images.dtype == np.uint8
    assert "ArrayRecord" in ds.info.source


def test_tfds_prepared_as_tfrecord_says_how_to_get_array_record(tmp_path, monkeypatch):
    # With TensorFlow installed TFDS prepares TFRecord by default, which has no random
    # access: jaxcnn asks for ArrayRecord itself, and explains one prepared by others.
    import tensorflow_datasets as tfds

    from jaxcnn.data.sources import tfds_source

    def no_random_access(self, *args, **kwargs):
        raise NotImplementedError("Random access data source for file format TFRECORD")

    monkeypatch.setattr(tfds_source, "_tensorflow_installed", lambda: True)
    with tfds.testing.mock_data(num_examples=4), monkeypatch.context() as patch:
        patch.setattr(tfds.core.DatasetBuilder, "as_data_source", no_random_access)
        with pytest.raises(data.DataFormatError, match="file_format='array_record'") as caught:
            data.load("tfds:mnist", tmp_path, download=True)
    assert "TFRECORD" in str(caught.value) and "tfds:mnist" in str(caught.value)


def test_tfds_not_prepared_explains_offline_preparation(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("tfds:mnist", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "downloads" / "manual") in message and "jaxcnn[tf]" in message
    with pytest.raises(data.DatasetNotFoundError, match="tfds:no_such_dataset_xyz"):
        data.load("tfds:no_such_dataset_xyz", tmp_path)


def test_tfds_preparation_without_tensorflow_names_the_extra(tmp_path):
    try:
        import tensorflow  # noqa: F401

        pytest.skip("TensorFlow is installed: preparation would start")
    except ImportError:
        pass
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-images-idx3-ubyte.gz").write_bytes(b"not read: refused before TFDS starts")
    before = set(threading.enumerate())
    with pytest.raises(data.DataError, match=r"pip install 'jaxcnn\[tf\]'") as caught:
        data.load("tfds:mnist", tmp_path / "tfds", manual_dir=manual)
    assert "'tensorflow'" in str(caught.value)
    # Nothing of TFDS's preparation started: no extraction threads, nothing written.
    assert set(threading.enumerate()) - before == set()  # (threads may end meanwhile)
    assert not (tmp_path / "tfds" / "downloads").exists()


@pytest.mark.realdata
def test_tfds_prepares_array_record_offline_with_tensorflow(tmp_path, shared_data):
    # Only where TensorFlow is installed (the 'tf' extra; not in CI): about 40 s.
    pytest.importorskip("tensorflow", reason="preparing a TFDS dataset needs TensorFlow")
    ds = data.load("tfds:mnist", tmp_path, manual_dir=shared_data / "mnist")
    assert (len(ds.train), len(ds.test), ds.image_shape) == (60000, 10000, (28, 28, 1))
    assert list((tmp_path / "mnist").rglob("*.array_record*"))  # random access, no TFRecord
    reference = data.load("mnist", shared_data / "mnist")
    np.testing.assert_array_equal(
        np.sort(ds.test.images.reshape(10000, -1), axis=0),
        np.sort(reference.test.images.reshape(10000, -1), axis=0),
    )
