"""``jaxcnn shapes``: output shape, receptive field and worked formula per layer.

Pure Python (no JAX import), so it answers instantly::

    $ jaxcnn shapes --input 32x32x3 conv:32,k=3,s=2 pool:2 conv:64,k=3,p=same
"""

from __future__ import annotations

import argparse
import sys

from jaxcnn import shapes

_EPILOG = """\
layers (one argument each; values are one int, or one per axis joined by x):
  conv:F[,K][,k=K][,s=S][,p=P][,d=D]    flax.linen.Conv with F output channels;
                                        defaults k=3 s=1 p=0 d=1 (nn.Conv itself
                                        defaults to p=same: write it when you mean it)
  pool:W[,S][,s=S][,p=P]                max / avg / sum pooling with window W;
                                        stride defaults to the window here (as in
                                        most CNNs; nn.max_pool's own default is 1)
  convt:F[,K][,k=K][,s=S][,p=P][,d=D]   flax.linen.ConvTranspose; default p=same
  (aliases: c, maxpool, avgpool, sumpool, deconv)

padding P: an int (both sides), lo:hi, one entry per axis joined by x (1x0:1), or a
mode: valid, same, same_lower, circular, reflect, causal (1-D conv only).

--input: spatial sizes then channels, joined by x: 28x28x1 (2-D), 100x1 (1-D),
16x64x64x1 (3-D).

receptive field (rf) columns, per axis: size of the input patch one output pixel
sees, jump (input pixels between neighbouring outputs) and start (input
coordinate of the first output's centre; pixel centres are 0, 1, ...).

examples:
  jaxcnn shapes --input 32x32x3 conv:1,k=3,s=2
  jaxcnn shapes --input 32x32x3 conv:32,3 pool:2 conv:64,k=3,p=same
  jaxcnn shapes --input 224x224x3 conv:64,k=7,s=2,p=same pool:3,2,p=same
  jaxcnn shapes --input 100x1 conv:8,k=5,d=2,p=causal
  jaxcnn shapes --input 8x8x16 convt:8,k=3,s=2
"""

_KINDS = {
    "conv": "conv",
    "c": "conv",
    "pool": "pool",
    "maxpool": "pool",
    "avgpool": "pool",
    "sumpool": "pool",
    "convt": "conv_transpose",
    "deconv": "conv_transpose",
}
_KEYS = {
    "conv": {"f": "features", "k": "kernel", "s": "stride", "p": "padding", "d": "dilation"},
    "conv_transpose": {
        "f": "features",
        "k": "kernel",
        "s": "stride",
        "p": "padding",
        "d": "dilation",
    },
    "pool": {"w": "kernel", "s": "stride", "p": "padding"},
}
_POSITIONAL = {
    "conv": ("features", "kernel"),
    "conv_transpose": ("features", "kernel"),
    "pool": ("kernel", "stride"),
}
_LONG_KEYS = {"kernel": "k", "stride": "s", "padding": "p", "dilation": "d", "window": "w"}


class UsageError(ValueError):
    """Bad command-line text; reported in one line, exit status 2."""


def _ints(text: str, what: str):
    """``"3"`` -> 3, ``"3x5"`` -> (3, 5)."""
    parts = text.split("x")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise UsageError(f"{what}={text!r} is not an integer or NxM (e.g. 3 or 3x5)") from None
    return values[0] if len(values) == 1 else values


def parse_padding(text: str, rank: int, what: str = "p"):
    """``same`` -> 'SAME'; ``1`` -> 1; ``0:1`` -> that pair on every axis; ``1x0:1`` per axis.

    Examples:
        >>> parse_padding("same", 2), parse_padding("0:1", 2), parse_padding("1x0:1", 2)
        ('SAME', [(0, 1), (0, 1)], [1, (0, 1)])
    """
    if text.upper() in shapes.CONV_PADDING_MODES:
        return text.upper()
    entries = []
    for part in text.split("x"):
        lo, colon, hi = part.partition(":")
        try:
            entries.append((int(lo), int(hi)) if colon else int(lo))
        except ValueError:
            raise UsageError(
                f"{what}={text!r} is not a padding: give an int, lo:hi, entries joined by x, or "
                f"one of {', '.join(m.lower() for m in shapes.CONV_PADDING_MODES)}"
            ) from None
    if len(entries) == 1:
        return entries[0] if isinstance(entries[0], int) else [entries[0]] * rank
    return entries


def parse_shape(text: str) -> tuple[tuple[int, ...], int]:
    """``"32x32x3"`` -> ``((32, 32), 3)``: spatial sizes, then channels."""
    values = _ints(text, "--input")
    if isinstance(values, int) or len(values) < 2:
        raise UsageError(
            f"--input={text!r} needs spatial sizes and channels, e.g. 32x32x3 or 100x1"
        )
    if values[-1] < 1:
        raise UsageError(f"--input={text!r}: channels={values[-1]}; valid: an int >= 1")
    return values[:-1], values[-1]


def _fill(kind: str, args: dict, rest: str, rank: int) -> None:
    """Read ``rest`` ("32,k=3,s=2") into ``args``: positional values first, then keys."""
    positional = list(_POSITIONAL[kind])
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            if not positional:
                raise UsageError(f"too many values without a name ({item!r})")
            key, value = positional.pop(0), item
        else:
            key = _KEYS[kind].get(_LONG_KEYS.get(key, key))
            if key is None:
                valid = ", ".join(f"{k}=" for k in _KEYS[kind])
                raise UsageError(f"unknown key in {item!r}; valid: {valid}")
            if key in positional:
                positional.remove(key)
        if key in args:
            # conv:32,k=3,k=5 would otherwise silently take the last one.
            raise UsageError(f"{key} given twice (in {item!r})")
        args[key] = parse_padding(value, rank) if key == "padding" else _ints(value, key)


