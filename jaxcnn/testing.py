"""Hypothesis strategies and chex assertions for shape property tests.

The strategies draw layer configurations that Flax accepts *and* that give an
output of at least one pixel, together with a compatible input shape: 1-D,
2-D and 3-D, every padding mode, strides, dilations and feature groups. Each
draw is a small frozen dataclass (``ConvCase``, ``ConvTransposeCase``,
``PoolCase``) that knows its Flax module and the shape ``jaxcnn.shapes``
predicts, so a property test is three lines::

    from hypothesis import given
    from jaxcnn import testing

    @given(testing.conv_cases())
    def test_conv_shape(case):
        testing.assert_output_shape(case.module(), case.input_shape, case.expected_shape)

``invalid_shape_arguments()`` draws arguments the calculator must refuse, with
the message fragment it must give. JAX and Flax are imported lazily, so
importing this module costs only hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st

from jaxcnn import shapes

__all__ = [
    "POOL_KINDS",
    "ConvCase",
    "ConvTransposeCase",
    "INVALID_KINDS",
    "InvalidCase",
    "PoolCase",
    "assert_output_shape",
    "conv_cases",
    "conv_transpose_cases",
    "eval_output_shape",
    "expected_output_shape",
    "invalid_shape_arguments",
    "pool_cases",
]

POOL_KINDS = ("max", "avg", "avg_exclude_pad", "min", "sum")
_ANY_CASE_MODES = {"SAME", "VALID", "SAME_LOWER"}  # lax upper-cases these itself


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class ConvCase:
    """A valid ``flax.linen.Conv`` configuration and its input shape.

    Attributes:
      input_shape: ``(batch, *spatial, in_channels)``.
      features: output channels (a multiple of ``groups``).
      kernel: kernel size per axis.
      strides: stride per axis.
      padding: padding exactly as handed to Flax (mode string, int or per-axis).
      dilation: kernel dilation per axis.
      groups: ``feature_group_count``; divides both channel counts.

    Examples:
      >>> case = ConvCase((1, 32, 32, 3), 1, (3, 3), (2, 2), "VALID", (1, 1))
      >>> case.expected_shape
      (1, 15, 15, 1)
    """

    input_shape: tuple[int, ...]
    features: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any
    dilation: tuple[int, ...]
    groups: int = 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.input_shape[1:-1]

    @property
    def expected_shape(self) -> tuple[int, ...]:
        """``(batch, *conv_output_shape(...), features)``."""
        spatial = shapes.conv_output_shape(
            self.spatial_shape, self.kernel, self.strides, self.padding, self.dilation
        )
        return (self.input_shape[0], *spatial, self.features)

    def module(self, **overrides):
        """The ``nn.Conv`` this case describes (``overrides`` replace its fields)."""
        import flax.linen as nn

        fields = dict(
            features=self.features,
            kernel_size=self.kernel,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.dilation,
            feature_group_count=self.groups,
        )
        return nn.Conv(**{**fields, **overrides})


@dataclass(frozen=True)
class ConvTransposeCase:
    """A valid ``flax.linen.ConvTranspose`` configuration (no groups in Flax)."""

    input_shape: tuple[int, ...]
    features: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any
    dilation: tuple[int, ...]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.input_shape[1:-1]

    @property
    def expected_shape(self) -> tuple[int, ...]:
        spatial = shapes.conv_transpose_output_shape(
            self.spatial_shape, self.kernel, self.strides, self.padding, self.dilation
        )
        return (self.input_shape[0], *spatial, self.features)

    def module(self, **overrides):
        """The ``nn.ConvTranspose`` this case describes."""
        import flax.linen as nn

        fields = dict(
            features=self.features,
            kernel_size=self.kernel,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.dilation,
        )
        return nn.ConvTranspose(**{**fields, **overrides})


@dataclass(frozen=True)
class PoolCase:
    """A valid pooling configuration; ``strides=None`` is Flax's stride 1."""

    input_shape: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...] | None
    padding: Any  # a mode string or one (lo, hi) pair per axis, as Flax's pools take

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.input_shape[1:-1]

    @property
    def expected_shape(self) -> tuple[int, ...]:
        spatial = shapes.pool_output_shape(
            self.spatial_shape, self.window, self.strides, self.padding
        )
        return (self.input_shape[0], *spatial, self.input_shape[-1])

    def function(self, kind: str = "max") -> Callable:
        """``x -> pooled x`` with Flax's pool of ``kind`` (one of ``POOL_KINDS``)."""
        import flax.linen as nn
        from jax import lax

        args = (self.window, self.strides, self.padding)
        if kind == "max":
            return lambda x: nn.max_pool(x, *args)
        if kind == "avg":
            return lambda x: nn.avg_pool(x, *args)
        if kind == "avg_exclude_pad":
            return lambda x: nn.avg_pool(x, *args, count_include_pad=False)
        if kind == "min":
            return lambda x: nn.pooling.min_pool(x, *args)
        if kind == "sum":  # Flax has no sum_pool: its generic pool with lax.add is one
            return lambda x: nn.pooling.pool(x, 0.0, lax.add, *args)
        raise ValueError(f"kind={kind!r} is not one of {', '.join(POOL_KINDS)}")


