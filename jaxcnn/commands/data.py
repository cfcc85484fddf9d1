"""``jaxcnn data NAME``: load a dataset and print what was found and verified.

Example::

    $ jaxcnn data mnist --data-dir ../shared/data --no-download
    $ jaxcnn data folder:photos --option image_size=64 --option color_mode=grayscale
"""

from __future__ import annotations

import argparse
import ast
import sys

import numpy as np


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option expects key=value; got {text!r}")
    try:
        return key, ast.literal_eval(value)  # numbers, tuples, True/False
    except (ValueError, SyntaxError):
        return key, value  # a plain string


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn data", description="Load a dataset; print counts, checksums and classes."
    )
    parser.add_argument(
        "name",
        help="digits, mnist, fashion_mnist, kmnist, cifar10, cifar100, "
        "tfds:<name> or folder:<path>",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="searched first (then $JAXCNN_DATA_DIR, then ~/.cache/jaxcnn)",
    )
    parser.add_argument("--no-download", action="store_true", help="never use the network")
    parser.add_argument("--validation-split", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a source option, e.g. image_size=64",
    )
    return parser


def describe(dataset) -> str:
    """The report printed by the command, as text."""
    info = dataset.info
    lines = [
        f"dataset   {dataset.name}",
        f"source    {info.source}",
        f"location  {info.location}",
        f"checksums {info.checksum_status}",
    ]
    for check in info.files:
        lines.append(f"  {check.status:<22} {check.sha256 or '-'}  {check.path}")
    height, width, channels = dataset.image_shape
    lines.append(f"images    {height}x{width}x{channels} uint8, {dataset.num_classes} classes")
    for split_name, split in dataset.splits().items():
        counts = split.class_counts(dataset.num_classes)
        lines.append(
            f"{split_name:<10} {len(split):>7,} examples; per class min {counts.min():,}"
            f" max {counts.max():,}"
        )
    width_name = max(len(c) for c in dataset.class_names)
    lines.append(
        "classes   " + " ".join(f"{i}:{c}" for i, c in enumerate(dataset.class_names))
        if width_name * dataset.num_classes < 400
        else f"classes   {dataset.num_classes}"
    )
    mean = dataset.train.images.reshape(-1, channels).mean(axis=0, dtype=np.float64) / 255
    lines.append("train mean " + ", ".join(f"{m:.4f}" for m in mean) + " (per channel, [0, 1])")
    lines += [f"note      {note}" for note in info.notes]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run ``jaxcnn data``; returns the exit status (1 when loading failed)."""
    from jaxcnn.data import DataError, load

    args = build_parser().parse_args(argv)
    options = dict(args.option)
    if args.no_download and not args.name.lower().startswith(("folder:", "digits")):
        options["download"] = False
    try:
        dataset = load(
            args.name,
            args.data_dir,
            validation_split=args.validation_split,
            seed=args.seed,
            **options,
        )
    except DataError as error:
        print(f"jaxcnn data: {error}", file=sys.stderr)
        # A plain DataError is a bad argument (bad usage); its subclasses are failures
        # (not found, checksum, format, download).
        return 2 if type(error) is DataError else 1
    print(describe(dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
