"""``jaxcnn summary MODEL --input 224x224x3``: the layer table of a zoo model.

Everything is traced abstractly (``jax.eval_shape``), so even VGG-16 at 224x224
prints in about a second and allocates no weights.

Examples::

    $ jaxcnn summary mnist_cnn --input 28x28x1
    $ jaxcnn summary resnet18 --input 224x224x3 --num-classes 10
    $ jaxcnn summary mnist_cnn --input 28x28x1 --kwarg padding='"SAME"' --compare-dense
    $ jaxcnn summary vgg16 --input 224x224x3 --json
"""

from __future__ import annotations

import argparse
import json
import sys


def _kwarg(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--kwarg {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as padding=SAME


def _parser() -> argparse.ArgumentParser:
    from jaxcnn import models

    parser = argparse.ArgumentParser(
        prog="jaxcnn summary",
        description="Print the layer table (output shape, parameters, FLOPs, receptive field) "
        "of a zoo model.",
    )
    parser.add_argument("model", help=f"zoo model: {', '.join(models.names())}")
    parser.add_argument(
        "--input",
        required=True,
        help="one example's shape without batch, e.g. 28x28x1 or 224x224x3",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs (default: the model's own)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="traced batch (default 1)")
    parser.add_argument("--dtype", default=None, help="computation dtype, e.g. bfloat16")
    parser.add_argument(
        "--kwarg",
        type=_kwarg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra model argument, VALUE as JSON (repeatable)",
    )
    parser.add_argument(
        "--compare-dense",
        action="store_true",
        help="also print the dense-vs-conv first-layer parameter comparison",
    )
    parser.add_argument("--json", action="store_true", help="print rows and totals as JSON")
    return parser


def main(argv: list[str]) -> int:
    """Runs ``jaxcnn summary``; returns the exit status."""
    from jaxcnn import models
    from jaxcnn.model_summary import parameter_explosion, parse_input_shape, summary

    args = _parser().parse_args(argv)
    kwargs = dict(args.kwarg)
    try:
        shape = parse_input_shape(args.input)
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        if args.dtype is not None:
            kwargs["dtype"] = args.dtype
        try:  # the zoo's builders take in_channels; a user-registered one may not
            model = models.get(args.model, **{"in_channels": shape[-1], **kwargs})
        except ValueError as error:
            if "unknown arguments ['in_channels']" not in str(error):
                raise
            model = models.get(args.model, **kwargs)
        table = summary(model, shape, batch_size=args.batch_size)
    except ValueError as error:
        print(f"jaxcnn summary: {error}", file=sys.stderr)
        return 2
    if args.json:
        payload = {
            "model": args.model,
            "input_shape": list(table.input_shape),
            "output_shape": list(table.output_shape),
            "rows": table.as_dicts(),
            "trainable_params": table.trainable_params,
            "non_trainable_params": table.non_trainable_params,
            "trainable_bytes": table.trainable_bytes,
            "flops": table.flops,
        }
        print(json.dumps(payload, indent=1))
    else:
        print(table)
    if args.compare_dense:
        print()
        print(parameter_explosion(shape, model=model))
    return 0