@dataclass(frozen=True)
class InvalidCase:
    """Arguments one calculator function must refuse, and the message it must give.

    Attributes:
      function: name of the ``jaxcnn.shapes`` function.
      kwargs: its keyword arguments.
      match: a regular expression the ``ValueError`` message must contain.
      reason: what is wrong, in words (for the test report).
    """

    function: str
    kwargs: dict
    match: str
    reason: str

    def call(self):
        """Call the function (it should raise ``ValueError`` matching ``match``)."""
        return getattr(shapes, self.function)(**self.kwargs)


# --------------------------------------------------------------------------- strategies
def _per_axis(draw, rank: int, low: int, high: int) -> tuple[int, ...]:
    return tuple(draw(st.integers(low, high)) for _ in range(rank))


def _mode(draw, modes, any_case) -> str:
    """A mode, sometimes in lower case where Flax (through lax) accepts that."""
    mode = draw(st.sampled_from(sorted(modes)))
    if any_case and mode in _ANY_CASE_MODES and draw(st.booleans()):
        return mode.lower()
    return mode


def _explicit_padding(draw, rank: int, max_pad: int, pairs_only: bool):
    """Per-axis pads as Flax takes them: an int, or a tuple of ints / (lo, hi) pairs."""
    if not pairs_only and draw(st.booleans()):
        return draw(st.integers(0, max_pad))
    entries = []
    for _ in range(rank):
        if pairs_only or draw(st.booleans()):
            entries.append((draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad))))
        else:
            entries.append(draw(st.integers(0, max_pad)))
    return tuple(entries)


def _padding(draw, rank, modes, explicit, max_pad, pairs_only=False, any_case=True):
    modes = [m for m in modes if m != "CAUSAL" or rank == 1]  # Flax: CAUSAL is 1-D only
    if explicit and (not modes or draw(st.integers(0, 2)) == 0):
        return _explicit_padding(draw, rank, max_pad, pairs_only)
    return _mode(draw, modes, any_case)


def _zero_pads(padding, rank: int):
    """The zero pads each axis gets for sure (VALID: none), or None for other modes."""
    if isinstance(padding, str):
        return ((0, 0),) * rank if padding.upper() == "VALID" else None
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    return tuple(p if isinstance(p, tuple) else (p, p) for p in padding)


def _check_options(ranks, modes, allowed, **limits) -> None:
    """Arguments of a strategy, checked where it first draws (named, unlike hypothesis'
    own ``max_value=0 < min_value=1``)."""
    if not ranks or any(r not in (1, 2, 3) for r in ranks):
        raise ValueError(f"ranks={ranks!r}: give a non-empty subset of (1, 2, 3)")
    unknown = set(modes) - set(allowed)
    if unknown:
        raise ValueError(f"modes={modes!r}: {sorted(unknown)} not among {', '.join(allowed)}")
    for name, value in limits.items():
        lowest = 0 if name in ("max_pad", "max_extra_size") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{name}={value!r}; valid: an int >= {lowest}")


