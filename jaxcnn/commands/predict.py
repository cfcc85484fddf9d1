"""``jaxcnn predict``: top-k classes of image files with a trained model.

Example::

    jaxcnn predict --workdir runs/mnist digit.png other.png --top-k 3
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn.commands import arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--workdir", required=True, help="a directory `jaxcnn train` wrote")
    parser.add_argument(
        "--checkpoint",
        type=arguments.checkpoint,
        default="best",
        help="'best' (default), 'latest' or a step number",
    )
    parser.add_argument(
        "--top-k", type=arguments.at_least(1), default=3, help="classes per image (default 3)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxcnn predict``; returns the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from jaxcnn.train import restore
    from jaxcnn.train.predict import predict_files

    try:
        restored = restore(args.workdir, args.checkpoint)
        predictions = predict_files(restored, args.images, args.top_k)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"jaxcnn predict: error: {error}", file=sys.stderr)
        return 1
    for prediction in predictions:
        ranked = ", ".join(
            f"{name} {probability:.3f}"
            for name, probability in zip(prediction.classes, prediction.probabilities, strict=True)
        )
        print(f"{prediction.path}: {ranked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
