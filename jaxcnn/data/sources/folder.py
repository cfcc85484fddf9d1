"""``folder:<path>``: a user's own images, one subfolder per class.

Two layouts are accepted (like Keras ``image_dataset_from_directory`` and
torchvision ``ImageFolder``)::

    PATH/<class>/*.jpg                      one pool; a seeded test_split is carved out
    PATH/train/<class>/*.jpg                explicit splits; PATH/test/ (and
    PATH/test/<class>/*.jpg                 PATH/validation/ or PATH/val/) optional

Class names are the sorted subfolder names of the (train) pool. Files ending in
.jpg/.jpeg/.png/.bmp/.gif (any case) are read; everything else is ignored. Images
are converted to RGB or grayscale and resized (bilinear) to ``image_size``.

Decoding runs in a process pool, and the decoded arrays are cached as an
uncompressed ``.npz`` (plain arrays, no pickle) keyed by a hash of the file
list, sizes, modification times and options, written atomically: the second load
of 60,000 small JPEGs takes a fraction of a second.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import numbers
import os
import secrets
import time
import warnings
from pathlib import Path

import numpy as np

from jaxcnn.data.dataset import Dataset, DatasetInfo, Split, is_count, split_off_test
from jaxcnn.data.errors import DataError, DataFormatError, DatasetNotFoundError
from jaxcnn.data.locate import data_roots

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_CACHE_FORMAT = 1  # bump when the cached content or decoding changes
_SERIAL_BELOW = 2000  # fewer files than this: a process pool costs more than it saves
_SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


def _image_files(class_dir: Path) -> list[Path]:
    """Every image file under ``class_dir``, subfolders included (as torchvision's
    ``ImageFolder`` and Keras read them); hidden files and folders are skipped."""
    found = []
    for folder, subfolders, files in os.walk(class_dir, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [
            Path(folder, name)
            for name in files
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        ]
    return sorted(found)


def _class_dirs(pool: Path) -> list[Path]:
    return sorted(p for p in pool.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(
    root: str | os.PathLike,
) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, int]]]]:
    """List a folder dataset's files without decoding them.

    Args:
        root: the dataset folder (either layout, see the module docstring).

    Returns:
        ``(class_names, {split: [(file, label), ...]})``; the split names present are
        ``"train"`` and possibly ``"validation"`` and ``"test"``.

    Raises:
        DatasetNotFoundError: ``root`` is missing or has no class subfolders.
        DataFormatError: a class folder holds no image file, or a split has a class
            the train split lacks.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"folder dataset {root} does not exist or is not a directory")
    pools = {}
    if (root / "train").is_dir() and _class_dirs(root / "train"):
        for split, folder_names in _SPLIT_FOLDERS.items():
            present = [root / n for n in folder_names if (root / n).is_dir()]
            if present:
                pools[split] = present[0]
    elif (root / "train").is_dir() and _image_files(root / "train"):
        # Otherwise "train" and "test" would become two classes labelled by split.
        raise DataFormatError(
            f"{root / 'train'} holds images but no class subfolders; expected "
            f"{root}/train/<class>/*.jpg (and {root}/test/<class>/*.jpg), or "
            f"{root}/<class>/*.jpg with no split folders"
        )
    else:
        pools["train"] = root
    class_names = tuple(p.name for p in _class_dirs(pools["train"]))
    if not class_names:
        raise DatasetNotFoundError(
            f"{pools['train']} has no class subfolders; expected {root}/<class>/*.jpg "
            f"or {root}/train/<class>/*.jpg"
        )
    listing = {}
    for split, pool in pools.items():
        entries = []
        for class_dir in _class_dirs(pool):
            if class_dir.name not in class_names:
                raise DataFormatError(
                    f"{class_dir}: class {class_dir.name!r} is not among the train classes "
                    f"{list(class_names)}"
                )
            files = _image_files(class_dir)
            if not files:
                raise DataFormatError(
                    f"class folder {class_dir} holds no image file "
                    f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images"
                )
            label = class_names.index(class_dir.name)
            entries += [(f, label) for f in files]
        listing[split] = entries
    return class_names, listing