@st.composite
def conv_cases(
    draw,
    ranks=(1, 2, 3),
    modes=shapes.CONV_PADDING_MODES,
    explicit=True,
    max_kernel=5,
    max_stride=3,
    max_dilation=3,
    max_groups=3,
    max_pad=3,
    max_extra_size=8,
):
    """Valid ``nn.Conv`` configurations with a compatible input (``ConvCase``).

    Args:
      ranks: spatial ranks to draw from.
      modes: padding modes to draw from (CAUSAL only with rank 1).
      explicit: also draw ints and per-axis ints / ``(lo, hi)`` pairs.
      max_kernel: largest kernel size.
      max_stride: largest stride.
      max_dilation: largest kernel dilation.
      max_groups: largest ``feature_group_count``.
      max_pad: largest explicit pad.
      max_extra_size: how far above the smallest valid size an input may be.

    Returns:
      A hypothesis strategy of ``ConvCase``.

    Examples:
      A property test of your own layer, 2-D only, SAME or explicit padding::

        @given(conv_cases(ranks=(2,), modes=("SAME",)))
        def test_my_block(case):
            block = MyBlock(case.features, case.kernel, case.strides, case.padding)
            assert_output_shape(block, case.input_shape, case.expected_shape)
    """
    _check_options(
        ranks,
        modes,
        shapes.CONV_PADDING_MODES,
        max_kernel=max_kernel,
        max_stride=max_stride,
        max_dilation=max_dilation,
        max_groups=max_groups,
        max_pad=max_pad,
        max_extra_size=max_extra_size,
    )
    rank = draw(st.sampled_from(ranks))
    kernel = _per_axis(draw, rank, 1, max_kernel)
    strides = _per_axis(draw, rank, 1, max_stride)
    dilation = _per_axis(draw, rank, 1, max_dilation)
    padding = _padding(draw, rank, modes, explicit, max_pad)
    pairs = _zero_pads(padding, rank)
    spatial = []
    for axis in range(rank):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = 1 if pairs is None else max(1, span - sum(pairs[axis]))
        spatial.append(smallest + draw(st.integers(0, max_extra_size)))
    groups = draw(st.integers(1, max_groups))
    in_channels = groups * draw(st.integers(1, 2))
    features = groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2))
    return ConvCase(
        (batch, *spatial, in_channels), features, kernel, strides, padding, dilation, groups
    )


@st.composite
def conv_transpose_cases(
    draw,
    ranks=(1, 2, 3),
    modes=shapes.CONV_TRANSPOSE_PADDING_MODES,
    explicit=True,
    max_kernel=5,
    max_stride=3,
    max_dilation=3,
    max_pad=3,
    max_extra_size=6,
):
    """Valid ``nn.ConvTranspose`` configurations (``ConvTransposeCase``).

    Args are as for ``conv_cases`` (no groups: Flax's ConvTranspose has none).

    Returns:
      A hypothesis strategy of ``ConvTransposeCase``.
    """
    _check_options(
        ranks,
        modes,
        shapes.CONV_TRANSPOSE_PADDING_MODES,
        max_kernel=max_kernel,
        max_stride=max_stride,
        max_dilation=max_dilation,
        max_pad=max_pad,
        max_extra_size=max_extra_size,
    )
    rank = draw(st.sampled_from(ranks))
    kernel = _per_axis(draw, rank, 1, max_kernel)
    strides = _per_axis(draw, rank, 1, max_stride)
    dilation = _per_axis(draw, rank, 1, max_dilation)
    # Flax's ConvTranspose compares its modes case-sensitively.
    padding = _padding(draw, rank, modes, explicit, max_pad, any_case=False)
    # lax pads VALID/SAME transposes itself, so only explicit pads can starve it.
    pairs = None if isinstance(padding, str) else _zero_pads(padding, rank)
    spatial = []
    for axis in range(rank):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        smallest = 1
        if pairs is not None:  # need (n-1)*s + 1 + lo + hi >= span
            missing = span - 1 - sum(pairs[axis])
            smallest = 1 + max(0, -(-missing // strides[axis]))
        spatial.append(smallest + draw(st.integers(0, max_extra_size)))
    features = draw(st.integers(1, 2))
    in_channels = draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2))
    return ConvTransposeCase(
        (batch, *spatial, in_channels), features, kernel, strides, padding, dilation
    )


@st.composite
def pool_cases(
    draw,
    ranks=(1, 2, 3),
    modes=shapes.POOL_PADDING_MODES,
    explicit=True,
    max_window=4,
    max_stride=3,
    max_pad=3,
    max_extra_size=8,
):
    """Valid pooling configurations for Flax's pools (``PoolCase``).

    Explicit padding is drawn as ``(lo, hi)`` pairs (the only form Flax's pools
    take); strides are sometimes ``None``.

    Returns:
      A hypothesis strategy of ``PoolCase``.
    """
    _check_options(
        ranks,
        modes,
        shapes.POOL_PADDING_MODES,
        max_window=max_window,
        max_stride=max_stride,
        max_pad=max_pad,
        max_extra_size=max_extra_size,
    )
    rank = draw(st.sampled_from(ranks))
    window = _per_axis(draw, rank, 1, max_window)
    strides = None if draw(st.booleans()) else _per_axis(draw, rank, 1, max_stride)
    padding = _padding(draw, rank, modes, explicit, max_pad, pairs_only=True)
    pairs = _zero_pads(padding, rank)
    spatial = []
    for axis in range(rank):
        smallest = 1 if pairs is None else max(1, window[axis] - sum(pairs[axis]))
        spatial.append(smallest + draw(st.integers(0, max_extra_size)))
    channels = draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2))
    return PoolCase((batch, *spatial, channels), window, strides, padding)


