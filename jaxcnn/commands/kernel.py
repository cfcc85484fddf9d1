"""``jaxcnn kernel NAME [IMAGE]``: apply a classic image kernel, write a before/after PNG.

IMAGE is an image file, or a built-in sample that needs no download:

* ``digit`` / ``digit:N`` -- example N of the embedded 8x8 digits (scikit-learn's);
* ``china``, ``flower`` -- the two photos scikit-learn ships;
* ``grace_hopper`` -- the portrait matplotlib ships.

NAME is a built-in kernel (``--list`` shows them) or a custom one written as
rows separated by ``;``: ``"0,-1,0;-1,5,-1;0,-1,0"``.

Examples::

    $ jaxcnn kernel sobel_x china --gray --out docs/images/kernel_sobel_x.png
    $ jaxcnn kernel "1,0,-1;1,0,-1;1,0,-1" digit:3 --padding VALID --out custom.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from jaxcnn.commands import shapes as shapes_command

SAMPLES = ("digit", "china", "flower", "grace_hopper")


def load_sample(name: str) -> np.ndarray:
    """A built-in sample image as uint8 ``(H, W)`` or ``(H, W, 3)``.

    Args:
        name: ``digit``, ``digit:N``, ``china``, ``flower`` or ``grace_hopper``.

    Returns:
        The image.

    Examples:
        >>> load_sample("digit:0").shape
        (8, 8)
    """
    base, _, index = name.partition(":")
    if base == "digit":
        from sklearn.datasets import load_digits

        digits = load_digits().images  # (1797, 8, 8), values 0..16
        try:
            number = int(index or 0)
        except ValueError:
            raise ValueError(f"sample {name!r}: N in digit:N must be an int") from None
        if not 0 <= number < len(digits):
            raise ValueError(f"sample {name!r}: N must be in [0, {len(digits)})")
        return np.round(digits[number] * 255 / 16).astype(np.uint8)
    if index:
        raise ValueError(f"sample {name!r}: only digit takes an index (digit:N)")
    if base in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{base}.jpg")
    if base == "grace_hopper":
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as handle:
            return np.asarray(Image.open(handle).convert("RGB"))
    raise ValueError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)} (or a file path)")


def load_image(source: str) -> np.ndarray:
    """An image file (grey stays grey, anything else becomes RGB) or a sample name."""
    path = Path(source)
    if not path.exists():
        return load_sample(source)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            return np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError) as error:  # a folder, an unreadable file
        raise ValueError(f"IMAGE {source!r} is not an image file PIL can read ({error})") from None


def parse_kernel(text: str):
    """A kernel name, or rows ``"a,b,c;d,e,f;..."`` parsed into a float array.

    Examples:
        >>> parse_kernel("0,1;1,0").tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    if ";" not in text and "," not in text:
        return text  # a name; kernels.get validates it
    from jaxcnn import kernels

    try:
        rows = [[float(v) for v in row.split(",")] for row in text.strip().split(";")]
    except ValueError:
        raise ValueError(f"kernel {text!r}: rows are ';'-separated lists of numbers") from None
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"kernel {text!r}: every row needs the same number of values")
    return kernels.custom(rows)


def parse_padding(text: str):
    """As ``jaxcnn shapes`` reads ``p=``: ``same`` -> ``"SAME"``, ``2`` -> 2, ``1:2`` -> that
    (lo, hi) pair on both axes, ``1x0:1`` per axis."""
    return shapes_command.parse_padding(text, 2, what="--padding")


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB image (as PIL's ``convert("L")``), float32."""
    if image.ndim == 2:
        return image.astype(np.float32)
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return image[..., :3].astype(np.float32) @ weights


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn kernel",
        description="Apply a classic image kernel (cross-correlation, as in a conv layer) and "
        "write a before | kernel | after PNG.",
    )
    parser.add_argument("name", nargs="?", help="kernel name or rows like '0,-1,0;-1,5,-1;0,-1,0'")
    parser.add_argument(
        "image",
        nargs="?",
        default="china",
        help=f"image file or sample: {', '.join(SAMPLES)} (default china)",
    )
    parser.add_argument(
        "--out", default="before_after.png", help="PNG to write (default before_after.png)"
    )
    parser.add_argument("--stride", type=int, default=1, help="stride (default 1)")
    parser.add_argument(
        "--padding",
        default="SAME",
        help="SAME (default), VALID, REFLECT, CIRCULAR, an int, lo:hi, or per axis joined by x "
        "(1x0:1)",
    )
    parser.add_argument(
        "--channels",
        choices=("separate", "sum"),
        default="separate",
        help="RGB: filter each channel (separate, default) or one filter summed over channels",
    )
    parser.add_argument("--gray", action="store_true", help="convert the image to grey first")
    parser.add_argument("--list", action="store_true", help="list the built-in kernels and exit")
    return parser


def main(argv: list[str]) -> int:
    """Run the command; returns the exit status (2 for bad input)."""
    args = _parser().parse_args(argv)
    from jaxcnn import kernels

    if args.list:
        width = max(map(len, kernels.names()))
        for name in kernels.names():
            print(f"{name.ljust(width)}  {kernels.describe(name)}")
        return 0
    if args.name is None:
        print("jaxcnn kernel: give a kernel NAME (see --list)", file=sys.stderr)
        return 2
    from jaxcnn import viz

    try:
        kernel = parse_kernel(args.name)
        image = load_image(args.image)
        if args.gray:
            image = to_gray(image)
        viz.plot_kernel_demo(
            image,
            kernel,
            stride=args.stride,
            padding=parse_padding(args.padding),
            channels=args.channels,
            kernel_name=args.name if isinstance(kernel, str) else "custom",
            path=args.out,
        )
    except ValueError as error:
        print(f"jaxcnn kernel: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