def parse_layer(text: str, rank: int) -> tuple[str, dict]:
    """``"conv:32,k=3,s=2"`` -> ``("conv", {"features": 32, "kernel": 3, "stride": 2})``."""
    name, _, rest = text.partition(":")
    kind = _KINDS.get(name.lower())
    if kind is None:
        raise UsageError(f"layer {text!r}: unknown type {name!r}; valid: {', '.join(_KINDS)}")
    args: dict = {"padding": "SAME"} if kind == "conv_transpose" else {}
    try:
        _fill(kind, args, rest, rank)
    except UsageError as err:
        raise UsageError(f"layer {text!r}: {err}") from None
    if kind != "pool" and "features" not in args:
        raise UsageError(f"layer {text!r}: give the output channels first, e.g. {name}:32,k=3")
    features = args.get("features", 1)
    if not isinstance(features, int) or features < 1:
        raise UsageError(f"layer {text!r}: output channels {features!r}; valid: one int >= 1")
    if "kernel" not in args:
        if kind == "pool":
            raise UsageError(f"layer {text!r}: give the window, e.g. pool:2")
        args["kernel"] = 3
    if kind == "pool":
        args.setdefault("stride", args["kernel"])
        args.setdefault("padding", "VALID")
    return kind, args


def _fmt(values) -> str:
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _spec(kind: str, args: dict):
    if kind == "conv":
        return shapes.ConvSpec(
            args["kernel"], args.get("stride", 1), args.get("padding", 0), args.get("dilation", 1)
        )
    return shapes.PoolSpec(args["kernel"], args["stride"], args["padding"])


def _formula_lines(kind: str, args: dict, spatial) -> list[str]:
    text = shapes.explain(
        spatial,
        args["kernel"],
        args.get("stride", 1),
        args.get("padding", 0),
        args.get("dilation", 1),
        operation=kind,
    )
    per_axis = [[] for _ in spatial]
    for line in text.splitlines():
        label, _, rest = line.partition(": ")
        per_axis[int(label.split()[1])].append(rest)
    if all(lines == per_axis[0] for lines in per_axis):  # say it once when all axes agree
        return per_axis[0]
    return [f"axis {i}: {line}" for i, lines in enumerate(per_axis) for line in lines]


def run(input_text: str, layer_texts: list[str], formulas: bool = True) -> list[str]:
    """The report's lines; raises ``UsageError`` / ``ValueError`` on bad input."""
    spatial, channels = parse_shape(input_text)
    # (size, jump, start) of the stack so far; None once a transposed conv breaks it.
    field = ((1,) * len(spatial), (1,) * len(spatial), (0,) * len(spatial))
    rows = [("#", "layer", "output", "rf size", "jump", "start")]
    label = f"input ({len(spatial)}-D, {channels} channel{'s' if channels != 1 else ''})"
    rows.append(("", label, _fmt((*spatial, channels)), *(_fmt(v) for v in field)))
    notes: list[list[str]] = [[]]
    for index, text in enumerate(layer_texts, start=1):
        kind, args = parse_layer(text, len(spatial))
        try:
            lines = _formula_lines(kind, args, spatial)
            if kind == "conv_transpose":
                stride, dilation = args.get("stride", 1), args.get("dilation", 1)
                out = shapes.conv_transpose_output_shape(
                    spatial, args["kernel"], stride, args["padding"], dilation
                )
                field = None
            else:
                (rf,) = shapes.receptive_field([_spec(kind, args)], spatial)
                out = rf.output_shape
                if field is not None:  # compose this layer's field with the stack's so far
                    size, jump, start = field
                    field = (
                        tuple(a + (b - 1) * j for a, b, j in zip(size, rf.size, jump, strict=True)),
                        tuple(j * b for j, b in zip(jump, rf.jump, strict=True)),
                        tuple(s + b * j for s, b, j in zip(start, rf.start, jump, strict=True)),
                    )
        except ValueError as err:
            raise ValueError(f"layer {index} ({text}) on input {_fmt(spatial)}: {err}") from None
        channels = args.get("features", channels)
        rf_cols = ("-", "-", "-") if field is None else tuple(_fmt(v) for v in field)
        rows.append((str(index), text, _fmt((*out, channels)), *rf_cols))
        notes.append(lines if formulas else [])
        spatial = out
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    report = []
    for row, row_notes in zip(rows, [[], *notes], strict=True):  # the header has no notes
        report.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
        report.extend(" " * (widths[0] + 2) + "  " + note for note in row_notes)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcnn shapes",
        description="Per layer of a CNN: output shape, receptive field and the worked formula "
        "(exactly what flax.linen produces; no JAX needed).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, metavar="SHAPE", help="e.g. 32x32x3")
    parser.add_argument("layers", nargs="+", metavar="LAYER", help="e.g. conv:32,k=3,s=2")
    parser.add_argument("--no-formula", action="store_true", help="hide the formulas")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxcnn shapes``; returns the exit status (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the error
        return int(exit_.code or 0)
    try:
        lines = run(args.input, args.layers, formulas=not args.no_formula)
    except ValueError as err:
        print(f"jaxcnn shapes: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
