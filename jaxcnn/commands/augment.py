"""``jaxcnn augment``: write a PNG grid of augmented samples so a person can look.

Each row is one training image: the original on the left, then augmented copies,
each drawn with its own key.

Example::

    $ jaxcnn augment --dataset digits --out grid.png --rotation 30 --crop-padding 1
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn augment", description="Write a PNG grid of augmented training samples."
    )
    parser.add_argument("--dataset", default="digits", help="any name jaxcnn.data.load takes")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--rows", type=int, default=6, help="training images shown")
    parser.add_argument("--columns", type=int, default=7, help="augmented copies per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-padding", type=int, default=0)
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--rotation", type=float, default=0.0, help="max degrees")
    parser.add_argument("--translate", type=float, default=0.0, help="max fraction of size")
    parser.add_argument("--cutout", type=int, default=0, help="square side, pixels")
    parser.add_argument("--brightness", type=float, default=0.0)
    parser.add_argument("--contrast", type=float, default=0.0)
    return parser


def augmented_grid(images_uint8, spec, columns: int, seed: int):
    """``(rows, 1 + columns, H, W, C)`` float images: originals then augmented copies."""
    import jax
    import jax.numpy as jnp

    from jaxcnn.data import augment

    fn = jax.jit(augment.build(spec))
    originals = jnp.asarray(images_uint8, jnp.float32) / 255.0
    keys = jax.random.split(jax.random.key(seed), columns)
    copies = [fn(key, originals) for key in keys]
    return jnp.stack([originals, *copies], axis=1)


def main(argv: list[str]) -> int:
    """Run ``jaxcnn augment``; returns the exit status."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt
    import numpy as np

    from jaxcnn.data import DataError, load

    args = build_parser().parse_args(argv)
    if args.rows < 1 or args.columns < 1:
        print("jaxcnn augment: --rows and --columns must be >= 1", file=sys.stderr)
        return 2
    spec = {
        "crop_padding": args.crop_padding,
        "flip": args.flip,
        "rotation": args.rotation,
        "translate": args.translate,
        "cutout": args.cutout,
        "brightness": args.brightness,
        "contrast": args.contrast,
    }
    try:
        dataset = load(args.dataset, args.data_dir)
    except DataError as error:
        print(f"jaxcnn augment: {error}", file=sys.stderr)
        return 1
    # One example of each class first, so the rows show different things.
    labels = dataset.train.labels
    picks = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][: args.rows]
    try:
        grid = np.asarray(
            augmented_grid(dataset.train.images[picks], spec, args.columns, args.seed)
        )
    except ValueError as error:
        print(f"jaxcnn augment: {error}", file=sys.stderr)
        return 2
    rows, columns = grid.shape[:2]
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.5), squeeze=False
    )
    grayscale = grid.shape[-1] == 1
    for r in range(rows):
        for c in range(columns):
            image = grid[r, c, ..., 0] if grayscale else grid[r, c]
            axes[r, c].imshow(
                np.clip(image, 0, 1),
                cmap="gray" if grayscale else None,
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            axes[r, c].set_axis_off()
    axes[0, 0].set_title("original", fontsize=8)
    active = {k: v for k, v in spec.items() if v}
    figure.suptitle(f"{dataset.name}: {active or 'no augmentation'}", fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    plt.close(figure)
    print(f"wrote {args.out}: {rows} images x ({columns - 1} augmented copies + original)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
