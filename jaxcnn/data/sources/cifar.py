"""CIFAR-10 and CIFAR-100 from the official *binary* archives.

Only the binary version is read: plain fixed-size records, so nothing is ever
unpickled. Each record is the label byte(s) then 3,072 pixel bytes (1,024 red,
1,024 green, 1,024 blue, each a row-major 32x32 plane). CIFAR-100 records carry
two label bytes: coarse (20 superclasses) then fine (100 classes). The archive
is read as a stream; nothing is extracted to disk.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from jaxcnn.data.dataset import Dataset, DatasetInfo, Split
from jaxcnn.data.errors import DataError, DataFormatError
from jaxcnn.data.locate import fetch_official_files

_PIXELS = 3 * 32 * 32

# archive name, train members, test member, class-name member per label mode
_LAYOUT = {
    "cifar10": {
        "archive": "cifar-10-binary.tar.gz",
        "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
        "test": ["test_batch.bin"],
        "names": {"fine": "batches.meta.txt"},
        "label_bytes": 1,
    },
    "cifar100": {
        "archive": "cifar-100-binary.tar.gz",
        "train": ["train.bin"],
        "test": ["test.bin"],
        "names": {"fine": "fine_label_names.txt", "coarse": "coarse_label_names.txt"},
        "label_bytes": 2,
    },
}


def _read_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Bytes of the archive members whose base names are in ``wanted``."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in wanted:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataFormatError(f"{archive}: not a readable .tar.gz ({error})") from error
    missing = sorted(wanted - set(found))
    if missing:
        raise DataFormatError(
            f"{archive}: missing member(s) {missing}; is it the official binary version?"
        )
    return found


def _records_to_split(blobs: list[tuple[str, bytes]], label_bytes: int, label_index: int) -> Split:
    record = label_bytes + _PIXELS
    arrays = []
    for member, blob in blobs:
        if len(blob) == 0 or len(blob) % record:
            raise DataFormatError(
                f"{member}: {len(blob):,} bytes is not a whole number of {record}-byte records"
            )
        arrays.append(np.frombuffer(blob, np.uint8).reshape(-1, record))
    records = np.concatenate(arrays)
    # Planes (C, H, W) -> NHWC, the layout every model here takes.
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), records[:, label_index].astype(np.int32))


def read_cifar_archive(path, name: str = "cifar10", label_mode: str = "fine"):
    """Read an official CIFAR binary archive into ``(train, test, class_names)``.

    Args:
        path: ``cifar-10-binary.tar.gz`` or ``cifar-100-binary.tar.gz`` (not checked
            here; :func:`load_cifar_dataset` verifies the checksum first).
        name: ``"cifar10"`` or ``"cifar100"``.
        label_mode: CIFAR-100 only: ``"fine"`` (100 classes) or ``"coarse"`` (20).

    Returns:
        ``(train Split, test Split, class names tuple)``.

    Raises:
        DataFormatError: the archive is unreadable, lacks a member, or a member is not
            whole records.
    """
    layout = _LAYOUT[name]
    if label_mode not in layout["names"]:
        raise DataError(f"label_mode={label_mode!r} for {name}; valid: {sorted(layout['names'])}")
    names_member = layout["names"][label_mode]
    members = _read_members(Path(path), {*layout["train"], *layout["test"], names_member})
    # CIFAR-100 puts the coarse label first, the fine label second.
    label_index = 0 if (layout["label_bytes"] == 1 or label_mode == "coarse") else 1
    splits = [
        _records_to_split(
            [(m, members[m]) for m in layout[part]], layout["label_bytes"], label_index
        )
        for part in ("train", "test")
    ]
    class_names = tuple(
        line.strip() for line in members[names_member].decode("ascii").splitlines() if line.strip()
    )
    return splits[0], splits[1], class_names


def load_cifar_dataset(
    name: str,
    data_dir=None,
    *,
    label_mode: str = "fine",
    download: bool = True,
    mirrors=None,
    verify_checksums: bool = True,
    timeout: float = 60.0,
) -> Dataset:
    """Load ``cifar10`` or ``cifar100`` from the official binary archive.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: searched first (see :mod:`jaxcnn.data.locate`).
        label_mode: CIFAR-100 only: ``"fine"`` (100 classes) or ``"coarse"`` (20).
        download: fetch the archive from the mirrors when missing (~170 MB).
        mirrors: base URLs replacing the default mirror list.
        verify_checksums: check the archive's SHA-256 before reading it.
        timeout: socket timeout per URL, seconds.

    Returns:
        The dataset: 50,000 train and 10,000 test images ``(32, 32, 3)``.
    """
    if name == "cifar10" and label_mode != "fine":
        raise DataError(f"label_mode={label_mode!r} applies to cifar100 only; cifar10 has 'fine'")
    modes = sorted(_LAYOUT[name]["names"]) if name in _LAYOUT else None
    if modes is not None and label_mode not in modes:  # before any file is looked for
        raise DataError(f"label_mode={label_mode!r} for {name}; valid: {modes}")
    paths, checks = fetch_official_files(
        name,
        data_dir,
        download=download,
        mirrors=mirrors,
        verify_checksums=verify_checksums,
        timeout=timeout,
    )
    archive = paths[_LAYOUT[name]["archive"]]
    train, test, class_names = read_cifar_archive(archive, name, label_mode)
    status = "verified" if verify_checksums else "skipped"
    info = DatasetInfo("official binary archive", str(archive.parent), status, checks)
    return Dataset(name, train, test, None, class_names, info)