def decode_image(path, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """Decode one image file to uint8 ``(H, W, C)``, converted and resized (bilinear).

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.NamedTemporaryFile(suffix=".png") as f:
        ...     Image.new("RGB", (5, 3), (255, 0, 0)).save(f.name)
        ...     decode_image(f.name, (2, 4), grayscale=False).shape
        (2, 4, 3)
    """
    from PIL import Image

    with Image.open(path) as image:  # GIFs: the first frame
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit (and 32-bit integer) greyscale: PIL's convert would clip at 255,
            # leaving a nearly white image; keep the top 8 of 16 bits instead.
            wide = np.asarray(image, dtype=np.uint32) >> 8
            image = Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8))  # mode L
        image = image.convert("L" if grayscale else "RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if grayscale else array


def _decode_chunk(paths: list[str], size, grayscale: bool):
    """Decode ``paths`` into one array; unreadable ones become zeros and are reported."""
    images = np.zeros((len(paths), *size, 1 if grayscale else 3), np.uint8)
    failures = []
    for i, path in enumerate(paths):
        try:
            images[i] = decode_image(path, size, grayscale)
        except Exception as error:  # noqa: BLE001 - PIL raises many types; each is reported
            failures.append((i, f"{type(error).__name__}: {error}"))
    return images, failures


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _decode_all(paths: list[str], size, grayscale: bool, workers: int):
    if workers <= 1 or len(paths) < _SERIAL_BELOW:
        return _decode_chunk(paths, size, grayscale), 1
    bounds = np.linspace(0, len(paths), workers * 4 + 1).astype(int)
    chunks = [paths[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    try:
        # "spawn": forking a process that runs JAX's threads can deadlock.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            results = list(
                pool.map(_decode_chunk, chunks, [size] * len(chunks), [grayscale] * len(chunks))
            )
    except (concurrent.futures.process.BrokenProcessPool, RuntimeError) as error:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A spawned worker still importing a script that has no __main__ guard (the
            # flag multiprocessing itself checks to raise this error): let that error end
            # the worker here, before it runs the rest of the user's script (training!);
            # the parent sees a broken pool and decodes serially.
            raise
        warnings.warn(
            f"decoding in {workers} processes failed ({error}); decoding serially. A script "
            "that loads a folder needs an `if __name__ == '__main__':` guard to use processes.",
            RuntimeWarning,
            stacklevel=3,
        )
        return _decode_chunk(paths, size, grayscale), 1
    images = np.concatenate([r[0] for r in results])
    failures = [
        (int(a) + i, msg) for a, r in zip(bounds[:-1], results, strict=True) for i, msg in r[1]
    ]
    return (images, failures), workers


def _check_folder_options(image_size, color_mode, test_split, split_seed, skip_bad, cache, workers):
    """Every option, before a file is read (a typo must not wait for the decoding)."""
    if color_mode not in ("rgb", "grayscale"):
        raise DataError(f"color_mode must be 'rgb' or 'grayscale'; got {color_mode!r}")
    if image_size is not None:
        pair = (image_size, image_size) if is_count(image_size, 1) else image_size
        try:
            good = len(pair) == 2 and all(is_count(side, 1) for side in pair)
        except TypeError:  # not a sequence
            good = False
        if not good:
            raise DataError(
                f"image_size must be a positive int or (height, width); got {image_size!r}"
            )
    if (
        isinstance(test_split, bool)
        or not isinstance(test_split, numbers.Real)
        or not 0 < test_split < 1
    ):
        raise DataError(
            f"test_split must be a fraction in (0, 1) (used when there is no test/ folder); "
            f"got {test_split!r}"
        )
    if not is_count(split_seed, 0):
        raise DataError(f"split_seed must be a non-negative int; got {split_seed!r}")
    for name, value in (("skip_bad", skip_bad), ("cache", cache)):
        if not isinstance(value, bool):
            raise DataError(f"{name} must be True or False; got {value!r}")
    if workers is not None and not is_count(workers, 1):
        raise DataError(f"workers must be None (every usable core) or an int >= 1; got {workers!r}")


def _target_size(listing, image_size) -> tuple[int, int]:
    if image_size is not None:
        if is_count(image_size, 1):
            return int(image_size), int(image_size)
        return tuple(int(s) for s in image_size)
    from PIL import Image

    for path, _ in listing["train"]:  # the first readable image sets the size
        try:
            with Image.open(path) as image:
                return image.size[1], image.size[0]
        except Exception:  # noqa: BLE001, S112 - reported later by the decoder
            continue
    raise DataFormatError(f"no readable image in {listing['train'][0][0].parent.parent}")


def _cache_key(root: Path, listing, size, grayscale: bool) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([_CACHE_FORMAT, str(root.resolve()), size, grayscale]).encode())
    for split, entries in sorted(listing.items()):
        for path, label in entries:
            stat = path.stat()
            digest.update(
                f"{split}|{path.relative_to(root)}|{label}|{stat.st_size}|"
                f"{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    try:
        with open(tmp, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_folder_dataset(
    path,
    data_dir=None,
    *,
    image_size=None,
    color_mode: str = "rgb",
    test_split: float = 0.2,
    split_seed: int = 0,
    skip_bad: bool = False,
    cache: bool = True,
    cache_dir=None,
    workers: int | None = None,
) -> Dataset:
    """Load a folder of class subfolders of images.

    Args:
        path: the dataset folder (see the module docstring for the two layouts).
        data_dir: root whose ``folder_cache/`` holds the decoded-array cache
            (default: the first of ``data_dir``, ``$JAXCNN_DATA_DIR``, ``~/.cache/jaxcnn``).
        image_size: ``int`` or ``(height, width)``; default: the size of the first image.
        color_mode: ``"rgb"`` (3 channels) or ``"grayscale"`` (1 channel).
        test_split: share carved out as test when there is no ``test/`` folder.
        split_seed: seed of that carve-out (independent of ``load``'s ``seed``).
        skip_bad: skip unreadable files with one warning instead of raising.
        cache: read/write the decoded arrays from/to the cache.
        cache_dir: where cache files go (overrides ``data_dir``).
        workers: decoding processes; default: the usable CPU cores.

    Returns:
        The dataset; ``info.notes`` says how it was decoded or that the cache was used.

    Raises:
        DataFormatError: an unreadable image (named by path) without ``skip_bad``, an
            empty class folder, or a class the train split lacks.

    Examples:
        >>> ds = load_folder_dataset("photos", image_size=64)  # doctest: +SKIP
    """
    _check_folder_options(image_size, color_mode, test_split, split_seed, skip_bad, cache, workers)
    root = Path(path).expanduser()
    class_names, listing = scan_folder(root)
    size = _target_size(listing, image_size)
    grayscale = color_mode == "grayscale"
    cache_root = Path(cache_dir) if cache_dir else data_roots(data_dir)[0] / "folder_cache"
    label = root.resolve().name or "root"  # "folder:." names the folder, not "."
    cache_file = cache_root / f"{label}-{_cache_key(root, listing, size, grayscale)[:24]}.npz"
    notes = []
    if cache and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        notes.append(f"decoded arrays read from cache {cache_file}")
        _refuse_unreadable(arrays, root, skip_bad)  # the cache may come from a skip_bad run
    else:
        arrays = _decode_listing(listing, size, grayscale, workers, notes)
        _refuse_unreadable(arrays, root, skip_bad)
        if cache:
            try:
                _save_atomically(cache_file, arrays)
                notes.append(f"decoded arrays cached in {cache_file}")
            except OSError as error:  # a read-only data dir: the load itself still works
                warnings.warn(
                    f"could not write the decoded-array cache ({error}); pass cache_dir= "
                    "or cache=False",
                    UserWarning,
                    stacklevel=2,
                )
                notes.append("not cached (the cache folder is not writable)")
    if len(arrays["skipped"]):
        warnings.warn(
            f"skipped {len(arrays['skipped'])} unreadable image file(s) under {root} "
            f"(skip_bad=True), first: {arrays['skipped'][0]}",
            UserWarning,
            stacklevel=2,
        )
        notes.append(f"skipped {len(arrays['skipped'])} unreadable file(s)")
    splits = {
        s: Split(arrays[f"{s}_images"], arrays[f"{s}_labels"])
        for s in ("train", "validation", "test")
        if f"{s}_images" in arrays
    }
    if "test" not in splits:
        splits["train"], splits["test"] = split_off_test(splits["train"], test_split, split_seed)
        notes.append(f"no test/ folder: test is a seeded {test_split:.0%} of the images")
    info = DatasetInfo("image folder", str(root), "not applicable", notes=tuple(notes))
    return Dataset(
        f"folder:{label}",
        splits["train"],
        splits["test"],
        splits.get("validation"),
        class_names,
        info,
    )


def _refuse_unreadable(arrays: dict[str, np.ndarray], root: Path, skip_bad: bool) -> None:
    bad = [str(p) for p in arrays["skipped"]]
    if bad and not skip_bad:
        shown = "\n  ".join(
            f"{p}: {why}" for p, why in zip(bad[:5], arrays["reasons"][:5], strict=True)
        )
        raise DataFormatError(
            f"{len(bad)} unreadable image file(s) under {root}:\n  {shown}\n"
            "Fix or delete them, or pass skip_bad=True to skip them."
        )


def _decode_listing(listing, size, grayscale, workers, notes) -> dict[str, np.ndarray]:
    paths = [str(p) for entries in listing.values() for p, _ in entries]
    started = time.perf_counter()
    (images, failures), used = _decode_all(paths, size, grayscale, workers or _usable_cpus())
    notes.append(
        f"decoded {len(paths):,} images in {time.perf_counter() - started:.1f} s "
        f"({used} process{'es' if used > 1 else ''})"
    )
    keep = np.ones(len(paths), bool)
    keep[[i for i, _ in failures]] = False
    arrays = {
        "skipped": np.array([paths[i] for i, _ in failures], dtype=str),
        "reasons": np.array([why for _, why in failures], dtype=str),
    }
    start = 0
    for split, entries in listing.items():
        stop = start + len(entries)
        labels = np.array([label for _, label in entries], np.int32)
        arrays[f"{split}_images"] = images[start:stop][keep[start:stop]]
        arrays[f"{split}_labels"] = labels[keep[start:stop]]
        start = stop
    return arrays