_FUNCTIONS = {
    "conv": ("conv_output_shape", "kernel", shapes.CONV_PADDING_MODES),
    "pool": ("pool_output_shape", "window", shapes.POOL_PADDING_MODES),
    "conv_transpose": (
        "conv_transpose_output_shape",
        "kernel",
        shapes.CONV_TRANSPOSE_PADDING_MODES,
    ),
}
_NOT_INTEGERS = st.sampled_from([2.0, 1.5, True, False, "3", None])
INVALID_KINDS = (
    "below_one",
    "not_integer",
    "negative_padding",
    "unknown_mode",
    "pair_length",
    "wrong_rank",
    "empty_output",
)


@st.composite
def invalid_shape_arguments(
    draw, operations=("conv", "pool", "conv_transpose"), kinds=INVALID_KINDS
):
    """Arguments ``jaxcnn.shapes`` must refuse, each with the message it must give.

    Args:
      operations: among ``'conv'``, ``'pool'``, ``'conv_transpose'``.
      kinds: among ``INVALID_KINDS``: kernel/window, stride or dilation below 1;
        non-integers (floats, bools, strings, None); negative padding; unknown
        padding modes; padding pairs of the wrong length; per-axis values of
        the wrong rank; an output below one pixel (``empty_output``: zero
        padding, stride 1 and a kernel longer than the input on one axis).

    Returns:
      A hypothesis strategy of ``InvalidCase``.
    """
    unknown = (set(operations) - set(_FUNCTIONS)) | (set(kinds) - set(INVALID_KINDS))
    if unknown or not operations or not kinds:
        raise ValueError(
            f"operations={operations!r}, kinds={kinds!r}: choose from {tuple(_FUNCTIONS)} "
            f"and {INVALID_KINDS}; unknown: {sorted(unknown)}"
        )
    operation = draw(st.sampled_from(operations))
    function, size_name, modes = _FUNCTIONS[operation]
    rank = draw(st.integers(1, 3))
    spatial = _per_axis(draw, rank, 1, 12)
    kwargs = {"spatial_shape": spatial, size_name: 3, "padding": 1}
    if operation != "pool":
        kwargs["dilation"] = 1
    names = [size_name, "stride"] + (["dilation"] if operation != "pool" else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "below_one":
        name = draw(st.sampled_from(names))
        kwargs[name] = draw(st.integers(-3, 0))
        return InvalidCase(function, kwargs, rf"{name} must be an integer >= 1", kind)
    if kind == "not_integer":
        name = draw(st.sampled_from([*names, "padding"]))
        # None means 1 for stride and dilation (as in Flax); a string padding is read as a mode.
        value = draw(
            _NOT_INTEGERS.filter(lambda v: v is not None or name in (size_name, "padding"))
        )
        kwargs[name] = value
        if name == "padding" and isinstance(value, str):
            return InvalidCase(function, kwargs, "is not a padding mode", kind)
        return InvalidCase(function, kwargs, rf"{name} must be an integer >= \d", kind)
    if kind == "negative_padding":
        kwargs["padding"] = draw(st.integers(-3, -1))
        return InvalidCase(function, kwargs, r"padding must be an integer >= 0", kind)
    if kind == "unknown_mode":
        known = {m.upper() for m in shapes.CONV_PADDING_MODES}
        word = draw(st.text("abcdefgFULSAMEVID_ ", min_size=1, max_size=8))
        # A mode of another operation is unknown here too.
        word = draw(st.sampled_from([word, *sorted(known - set(modes))]))
        if word.upper() in modes:
            word = word + "X"
        kwargs["padding"] = word
        return InvalidCase(function, kwargs, "is not a padding mode of", kind)
    if kind == "pair_length":
        length = draw(st.sampled_from([0, 1, 3]))
        kwargs["padding"] = [tuple(range(length))] * rank
        return InvalidCase(function, kwargs, r"must be an int or a \(lo, hi\) pair", kind)
    if kind == "wrong_rank":
        name = draw(st.sampled_from(names))
        wrong = draw(st.sampled_from([r for r in range(1, 5) if r != rank]))
        kwargs[name] = (1,) * wrong
        return InvalidCase(function, kwargs, rf"has {wrong} values but the input has {rank}", kind)
    # empty_output: a VALID (or zero-padded) layer whose span exceeds the input.
    axis = draw(st.integers(0, rank - 1))
    span = spatial[axis] + draw(st.integers(1, 4))
    kwargs.update({size_name: tuple(span if a == axis else 1 for a in range(rank))})
    kwargs["padding"] = 0
    kwargs["stride"] = 1  # a conv_transpose stride dilates the input: keep it at 1
    return InvalidCase(function, kwargs, rf"output size below 1: {size_name} {span}", kind)


# --------------------------------------------------------------------------- assertions
def eval_output_shape(module_or_fn, input_shape, dtype=None, **call_kwargs) -> tuple[int, ...]:
    """The real output shape via ``jax.eval_shape``: nothing is computed or allocated.

    Args:
      module_or_fn: a Linen module (initialised and applied at once with
        ``init_with_output``) or a plain function of one array.
      input_shape: the input's full shape, e.g. ``(1, 32, 32, 3)``.
      dtype: input dtype (default float32).
      **call_kwargs: passed to the module call, e.g. ``train=False``.

    Returns:
      The output's shape.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype or jnp.float32)
    if isinstance(module_or_fn, nn.Module):
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        out, _ = jax.eval_shape(lambda a: module_or_fn.init_with_output(rngs, a, **call_kwargs), x)
    else:
        out = jax.eval_shape(lambda a: module_or_fn(a, **call_kwargs), x)
    return tuple(out.shape)


def expected_output_shape(module, input_shape) -> tuple[int, ...]:
    """The shape ``jaxcnn.shapes`` predicts for ``module`` on ``input_shape``.

    Knows ``nn.Conv`` (and ``nn.ConvLocal``), ``nn.ConvTranspose`` and any module
    with an ``output_shape(input_shape)`` method.

    Args:
      module: the module.
      input_shape: ``(*batch, *spatial, channels)``.

    Returns:
      The full predicted output shape.
    """
    import flax.linen as nn

    input_shape = tuple(input_shape)
    if hasattr(module, "output_shape"):
        return tuple(module.output_shape(input_shape))
    if not isinstance(module, (nn.Conv, nn.ConvLocal, nn.ConvTranspose)):
        raise ValueError(
            f"module={type(module).__name__}: no prediction for it; pass expected=, or give "
            "the module an output_shape(input_shape) method"
        )
    kernel = (module.kernel_size,) if isinstance(module.kernel_size, int) else module.kernel_size
    rank = len(kernel)
    batch, spatial = input_shape[: -rank - 1], input_shape[-rank - 1 : -1]
    strides = 1 if module.strides is None else module.strides
    dilation = 1 if module.kernel_dilation is None else module.kernel_dilation
    if isinstance(module, nn.ConvTranspose):
        out = shapes.conv_transpose_output_shape(spatial, kernel, strides, module.padding, dilation)
    else:
        input_dilation = module.input_dilation
        if isinstance(input_dilation, int):
            input_dilation = (input_dilation,)
        if input_dilation is not None and any(d != 1 for d in input_dilation):
            raise ValueError(
                f"input_dilation={module.input_dilation!r}: jaxcnn.shapes has no rule for it"
            )
        out = shapes.conv_output_shape(spatial, kernel, strides, module.padding, dilation)
    return (*batch, *out, module.features)


def assert_output_shape(module, input_shape, expected=None, **call_kwargs) -> tuple[int, ...]:
    """Assert (with chex) that ``module``'s real output shape is the expected one.

    Args:
      module: a Linen module or a function of one array.
      input_shape: the input's full shape.
      expected: the full expected shape; ``None`` asks ``expected_output_shape``.
      **call_kwargs: passed to the module call.

    Returns:
      The real output shape.

    Examples:
      >>> import flax.linen as nn
      >>> assert_output_shape(nn.Conv(1, (3, 3), strides=2, padding=0), (1, 32, 32, 3))
      (1, 15, 15, 1)
    """
    import chex
    import jax

    if expected is None:
        expected = expected_output_shape(module, input_shape)
    actual = eval_output_shape(module, input_shape, **call_kwargs)
    chex.assert_shape(jax.ShapeDtypeStruct(actual, "float32"), tuple(expected))
    return actual
