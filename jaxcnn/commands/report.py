"""``jaxcnn report WORKDIR``: write WORKDIR/report.html for a training workdir.

Example::

    $ jaxcnn report runs/digits
    wrote runs/digits/report.html
    $ jaxcnn report runs/digits --images docs/images   # also each picture as a PNG
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.commands import arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn report",
        description="Write one self-contained report.html (config, model table, curves, "
        "diagnosis, confusion matrix, mistakes, filters, feature maps) into a training workdir.",
    )
    parser.add_argument("workdir", help="directory written by `jaxcnn train`")
    parser.add_argument(
        "--which",
        choices=("best", "latest"),
        default="best",
        help="checkpoint to show (default best)",
    )
    parser.add_argument(
        "--feature-images",
        type=arguments.at_least(0),
        default=3,
        help="test images with feature maps (default 3)",
    )
    parser.add_argument(
        "--max-misclassified",
        type=arguments.at_least(0),
        default=24,
        help="mistakes shown (default 24)",
    )
    parser.add_argument(
        "--images", metavar="DIR", help="also write every picture of the page as a PNG into DIR"
    )
    return parser


def main(argv: list[str]) -> int:
    """Run the command; returns the exit status (2 for a bad workdir or option)."""
    args = _parser().parse_args(argv)
    from jaxcnn.report import write_report

    try:
        path = write_report(
            args.workdir,
            which=args.which,
            num_feature_images=args.feature_images,
            max_misclassified=args.max_misclassified,
            image_dir=args.images,
        )
    except FileNotFoundError as error:  # no such workdir: failed, as evaluate says it
        print(f"jaxcnn report: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"jaxcnn report: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
