"""``jaxcnn evaluate``: test metrics and confusion matrix of a training workdir.

Examples::

    jaxcnn evaluate --workdir runs/digits                 # best checkpoint, test split
    jaxcnn evaluate --workdir runs/digits --checkpoint latest --split validation
    jaxcnn evaluate --workdir runs/cifar_fast --tta none  # without test-time augmentation
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxcnn.commands import arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn evaluate",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True, help="a directory `jaxcnn train` wrote")
    parser.add_argument(
        "--checkpoint",
        type=arguments.checkpoint,
        default="best",
        help="'best' (default), 'latest' or a step number",
    )
    parser.add_argument("--split", default="test", choices=("test", "validation", "train"))
    parser.add_argument(
        "--batch-size", type=arguments.at_least(0), default=0, help="0: the config's eval size"
    )
    parser.add_argument(
        "--tta",
        # jaxcnn.train.tta.TTA_MODES, spelled out: importing it loads jax, which would
        # make --help take 1.7 s instead of 0.03 s.
        choices=("none", "flip", "translate", "flip_translate"),
        default=None,
        help="test-time augmentation (default: the run's config.eval_tta)",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxcnn evaluate``; returns the exit status."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from jaxcnn.train import restore
    from jaxcnn.train.evaluation import evaluate_restored

    try:
        restored = restore(args.workdir, args.checkpoint)
        report = evaluate_restored(restored, args.split, args.batch_size, tta=args.tta)
    except (OSError, ValueError) as error:  # DataError is a ValueError
        print(f"jaxcnn evaluate: error: {error}", file=sys.stderr)
        return 1
    if args.split == "validation" and not restored.config.get("validation_split", 0.0):
        # evaluate_restored falls back to the test split; say so rather than relabel it.
        print(
            "jaxcnn evaluate: this run held out no validation split (config.validation_split "
            "= 0): these are the test images",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(report.metrics))
        return 0
    print(f"checkpoint: {restored.checkpoint_path} (epoch {restored.epoch}, step {restored.step})")
    print(f"test-time augmentation: {report.tta}")
    for name, value in report.metrics.items():
        print(f"{name}: {value:.4f}")
    print(f"confusion matrix ({args.split}, rows: true class, columns: predicted):")
    print(report.format_confusion())
    return 0


if __name__ == "__main__":
    sys.exit(main())
