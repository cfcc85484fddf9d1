"""``jaxcnn augment``: write a PNG grid of augmented samples so a person can look.

Each row is one training image: the original on the left, then augmented copies,
each drawn with its own key.

Example::

    $ jaxcnn augment --dataset digits --out grid.png --rotation 30 --crop-padding 1
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.commands import arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn augment", description="Write a PNG grid of augmented training samples."
    )
    parser.add_argument(
        "--dataset", default="digits", help="any name jaxcnn.data.load takes (default digits)"
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument(
        "--rows", type=arguments.at_least(1), default=6, help="training images shown (default 6)"
    )
    parser.add_argument(
        "--columns",
        type=arguments.at_least(1),
        default=7,
        help="augmented copies per image (default 7)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    parser.add_argument("--crop-padding", type=int, default=0)
    # augment.CROP_MODES and FLIP_MODES, spelled out: importing them loads jax, which
    # would slow --help (tests/test_data_commands.py holds them equal).
    parser.add_argument("--crop-mode", choices=("zeros", "reflect"), default=None)
    parser.add_argument("--flip", action="store_true")
    parser.add_argument(
        "--flip-mode",
        choices=("random", "alternate"),
        default=None,
        help="alternate: column k shows epoch k-1 (each image mirrored every other epoch)",
    )
    parser.add_argument("--rotation", type=float, default=0.0, help="max degrees")
    parser.add_argument("--translate", type=float, default=0.0, help="max fraction of size")
    parser.add_argument("--cutout", type=int, default=0, help="square side, pixels")
    parser.add_argument("--brightness", type=float, default=0.0)
    parser.add_argument("--contrast", type=float, default=0.0)
    return parser


def main(argv: list[str]) -> int:
    """Run ``jaxcnn augment``; returns the exit status."""
    import numpy as np

    from jaxcnn.data import DataError, load
    from jaxcnn.viz import plot_augmentation_preview

    args = build_parser().parse_args(argv)
    spec = {
        "crop_padding": args.crop_padding,
        "flip": args.flip,
        "rotation": args.rotation,
        "translate": args.translate,
        "cutout": args.cutout,
        "brightness": args.brightness,
        "contrast": args.contrast,
    }
    # Only when given, so the figure's title lists just what was switched on.
    for key in ("crop_mode", "flip_mode"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    try:
        dataset = load(args.dataset, args.data_dir)
    except DataError as error:
        print(f"jaxcnn augment: {error}", file=sys.stderr)
        return 1
    # One example of each class first, so the rows show different things; then the
    # next images in order, when more rows are asked for than there are classes.
    labels = dataset.train.labels
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    taken = set(firsts)
    rest = [i for i in range(len(labels)) if i not in taken]
    picks = (firsts + rest)[: args.rows]
    try:
        # The same grid helper the report and the kernel demos use.
        plot_augmentation_preview(
            dataset.train.images[picks],
            spec,
            num_variants=args.columns,
            seed=args.seed,
            path=args.out,
        )
    except ValueError as error:
        print(f"jaxcnn augment: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(picks)} images x ({args.columns} augmented copies + original)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
