"""``tfds:<name>``: any TFDS image-classification dataset, read without TensorFlow.

A *prepared* dataset (ArrayRecord files under the TFDS data dir) is read through
``tfds.data_source``'s random-access path, which needs no TensorFlow. Preparing
one offline from files you downloaded by hand (TFDS's manual directory,
``<data_dir>/downloads/manual/``) runs TFDS's builder, which for most image
datasets needs TensorFlow (tensorflow/datasets#11058): ``pip install 'jaxcnn[tf]'``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from jaxcnn.data.dataset import Dataset, DatasetInfo, Split
from jaxcnn.data.errors import DataError, DataFormatError, DatasetNotFoundError

_READ_CHUNK = 4096
TF_EXTRA_HINT = "TensorFlow is an optional extra: pip install 'jaxcnn[tf]'"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - a dependency of jaxcnn
        raise DataError(f"tfds: needs tensorflow-datasets ({error}); pip install jaxcnn") from error
    return tfds


def _missing_module(error: BaseException) -> str | None:
    """Name of the module whose absence caused ``error`` (following causes), if any."""
    while error is not None:
        if isinstance(error, ModuleNotFoundError) and error.name:
            return error.name
        if "No module named 'tensorflow'" in str(error):
            return "tensorflow"
        error = error.__cause__ or error.__context__
    return None


def _tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _needs_module(name: str, module: str) -> DataError:
    hint = TF_EXTRA_HINT if module.split(".")[0] == "tensorflow" else f"pip install {module}"
    return DataError(
        f"tfds:{name}: preparing the dataset needs the module {module!r}, which is not "
        f"installed. {hint}. (Reading an already prepared dataset does not.)"
    )


def _prepare(builder, name: str, manual_dir: Path, download: bool) -> None:
    tfds = _import_tfds()
    has_manual_files = manual_dir.is_dir() and any(manual_dir.iterdir())
    if not (download or has_manual_files):
        raise DatasetNotFoundError(
            f"tfds:{name} is not prepared in {builder.data_dir} and download=False. Put the "
            f"dataset's downloaded files in {manual_dir} (TFDS manual layout) to prepare it "
            "offline, pass manual_dir=..., or allow download=True. Preparing needs TensorFlow "
            f"for most image datasets: {TF_EXTRA_HINT}."
        )
    # Refuse before TFDS starts: its archive extraction (tf.io.gfile) runs in a thread
    # pool that keeps going, printing TFDS's "Failed to import TensorFlow" banner and
    # leaving incomplete temporary directories, after the first failure has reached us.
    if not _tensorflow_installed():
        raise _needs_module(name, "tensorflow")
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    try:
        # ArrayRecord: the random-access format read below. With TensorFlow installed
        # TFDS would otherwise write TFRecord, which as_data_source cannot read.
        builder.download_and_prepare(download_config=config, file_format="array_record")
    except Exception as error:
        module = _missing_module(error)
        if module is None:
            raise
        raise _needs_module(name, module) from error


def _read_records(source, keys: list[int]) -> list:
    """Records at ``keys``: one batched read when the source supports it, else one by one."""
    try:
        return list(source.__getitems__(keys))  # ArrayRecord reads a batch in parallel
    except (AttributeError, TypeError):
        # Sources without a working batched read, e.g. the one tfds.testing.mock_data
        # builds in tensorflow-datasets 4.9.10 (its __getitems__ is bound wrongly).
        return [source[key] for key in keys]


def _read_split(source, image_key: str, label_key: str, what: str) -> Split:
    images, labels = [], []
    for start in range(0, len(source), _READ_CHUNK):
        keys = list(range(start, min(start + _READ_CHUNK, len(source))))
        records = _read_records(source, keys)
        for record in records:
            if image_key not in record or label_key not in record:
                raise DataFormatError(
                    f"{what}: example has keys {sorted(record)}; expected {image_key!r} and "
                    f"{label_key!r} (set image_key= / label_key=)"
                )
            images.append(np.asarray(record[image_key]))
            labels.append(int(record[label_key]))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataFormatError(
            f"{what}: images have different shapes {sorted(shapes)[:4]}; jaxcnn needs one "
            "shape (export them to an image folder and use folder:<path> with image_size=...)"
        )
    stacked = np.stack(images) if images else np.zeros((0, 1, 1, 1), np.uint8)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    if stacked.dtype != np.uint8:
        raise DataFormatError(f"{what}: images are {stacked.dtype}, expected uint8")
    return Split(stacked, np.asarray(labels, np.int32))


def load_tfds_dataset(
    name: str,
    data_dir=None,
    *,
    train_split: str = "train",
    test_split: str = "test",
    validation_split_name: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    manual_dir=None,
    download: bool = False,
) -> Dataset:
    """Load a TFDS image-classification dataset into memory as uint8 arrays.

    Args:
        name: a TFDS name, optionally with config/version (``"mnist"``, ``"cifar10:3.0.2"``).
        data_dir: the TFDS data dir (default: TFDS's own, ``$TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        train_split: TFDS split (or slice, e.g. ``"train[:90%]"``) used as train.
        test_split: TFDS split used as test.
        validation_split_name: a TFDS split used as validation, if any.
        image_key: feature holding the image.
        label_key: feature holding the class label (a ``ClassLabel``).
        manual_dir: files for offline preparation; default ``<data_dir>/downloads/manual``.
        download: let TFDS download when the dataset is neither prepared nor in ``manual_dir``.

    Returns:
        The dataset; class names from the label feature.

    Raises:
        DatasetNotFoundError: not prepared, no manual files, and ``download`` is False.
        DataError: preparation needs TensorFlow (the message says ``pip install 'jaxcnn[tf]'``).

    Examples:
        >>> ds = load_tfds_dataset("mnist", download=True)  # doctest: +SKIP
    """
    tfds = _import_tfds()
    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir else None)
    except Exception as error:  # DatasetNotFoundError of TFDS lists close names
        raise DatasetNotFoundError(f"tfds:{name}: {error}") from error
    base_dir = Path(data_dir).expanduser() if data_dir else Path(builder.data_dir_root)
    manual = Path(manual_dir).expanduser() if manual_dir else base_dir / "downloads" / "manual"
    if not builder.is_prepared():
        _prepare(builder, name, manual, download)
    features = builder.info.features
    if label_key not in features or not hasattr(features[label_key], "names"):
        raise DataFormatError(
            f"tfds:{name}: no ClassLabel feature {label_key!r}; features: {list(features)}"
        )
    wanted = {"train": train_split, "test": test_split}
    if validation_split_name:
        wanted["validation"] = validation_split_name
    splits = {}
    for role, split_name in wanted.items():
        try:
            source = builder.as_data_source(split=split_name)
        except NotImplementedError as error:  # prepared as TFRecord, e.g. by tfds itself
            raise DataFormatError(
                f"tfds:{name} is prepared in {builder.data_dir} in a format without random "
                "access (TFRecord); jaxcnn reads ArrayRecord, without TensorFlow. Prepare it "
                "with file_format='array_record' (tfds build --file_format=array_record) or "
                f"use another data_dir, and jaxcnn prepares it itself. TFDS said: {error}"
            ) from error
        splits[role] = _read_split(
            source, image_key, label_key, f"tfds:{name} split {split_name!r}"
        )
    info = DatasetInfo(
        source="tensorflow-datasets (ArrayRecord data source)",
        location=str(builder.data_dir),
        checksum_status="verified by TFDS at preparation",
        notes=(f"TFDS splits: {wanted}",),
    )
    return Dataset(
        f"tfds:{name}",
        splits["train"],
        splits["test"],
        splits.get("validation"),
        tuple(features[label_key].names),
        info,
    )
