"""Output-size arithmetic for convolution, pooling and transposed convolution.

Pure Python: this module imports neither JAX nor anything else of jaxcnn, so
it answers "what shape comes out?" before anything is run. Every answer equals
what ``flax.linen.Conv``, ``flax.linen.ConvTranspose`` and the ``flax.linen``
pooling functions really produce (the tests hold it against ``jax.eval_shape``
on thousands of random configurations).

Along one spatial axis of size ``n``, with kernel ``k``, stride ``s``,
dilation ``d`` and padding ``(lo, hi)``::

    out = floor((n + lo + hi - d*(k-1) - 1) / s) + 1

Padding is an int (both sides), a ``(lo, hi)`` pair per axis, or a mode. With
``span = d*(k-1) + 1``, the pads of a convolution or pool are:

- ``VALID``: ``(0, 0)``.
- ``SAME``: total ``t = max((ceil(n/s)-1)*s + span - n, 0)``, split
  ``(t//2, t - t//2)``: the extra pixel goes at the end. Output ``ceil(n/s)``.
- ``SAME_LOWER``: the same total, the extra pixel at the start (conv, pools).
- ``CIRCULAR`` / ``REFLECT``: Flax wraps / mirrors ``((span-1)//2, span//2)``
  pixels itself, then runs VALID (conv only; CIRCULAR also for ConvTranspose).
- ``CAUSAL``: ``(span - 1, 0)``, 1-D conv only.

Pools take VALID, SAME and SAME_LOWER; ConvTranspose takes VALID, SAME and
CIRCULAR with its own arithmetic (see ``conv_transpose_output_shape``).
``lax`` upper-cases ``SAME``/``VALID``/``SAME_LOWER`` for Conv and the pools, so
any case works there; Flax compares ``CIRCULAR``, ``REFLECT``, ``CAUSAL`` and
every ConvTranspose mode verbatim, so those must be upper case, and this module
insists on the same.

Examples:
    >>> conv_output_shape((32, 32), kernel=3, stride=2)
    (15, 15)
    >>> print(explain(32, 3, stride=2))
    floor((32 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 15
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "CONV_PADDING_MODES",
    "CONV_TRANSPOSE_PADDING_MODES",
    "POOL_PADDING_MODES",
    "ConvSpec",
    "PaddingComparison",
    "PoolSpec",
    "ReceptiveField",
    "conv_output_shape",
    "conv_output_size",
    "conv_transpose_output_shape",
    "explain",
    "pool_output_shape",
    "receptive_field",
    "resolve_padding",
    "same_padding",
    "same_vs_symmetric",
    "symmetric_padding",
]

CONV_PADDING_MODES = ("VALID", "SAME", "SAME_LOWER", "CIRCULAR", "REFLECT", "CAUSAL")
POOL_PADDING_MODES = ("VALID", "SAME", "SAME_LOWER")
CONV_TRANSPOSE_PADDING_MODES = ("VALID", "SAME", "CIRCULAR")
_MODES = {
    "conv": CONV_PADDING_MODES,
    "pool": POOL_PADDING_MODES,
    "conv_transpose": CONV_TRANSPOSE_PADDING_MODES,
}
# Modes that reach lax.padtype_to_pads, which upper-cases them; Flax itself
# compares the other names with `==`, so "circular" fails inside Flax.
_ANY_CASE = {"conv": {"VALID", "SAME", "SAME_LOWER"}, "pool": set(POOL_PADDING_MODES)}
_KERNEL_WORD = {"conv": "kernel", "pool": "window", "conv_transpose": "kernel"}

Pair = tuple[int, int]


# --------------------------------------------------------------------------- validation
def _integer(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools, floats and strings are refused."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
        )
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _is_sequence(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _spatial(spatial_shape, name: str = "spatial_shape") -> tuple[int, ...]:
    if not _is_sequence(spatial_shape) or len(spatial_shape) == 0:
        raise ValueError(
            f"{name} must be a non-empty sequence of sizes such as (32, 32), got {spatial_shape!r}"
        )
    return tuple(_integer(f"{name}[{i}]", n, 1) for i, n in enumerate(spatial_shape))


def _per_axis(name: str, value, rank: int, minimum: int = 1) -> tuple[int, ...]:
    """One int for every axis, or one int per axis (a sequence of length ``rank``)."""
    if not _is_sequence(value):
        return (_integer(name, value, minimum),) * rank
    if len(value) != rank:
        raise ValueError(
            f"{name}={tuple(value)!r} has {len(value)} values but the input has {rank} "
            f"spatial axes; give one int or {rank} ints"
        )
    return tuple(_integer(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))


def _pair(name: str, value) -> Pair:
    if not _is_sequence(value) or len(value) != 2:
        raise ValueError(
            f"{name} must be an int or a (lo, hi) pair of 2 ints, got {value!r}"
            + (f" with {len(value)} values" if _is_sequence(value) else "")
        )
    return (_integer(f"{name}[0] (lo)", value[0], 0), _integer(f"{name}[1] (hi)", value[1], 0))


def _mode(padding: str, operation: str) -> str:
    modes = _MODES[operation]
    upper = padding.upper()
    if upper not in modes:
        raise ValueError(
            f"padding={padding!r} is not a padding mode of {operation}; "
            f"valid modes: {', '.join(modes)}, an int, or (lo, hi) pairs"
        )
    if upper != padding and upper not in _ANY_CASE.get(operation, ()):
        # ConvTranspose: only the exact strings reach lax.conv_transpose's own rule;
        # other spellings fall through to a plain convolution's padding ('valid' then
        # gives n - span + 1 at stride 1) or fail at stride > 1.
        raise ValueError(
            f"padding={padding!r}: Flax compares this mode case-sensitively "
            f"for {operation} (another spelling fails or means something else); "
            f"write padding={upper!r}"
        )
    return upper


def _padding(padding, rank: int, operation: str) -> str | tuple[Pair, ...]:
    """A canonical mode string or one ``(lo, hi)`` pair per axis (Flax's rules)."""
    if isinstance(padding, str):
        mode = _mode(padding, operation)
        if mode == "CAUSAL" and rank != 1:
            raise ValueError(
                f"padding='CAUSAL' is only implemented for 1-D convolutions (as in Flax), "
                f"but the input has {rank} spatial axes"
            )
        return mode
    if not _is_sequence(padding):
        if isinstance(padding, bool) or not hasattr(type(padding), "__index__"):
            raise ValueError(
                f"padding must be an integer >= 0, a (lo, hi) pair per axis or a mode "
                f"({', '.join(_MODES[operation])}), got {padding!r} ({type(padding).__name__})"
            )
        p = _integer("padding", padding, 0)
        return ((p, p),) * rank
    if len(padding) != rank:
        raise ValueError(
            f"padding={padding!r} has {len(padding)} entries but the input has {rank} spatial "
            f"axes; give an int, a mode ({', '.join(_MODES[operation])}) or {rank} entries, "
            "each an int or a (lo, hi) pair"
        )
    pads = []
    for i, entry in enumerate(padding):
        if _is_sequence(entry):
            pads.append(_pair(f"padding[{i}]", entry))
        else:
            p = _integer(f"padding[{i}]", entry, 0)
            pads.append((p, p))
    return tuple(pads)


# --------------------------------------------------------------------------- one axis
def _span(kernel: int, dilation: int) -> int:
    """Pixels one dilated kernel covers: ``d*(k-1) + 1``."""
    return dilation * (kernel - 1) + 1


def _same_total(size: int, span: int, stride: int) -> int:
    # lax.padtype_to_pads: the output is ceil(n/s); pad just enough for it.
    return max((-(-size // stride) - 1) * stride + span - size, 0)


def _axis_pads(mode, size: int, kernel: int, stride: int, dilation: int, operation: str) -> Pair:
    """Explicit pads of one axis; for conv_transpose, the pads lax puts around
    the stride-dilated input (``jax.lax.conv_transpose``'s convention)."""
    if not isinstance(mode, str):
        return mode
    span = _span(kernel, dilation)
    if operation == "conv_transpose":
        if mode == "SAME":  # jax.lax.convolution._conv_transpose_padding
            total = span + stride - 2
            lo = span - 1 if stride > span - 1 else -(-total // 2)
        else:  # VALID, and CIRCULAR before Flax wraps the result
            total = span + stride - 2 + max(span - stride, 0)
            lo = span - 1
        return (lo, total - lo)
    if mode == "VALID":
        return (0, 0)
    if mode in ("SAME", "SAME_LOWER"):
        total = _same_total(size, span, stride)
        small, large = total // 2, total - total // 2
        return (small, large) if mode == "SAME" else (large, small)
    if mode in ("CIRCULAR", "REFLECT"):  # flax.linen.Conv pads the input itself
        return ((span - 1) // 2, span // 2)
    return (span - 1, 0)  # CAUSAL


def _axis_output(mode, pads: Pair, size, kernel, stride, dilation, operation, where="") -> int:
    """Output size of one axis, or a ValueError that says why it is below 1."""
    lo, hi = pads
    span = _span(kernel, dilation)
    word = _KERNEL_WORD[operation]
    spans = f"{word} {kernel}" + (f" with dilation {dilation}" if dilation != 1 else "")
    if operation == "conv_transpose":
        if mode == "CIRCULAR":  # Flax sums the result periodically onto size*stride pixels
            return size * stride
        dilated = (size - 1) * stride + 1 + lo + hi
        if dilated < span:
            raise ValueError(
                f"{where}output size below 1: {spans} spans {span} pixels but the stride-dilated, "
                f"padded input has {dilated} (({size}-1)*{stride} + 1 + {lo} + {hi})"
            )
        return dilated - span + 1
    padded = size + lo + hi
    if padded < span:
        raise ValueError(
            f"{where}output size below 1: {spans} spans {span} pixels but the padded input has "
            f"{padded} (size {size} + padding {lo} + {hi})"
        )
    return (padded - span) // stride + 1


# --------------------------------------------------------------------------- N-D shapes
class _Axis(NamedTuple):
    """One spatial axis of one layer, its padding already made explicit."""

    mode: str | Pair  # the mode string, or the explicit pair it came as
    pads: Pair
    size: int
    kernel: int
    stride: int
    dilation: int

    @property
    def span(self) -> int:
        return _span(self.kernel, self.dilation)


def _resolve(spatial_shape, kernel, stride, padding, dilation, operation):
    shape = _spatial(spatial_shape)
    rank = len(shape)
    kernels = _per_axis(_KERNEL_WORD[operation], kernel, rank)
    strides = _per_axis("stride", 1 if stride is None else stride, rank)
    dilations = _per_axis("dilation", 1 if dilation is None else dilation, rank)
    mode = _padding(padding, rank, operation)
    axes = []
    for axis, (n, k, s, d) in enumerate(zip(shape, kernels, strides, dilations, strict=True)):
        axis_mode = mode if isinstance(mode, str) else mode[axis]
        axes.append(_Axis(axis_mode, _axis_pads(axis_mode, n, k, s, d, operation), n, k, s, d))
    return axes


def _shape(spatial_shape, kernel, stride, padding, dilation, operation) -> tuple[int, ...]:
    axes = _resolve(spatial_shape, kernel, stride, padding, dilation, operation)
    where = (lambda i: f"axis {i}: ") if len(axes) > 1 else (lambda i: "")
    return tuple(_axis_output(*axis, operation, where(i)) for i, axis in enumerate(axes))


def conv_output_shape(spatial_shape, kernel, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """Spatial output shape of ``flax.linen.Conv`` (any number of spatial axes).

    Args:
      spatial_shape: input sizes without batch and channel axes, e.g. ``(32, 32)``.
      kernel: kernel size, one int for all axes or one per axis.
      stride: stride, int or per axis.
      padding: int, one entry per axis (an int or a ``(lo, hi)`` pair), or a mode
        from ``CONV_PADDING_MODES``. The default 0 is the textbook ``VALID``;
        note that ``nn.Conv`` itself defaults to ``'SAME'``.
      dilation: kernel dilation (``kernel_dilation`` in Flax), int or per axis.

    Returns:
      The output sizes, one per spatial axis.

    Examples:
      >>> conv_output_shape((32, 32), 3, stride=2, padding="SAME")
      (16, 16)
      >>> conv_output_shape((28, 28, 8), (5, 5, 3), padding=[2, 2, (0, 1)])
      (28, 28, 7)
    """
    return _shape(spatial_shape, kernel, stride, padding, dilation, "conv")


def conv_output_size(size, kernel, stride=1, padding=0, dilation=1) -> int:
    """One axis of a convolution: ``floor((n + lo + hi - d*(k-1) - 1) / s) + 1``.

    Args:
      size: input size ``n``.
      kernel: kernel size ``k``.
      stride: stride ``s``.
      padding: an int (both sides), a ``(lo, hi)`` pair or a mode string.
      dilation: kernel dilation ``d``.

    Returns:
      The output size.

    Examples:
      >>> conv_output_size(32, 3, stride=2)
      15
      >>> conv_output_size(32, 3, stride=2, padding=(0, 1))
      16
    """
    _integer("size", size, 1)
    _integer("kernel", kernel, 1)
    if _is_sequence(padding):
        padding = [_pair("padding", padding)]
    return conv_output_shape((size,), kernel, stride, padding, dilation)[0]


def pool_output_shape(spatial_shape, window, stride=None, padding="VALID") -> tuple[int, ...]:
    """Spatial output shape of ``nn.max_pool`` / ``nn.avg_pool`` / ``nn.pooling.pool``.

    Args:
      spatial_shape: input sizes without batch and channel axes.
      window: window size, int or per axis (``window_shape`` in Flax).
      stride: stride, int or per axis. ``None`` means 1, as in Flax (not the
        window, as in PyTorch).
      padding: ``'VALID'``, ``'SAME'``, ``'SAME_LOWER'`` or per-axis pads. Flax's
        pools take only ``(lo, hi)`` pairs; ints are accepted here for
        convenience (``resolve_padding`` turns them into pairs).

    Returns:
      The output sizes, one per spatial axis.

    Examples:
      >>> pool_output_shape((32, 32), 2, stride=2)
      (16, 16)
      >>> pool_output_shape((5, 5), (2, 2))  # stride None -> 1
      (4, 4)
    """
    return _shape(spatial_shape, window, stride, padding, 1, "pool")


def conv_transpose_output_shape(
    spatial_shape, kernel, stride=1, padding="SAME", dilation=1
) -> tuple[int, ...]:
    """Spatial output shape of ``flax.linen.ConvTranspose`` (``jax.lax.conv_transpose``).

    ``SAME`` gives ``n*s``; ``VALID`` gives ``n*s + max(kd - s, 0)``; ``CIRCULAR``
    gives ``n*s``; explicit pads are the pads of the *transposed* convolution,
    put around the stride-dilated input: ``(n-1)*s + 1 + lo + hi - d*(k-1)``.
    (PyTorch's ``ConvTranspose(padding=p, output_padding=q)`` has the output size
    of explicit pads ``(d*(k-1) - p, d*(k-1) - p + q)`` here.)

    Args:
      spatial_shape: input sizes without batch and channel axes.
      kernel: kernel size, int or per axis.
      stride: stride, int or per axis.
      padding: ``'SAME'`` (Flax's default), ``'VALID'``, ``'CIRCULAR'``, an int or
        per-axis ints / ``(lo, hi)`` pairs.
      dilation: kernel dilation, int or per axis.

    Returns:
      The output sizes, one per spatial axis.

    Examples:
      >>> conv_transpose_output_shape((8, 8), 3, stride=2)
      (16, 16)
      >>> conv_transpose_output_shape((8,), 3, stride=2, padding="VALID")
      (17,)
    """
    return _shape(spatial_shape, kernel, stride, padding, dilation, "conv_transpose")


def resolve_padding(
    padding, spatial_shape, kernel, stride=1, dilation=1, *, operation="conv"
) -> tuple[Pair, ...]:
    """Explicit ``(lo, hi)`` pads per axis for any accepted padding form.

    Passing the result back as ``padding`` gives the same output shape (and,
    for every mode but ``CIRCULAR``/``REFLECT``, the same numbers, since those two
    pad with wrapped or mirrored pixels rather than zeros).

    Args:
      padding: int, per-axis ints or pairs, or a mode string.
      spatial_shape: input sizes without batch and channel axes.
      kernel: kernel (or pool window) size, int or per axis.
      stride: stride, int or per axis (``None`` means 1).
      dilation: kernel dilation, int or per axis (must be 1 for pools).
      operation: ``'conv'``, ``'pool'`` or ``'conv_transpose'``; for the last, the
        pads lax puts around the stride-dilated input.

    Returns:
      One ``(lo, hi)`` pair per spatial axis.

    Examples:
      >>> resolve_padding("SAME", (32, 32), 3, stride=2)
      ((0, 1), (0, 1))
      >>> resolve_padding("CAUSAL", (10,), 3, dilation=2)
      ((4, 0),)
    """
    if operation not in _MODES:
        raise ValueError(f"operation={operation!r} is not one of {', '.join(_MODES)}")
    if operation == "pool":
        _integer("dilation", dilation, 1)
        if dilation != 1:
            raise ValueError(f"dilation={dilation!r}: Flax's pools have no dilation; use 1")
    if operation == "conv_transpose" and isinstance(padding, str) and padding == "CIRCULAR":
        raise ValueError(
            "padding='CIRCULAR' of a transposed convolution is no zero padding: Flax wraps the "
            "VALID result periodically onto size*stride pixels; use conv_transpose_output_shape"
        )
    axes = _resolve(spatial_shape, kernel, stride, padding, dilation, operation)
    return tuple(axis.pads for axis in axes)


# --------------------------------------------------------------------------- SAME vs PyTorch
def same_padding(size, kernel, stride=1, dilation=1) -> Pair:
    """The ``(lo, hi)`` split XLA uses for ``'SAME'``: the extra pixel goes at the end.

    Args:
      size: input size.
      kernel: kernel size.
      stride: stride.
      dilation: kernel dilation.

    Returns:
      ``(lo, hi)`` with ``hi - lo`` in ``{0, 1}``.

    Examples:
      >>> same_padding(32, 3, stride=2)
      (0, 1)
      >>> same_padding(224, 7, stride=2)  # ResNet's stem: PyTorch uses (3, 3)
      (2, 3)
    """
    return resolve_padding("SAME", (size,), kernel, stride, dilation)[0]


def symmetric_padding(kernel, dilation=1) -> Pair:
    """The symmetric padding PyTorch users write: ``p = d*(k-1)//2`` on both sides.

    For odd kernels this is ``k//2`` (``nn.Conv2d(..., padding=k//2)``) and keeps
    the size at stride 1. It ignores the input size and stride, which is why
    it can differ from ``same_padding`` (see ``same_vs_symmetric``).

    Args:
      kernel: kernel size.
      dilation: kernel dilation.

    Returns:
      ``(p, p)``.

    Examples:
      >>> symmetric_padding(7)
      (3, 3)
    """
    p = (_span(_integer("kernel", kernel, 1), _integer("dilation", dilation, 1)) - 1) // 2
    return (p, p)


@dataclass(frozen=True)
class PaddingComparison:
    """``same_padding`` next to ``symmetric_padding`` for one axis.

    Attributes:
      same: XLA's ``'SAME'`` pads.
      symmetric: PyTorch-style ``(p, p)``.
      same_output: output size under ``same``.
      symmetric_output: output size under ``symmetric``.
      shift: ``symmetric[0] - same[0]``: how many pixels later every window
        starts under SAME.
      identical: True when both give the same numbers for the same weights.
      reason: one sentence saying why.
    """

    same: Pair
    symmetric: Pair
    same_output: int
    symmetric_output: int
    shift: int
    identical: bool
    reason: str


def same_vs_symmetric(size, kernel, stride=1, dilation=1) -> PaddingComparison:
    """Does XLA's ``'SAME'`` give what PyTorch's symmetric ``padding=k//2`` gives?

    SAME pads ``t = d*(k-1) - (n-1) % s`` in total (never less than 0), extra
    pixel at the end. For an odd span ``d*(k-1)+1`` the output sizes always
    agree (``ceil(n/s)``), but the pads agree only when ``(n - 1) % s == 0``:
    otherwise every SAME window starts ``shift`` pixels later and weights ported
    between the frameworks silently give different numbers (flax#2993, a
    ResNet stem; keras#19291, a stride-2 3x3 conv). Even spans cannot be
    padded symmetrically at all. Whether the total pad is odd or even does not
    decide it: ``n=31, k=7, s=4`` pads ``(2, 2)`` against ``(3, 3)``.

    Args:
      size: input size.
      kernel: kernel size.
      stride: stride.
      dilation: kernel dilation.

    Returns:
      A ``PaddingComparison``.

    Examples:
      >>> same_vs_symmetric(32, 3, stride=2).identical
      False
      >>> same_vs_symmetric(33, 3, stride=2).identical
      True
    """
    same = same_padding(size, kernel, stride, dilation)
    sym = symmetric_padding(kernel, dilation)
    same_out = conv_output_size(size, kernel, stride, same, dilation)
    span, padded = _span(kernel, dilation), size + sum(sym)
    sym_out = (padded - span) // stride + 1 if padded >= span else 0  # 0: nothing left
    shift = sym[0] - same[0]
    if same_out != sym_out:
        reason = (
            f"output sizes differ: SAME {same} gives {same_out}, symmetric {sym} gives {sym_out} "
            f"(span {span} is even, so no symmetric padding keeps ceil(n/s))"
        )
    elif shift:
        reason = (
            f"same output size {same_out}, but SAME pads {same} and symmetric pads {sym}: every "
            f"SAME window starts {shift} pixel(s) later, so ported weights give different "
            f"numbers ((size-1) % stride = ({size}-1) % {stride} = {(size - 1) % stride}, not 0)"
        )
    else:
        reason = f"identical: both pad {same[0]} before and give {same_out}"
    identical = shift == 0 and same_out == sym_out
    return PaddingComparison(same, sym, same_out, sym_out, shift, identical, reason)


# --------------------------------------------------------------------------- explain
def _formula(mode, pads, n, k, s, d, operation) -> str:
    lo, hi = pads
    pad_text = f"2*{lo}" if lo == hi else f"{lo} + {hi}"
    out = _axis_output(mode, pads, n, k, s, d, operation)
    if operation == "conv_transpose":
        if mode == "CIRCULAR":
            return f"CIRCULAR: Flax wraps the output onto size*stride = {n}*{s} = {out}"
        return f"({n}-1)*{s} + 1 + {lo} + {hi} - {d}*({k}-1) = {out}"
    span = f"{d}*({k}-1) - 1" if operation == "conv" else f"{k}"
    return f"floor(({n} + {pad_text} - {span}) / {s}) + 1 = {out}"


def _mode_line(mode, pads, n, k, s, d, operation) -> str:
    span = _span(k, d)
    if operation == "conv_transpose":
        return f"{mode}: lax.conv_transpose dilates the input by the stride and pads it {pads}" + (
            ", then Flax wraps the result" if mode == "CIRCULAR" else ""
        )
    if mode in ("SAME", "SAME_LOWER"):
        total = _same_total(n, span, s)
        where = "end" if mode == "SAME" else "start"
        # Only an odd total leaves a pixel over; an even one splits evenly.
        extra = f" (extra pixel at the {where})" if total % 2 else ""
        return (
            f"{mode}: total pad max((ceil({n}/{s}) - 1)*{s} + {span} - {n}, 0) = {total}, "
            f"split {pads}{extra}"
        )
    if mode in ("CIRCULAR", "REFLECT"):
        how = "wraps" if mode == "CIRCULAR" else "mirrors"
        return f"{mode}: Flax {how} ((span-1)//2, span//2) = {pads} pixels, span {span}"
    return f"CAUSAL: {d}*({k}-1) = {pads[0]} zeros before, none after"


def explain(size, kernel, stride=1, padding=0, dilation=1, *, operation="conv") -> str:
    """The derivation of an output size with the numbers in it, for a learner.

    Args:
      size: one input size, or a spatial shape (one block of lines per axis).
      kernel: kernel (or pool window) size, int or per axis.
      stride: stride, int or per axis (``None`` means 1).
      padding: as in ``conv_output_shape`` (or the pool/transpose functions).
      dilation: kernel dilation, int or per axis.
      operation: ``'conv'``, ``'pool'`` or ``'conv_transpose'``.

    Returns:
      Lines of text; the last line of each axis ends in ``= output``.

    Examples:
      >>> print(explain(32, 3, stride=2))
      floor((32 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 15
      >>> print(explain((32, 31), 3, stride=2, padding="SAME"))
      axis 0: SAME: total pad max((ceil(32/2) - 1)*2 + 3 - 32, 0) = 1, split (0, 1) (extra pixel at the end)
      axis 0: floor((32 + 0 + 1 - 1*(3-1) - 1) / 2) + 1 = 16
      axis 1: SAME: total pad max((ceil(31/2) - 1)*2 + 3 - 31, 0) = 2, split (1, 1)
      axis 1: floor((31 + 2*1 - 1*(3-1) - 1) / 2) + 1 = 16
    """  # noqa: E501
    if operation not in _MODES:
        raise ValueError(f"operation={operation!r} is not one of {', '.join(_MODES)}")
    if operation == "pool":
        dilation = 1
    single = not _is_sequence(size)
    if single and _is_sequence(padding):
        padding = [_pair("padding", padding)]
    shape = (size,) if single else size
    _shape(shape, kernel, stride, padding, dilation, operation)  # raise on bad input first
    lines = []
    for axis, (mode, pads, n, k, s, d) in enumerate(
        _resolve(shape, kernel, stride, padding, dilation, operation)
    ):
        prefix = "" if single else f"axis {axis}: "
        # A conv's VALID shows as 2*0 in the formula; a transpose's VALID pads do need saying.
        if isinstance(mode, str) and (mode != "VALID" or operation == "conv_transpose"):
            lines.append(prefix + _mode_line(mode, pads, n, k, s, d, operation))
        lines.append(prefix + _formula(mode, pads, n, k, s, d, operation))
    return "\n".join(lines)


# --------------------------------------------------------------------------- receptive field
def _check_spec_values(name: str, value, minimum: int) -> None:
    if _is_sequence(value):
        if len(value) == 0:
            raise ValueError(f"{name} must be an int or a non-empty sequence of ints, got ()")
        for i, v in enumerate(value):
            _integer(f"{name}[{i}]", v, minimum)
    else:
        _integer(name, value, minimum)


def _freeze(spec) -> None:
    """Lists become tuples, so specs stay hashable like the frozen dataclasses they are."""
    for field in ("kernel", "window", "stride", "padding", "dilation"):
        value = getattr(spec, field, None)
        if _is_sequence(value):
            frozen = tuple(tuple(v) if _is_sequence(v) else v for v in value)
            object.__setattr__(spec, field, frozen)


def _check_padding_form(padding, operation: str) -> None:
    if isinstance(padding, str):
        _mode(padding, operation)
    elif _is_sequence(padding):
        _padding(padding, len(padding), operation)
    else:
        _integer("padding", padding, 0)


@dataclass(frozen=True)
class ConvSpec:
    """A convolution for ``receptive_field``: values are an int or one per axis.

    Examples:
      >>> ConvSpec(3, stride=2).output_shape((32, 32))
      (15, 15)
    """

    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | str | tuple = 0
    dilation: int | tuple[int, ...] = 1
    features: int | None = None  # output channels, when known; shapes ignore it

    def __post_init__(self):
        _check_spec_values("kernel", self.kernel, 1)
        _check_spec_values("stride", self.stride, 1)
        _check_spec_values("dilation", self.dilation, 1)
        _check_padding_form(self.padding, "conv")
        if self.features is not None:
            _integer("features", self.features, 1)
        _freeze(self)

    def output_shape(self, spatial_shape) -> tuple[int, ...]:
        """``conv_output_shape`` of this layer on ``spatial_shape``."""
        return conv_output_shape(
            spatial_shape, self.kernel, self.stride, self.padding, self.dilation
        )

    def _axes(self, spatial_shape):
        return _resolve(
            spatial_shape, self.kernel, self.stride, self.padding, self.dilation, "conv"
        )


@dataclass(frozen=True)
class PoolSpec:
    """A pooling layer for ``receptive_field``; ``stride=None`` means 1, as in Flax.

    Examples:
      >>> PoolSpec(2, stride=2).output_shape((15, 15))
      (7, 7)
    """

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: int | str | tuple = "VALID"

    def __post_init__(self):
        _check_spec_values("window", self.window, 1)
        if self.stride is not None:
            _check_spec_values("stride", self.stride, 1)
        _check_padding_form(self.padding, "pool")
        _freeze(self)

    def output_shape(self, spatial_shape) -> tuple[int, ...]:
        """``pool_output_shape`` of this layer on ``spatial_shape``."""
        return pool_output_shape(spatial_shape, self.window, self.stride, self.padding)

    def _axes(self, spatial_shape):
        return _resolve(spatial_shape, self.window, self.stride, self.padding, 1, "pool")


@dataclass(frozen=True)
class ReceptiveField:
    """What one layer of a stack sees, per spatial axis, in input pixels.

    Attributes:
      layer: the ``ConvSpec`` or ``PoolSpec``.
      input_shape: spatial shape entering the layer.
      output_shape: spatial shape leaving it.
      padding: the explicit ``(lo, hi)`` pads the layer applied.
      size: receptive-field size of one output pixel.
      jump: distance in input pixels between neighbouring output pixels
        (the product of the strides so far).
      start: input coordinate of the centre of the first output pixel's field
        (pixel centres at 0, 1, ...; negative means it is centred in padding).
    """

    layer: ConvSpec | PoolSpec
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    padding: tuple[Pair, ...]
    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[float, ...]


def receptive_field(layers, input_shape) -> list[ReceptiveField]:
    """Receptive field, jump and start of every layer of a conv/pool stack.

    Per axis, with ``span = d*(k-1)+1`` and pads ``(lo, hi)`` of the layer::

        size  = size_in + (span - 1) * jump_in
        jump  = jump_in * stride
        start = start_in + ((span - 1)/2 - lo) * jump_in

    Args:
      layers: a sequence of ``ConvSpec`` and ``PoolSpec``.
      input_shape: spatial input shape, e.g. ``(32, 32)`` (no batch, no channels).

    Returns:
      One ``ReceptiveField`` per layer.

    Examples:
      >>> rfs = receptive_field([ConvSpec(3), ConvSpec(3), PoolSpec(2, 2)], (32,))
      >>> [(rf.size[0], rf.jump[0], rf.start[0], rf.output_shape[0]) for rf in rfs]
      [(3, 1, 1.0, 30), (5, 1, 2.0, 28), (6, 2, 2.5, 14)]
    """
    shape = _spatial(input_shape, "input_shape")
    if not _is_sequence(layers):
        raise ValueError(f"layers must be a sequence of ConvSpec/PoolSpec, got {layers!r}")
    size, jump, start = (1,) * len(shape), (1,) * len(shape), (0.0,) * len(shape)
    fields = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, (ConvSpec, PoolSpec)):
            raise ValueError(
                f"layers[{index}]={layer!r} is not a ConvSpec or PoolSpec "
                "(transposed convolutions have no receptive field in this sense)"
            )
        try:
            axes = layer._axes(shape)
            out = layer.output_shape(shape)
        except ValueError as err:
            raise ValueError(f"layers[{index}] ({layer}) on input {shape}: {err}") from None
        # start and size use the incoming jump, so update jump last.
        start = tuple(
            st + ((a.span - 1) / 2 - a.pads[0]) * j
            for st, j, a in zip(start, jump, axes, strict=True)
        )
        size = tuple(sz + (a.span - 1) * j for sz, j, a in zip(size, jump, axes, strict=True))
        jump = tuple(j * a.stride for j, a in zip(jump, axes, strict=True))
        pads = tuple(a.pads for a in axes)
        fields.append(ReceptiveField(layer, shape, out, pads, size, jump, start))
        shape = out
    return fields
