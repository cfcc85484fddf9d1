"""Flax Linen building blocks that check their own shapes.

Every module here is a thin layer over ``flax.linen``'s own convolution,
normalisation and pooling primitives. What it adds is a contract: at trace time
(so at no run-time cost) each module asserts with chex that its output has the
shape :mod:`jaxcnn.shapes` predicts, and input of the wrong rank or channel
count raises a ``ValueError`` naming the module, the expected and the given
shape. Layout is channels-last: ``(batch, *spatial, channels)``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> block = ConvBlock(features=8, kernel_size=(3, 3), pool="max")
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> variables = block.init(jax.random.key(0), x)
    >>> block.apply(variables, x).shape
    (2, 13, 13, 8)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import batch_norm, conv_backend, conv_pool, fast_ops, initializers, placement, shapes
from jaxcnn import bias_activation as bias_activation_lib

# Re-exported: they lived here before jaxcnn.activations.
from jaxcnn.activations import ACTIVATIONS as ACTIVATIONS
from jaxcnn.activations import Activation, activate, get_activation
from jaxcnn.batch_norm import BatchNorm
from jaxcnn.dropout import Dropout

NORMS = ("batch", "group", "layer")
POOL_KINDS = ("max", "avg", "sum")
GLOBAL_POOL_KINDS = ("avg", "max")
POOL_METHODS = ("auto", "reshape", "reduce_window")
# Padding strings that flax.linen.Conv / lax understand directly; any other form the
# calculator accepts is turned into explicit (lo, hi) pairs by shapes.resolve_padding.
_FLAX_CONV_PADDINGS = ("SAME", "SAME_LOWER", "VALID", "CIRCULAR", "REFLECT", "CAUSAL")
_FLAX_POOL_PADDINGS = ("SAME", "VALID")


def _describe(module: nn.Module) -> str:
    path = "/".join(module.path) if module.scope is not None and module.path else module.name
    return f"{type(module).__name__} {path!r}" if path else type(module).__name__


def _as_tuple(value: int | Sequence[int], rank: int, name: str, module: nn.Module) -> tuple:
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(value)
    if len(value) != rank:
        raise ValueError(
            f"{_describe(module)}: {name}={value} has {len(value)} entries but the "
            f"layer is {rank}-D; give one int or {rank} ints"
        )
    return value


def _check_size(module: nn.Module, name: str, value: Any) -> None:
    """A layer width (channels, units) must be a plain int >= 1: a zero or negative one
    would otherwise surface as a ZeroDivisionError in the initializer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{_describe(module)}: {name}={value!r}; valid: an int >= 1")


def _spatial_rank(module: nn.Module, x: jax.Array, declared: int | Sequence[int], what: str) -> int:
    """Number of spatial axes: from a tuple ``declared`` if given, else from ``x``."""
    if isinstance(declared, int):
        rank = x.ndim - 2
        if not 1 <= rank <= 3:
            raise ValueError(
                f"{_describe(module)}: expected input (batch, *spatial, channels) with 1 to 3 "
                f"spatial axes, i.e. rank 3 to 5; got shape {tuple(x.shape)}"
            )
        return rank
    rank = len(tuple(declared))
    if x.ndim != rank + 2:
        expected = "(batch, " + ", ".join(["spatial"] * rank) + ", channels)"
        raise ValueError(
            f"{_describe(module)}: {what} of rank {rank} expects input of shape {expected} "
            f"(rank {rank + 2}); got shape {tuple(x.shape)} (rank {x.ndim})"
        )
    return rank


def _calculator(module: nn.Module, fn: Callable[..., tuple], *args, **kwargs) -> tuple:
    """Calls the shape calculator, prefixing its error with the module's name."""
    try:
        return tuple(fn(*args, **kwargs))
    except ValueError as error:
        raise ValueError(f"{_describe(module)}: {error}") from error


def _pool_padding_for_flax(padding, spatial, window, strides):
    if isinstance(padding, str) and padding.upper() in _FLAX_POOL_PADDINGS:
        return padding.upper()
    pads = shapes.resolve_padding(padding, spatial, window, strides, operation="pool")
    return tuple(tuple(pair) for pair in pads)


def _conv_padding_for_flax(padding, spatial, kernel, strides, dilation):
    if isinstance(padding, str) and padding.upper() in _FLAX_CONV_PADDINGS:
        return padding.upper()
    return tuple(
        tuple(pair) for pair in shapes.resolve_padding(padding, spatial, kernel, strides, dilation)
    )


class Pool(nn.Module):
    """Max, average or sum pooling whose output shape is checked against the calculator.

    Attributes:
      kind: ``"max"``, ``"avg"`` or ``"sum"``.
      window: window size, one int for all spatial axes or one per axis. A tuple fixes
        the number of spatial axes; an int takes it from the input.
      stride: stride per axis; ``None`` means equal to ``window`` (non-overlapping).
      padding: ``"VALID"``, ``"SAME"``, an int, or ``(lo, hi)`` pairs per axis
        (any form :func:`jaxcnn.shapes.resolve_padding` accepts). Max pooling pads
        with ``-inf``, the others with zeros.
      count_include_pad: average pooling only: divide by the full window size
        (``True``, flax's default) or by the number of real pixels in it.
      method: ``"auto"`` uses a crop + reshape + reduce when the windows tile the input
        (``window == stride`` and no padding), else flax's ``lax.reduce_window`` pools;
        ``"reduce_window"`` always uses flax; ``"reshape"`` insists on the tiling path.
        Both paths compute the same values and the same gradients. The reshape path's
        max pooling is :func:`jaxcnn.fast_ops.max_pool`, whose hand-written gradient is
        elementwise compares and selects, which XLA:CPU runs much faster than the
        select-and-scatter gradient of ``reduce_window`` max pooling (about 2.2x faster
        pooling, forward + backward). Like select-and-scatter it sends the gradient of a
        window with tied maxima (e.g. zeros after a ReLU) to the first of them in
        row-major order, so gradients match even at ties. Average and sum pooling on
        the reshape path are a plain ``mean`` / ``sum`` over the window axes.

    Examples:
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> Pool("max", window=2).apply({}, x)[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """

    kind: str = "max"
    window: int | Sequence[int] = 2
    stride: int | Sequence[int] | None = None
    padding: Any = "VALID"
    count_include_pad: bool = True
    method: str = "auto"

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The output shape :mod:`jaxcnn.shapes` predicts for ``input_shape``.

        Args:
          input_shape: ``(batch, *spatial, channels)``.

        Returns:
          ``(batch, *pooled spatial, channels)``.

        Examples:
          >>> Pool("max", window=(2, 2)).output_shape((1, 7, 7, 3))
          (1, 3, 3, 3)
        """
        input_shape = tuple(input_shape)
        rank = len(self.window) if not isinstance(self.window, int) else len(input_shape) - 2
        window = _as_tuple(self.window, rank, "window", self)
        strides = window if self.stride is None else _as_tuple(self.stride, rank, "stride", self)
        spatial = _calculator(
            self, shapes.pool_output_shape, input_shape[1:-1], window, strides, self.padding
        )
        return (input_shape[0], *spatial, input_shape[-1])

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind not in POOL_KINDS:
            raise ValueError(f"{_describe(self)}: kind={self.kind!r}; valid: {POOL_KINDS}")
        if self.method not in POOL_METHODS:
            raise ValueError(f"{_describe(self)}: method={self.method!r}; valid: {POOL_METHODS}")
        rank = _spatial_rank(self, x, self.window, "window")
        window = _as_tuple(self.window, rank, "window", self)
        strides = window if self.stride is None else _as_tuple(self.stride, rank, "stride", self)
        spatial = tuple(x.shape[1:-1])
        expected = self.output_shape(x.shape)
        padding = _pool_padding_for_flax(self.padding, spatial, window, strides)
        tiles = window == strides and (
            padding == "VALID" or all(pair == (0, 0) for pair in padding)
        )
        if self.method == "reshape" and not tiles:
            raise ValueError(
                f"{_describe(self)}: method='reshape' needs window == stride and no padding; "
                f"got window={window}, stride={strides}, padding={self.padding!r}"
            )
        if tiles and self.method != "reduce_window":
            y = _tiled_pool(x, window, self.kind)
        elif self.kind == "max":
            y = nn.max_pool(x, window, strides, padding)
        elif self.kind == "avg":
            y = nn.avg_pool(x, window, strides, padding, self.count_include_pad)
        else:
            y = nn.pool(x, 0.0, lax.add, window, strides, padding)
        chex.assert_shape(y, expected)
        return y


def _tiled_pool(x: jax.Array, window: tuple[int, ...], kind: str) -> jax.Array:
    """Pools non-overlapping windows by crop + reshape + reduce (elementwise gradient)."""
    if kind == "max":
        # Custom gradient equal to select-and-scatter's, ties included (see fast_ops).
        return fast_ops.max_pool(x, window)
    out = [size // w for size, w in zip(x.shape[1:-1], window, strict=True)]
    x = x[(slice(None), *(slice(0, n * w) for n, w in zip(out, window, strict=True)))]
    split = [x.shape[0]]
    for n, w in zip(out, window, strict=True):
        split += [n, w]
    x = x.reshape(*split, x.shape[-1])
    axes = tuple(2 + 2 * i for i in range(len(window)))
    if kind == "sum":
        return jnp.sum(x, axis=axes)
    return jnp.mean(x, axis=axes)


class GlobalPool(nn.Module):
    """Average or max over all spatial axes: ``(N, *spatial, C) -> (N, C)``.

    Attributes:
      kind: ``"avg"`` or ``"max"``.
      keepdims: keep the spatial axes with size 1.

    Examples:
      >>> GlobalPool("avg").apply({}, jnp.ones((2, 5, 5, 3))).shape
      (2, 3)
    """

    kind: str = "avg"
    keepdims: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind not in GLOBAL_POOL_KINDS:
            raise ValueError(f"{_describe(self)}: kind={self.kind!r}; valid: {GLOBAL_POOL_KINDS}")
        rank = _spatial_rank(self, x, 1, "input")
        axes = tuple(range(1, rank + 1))
        reduce = jnp.mean if self.kind == "avg" else jnp.max
        y = reduce(x, axis=axes, keepdims=self.keepdims)
        expected = (x.shape[0], *((1,) * rank if self.keepdims else ()), x.shape[-1])
        chex.assert_shape(y, expected)
        return y


class Flatten(nn.Module):
    """Flattens all but the batch axis: ``(N, ...) -> (N, prod(...))``.

    Examples:
      >>> Flatten().apply({}, jnp.ones((2, 5, 5, 3))).shape
      (2, 75)
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 2:
            raise ValueError(
                f"{_describe(self)}: expected input (batch, ...) of rank >= 2; "
                f"got shape {tuple(x.shape)}"
            )
        y = x.reshape(x.shape[0], -1)
        chex.assert_shape(y, (x.shape[0], math.prod(x.shape[1:])))
        return y


class DenseStack(nn.Module):
    """Fully connected layers: ``Dense -> activation -> Dropout`` per hidden size.

    Attributes:
      features: hidden layer sizes.
      out_features: size of a final linear layer (no activation), e.g. the number of
        classes; ``None`` for none.
      activation: name, callable or ``None``.
      dropout_rate: dropout after each hidden activation (active when ``train=True``,
        rng stream ``"dropout"``).
      in_features: if set, the input's last axis must have this size.
      use_bias: add a bias in each layer.
      dtype: computation dtype (``None``: from inputs and params).
      param_dtype: parameter dtype.

    Examples:
      >>> mlp = DenseStack(features=(16,), out_features=3)
      >>> x = jnp.ones((4, 8))
      >>> mlp.apply(mlp.init(jax.random.key(0), x), x).shape
      (4, 3)
    """

    features: Sequence[int] = ()
    out_features: int | None = None
    activation: Activation = "relu"
    dropout_rate: float = 0.0
    in_features: int | None = None
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim < 2:
            raise ValueError(
                f"{_describe(self)}: expected input (batch, features) of rank >= 2; "
                f"got shape {tuple(x.shape)}"
            )
        if self.in_features is not None and x.shape[-1] != self.in_features:
            raise ValueError(
                f"{_describe(self)}: expected input (..., {self.in_features}); "
                f"got shape {tuple(x.shape)}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(
                f"{_describe(self)}: dropout_rate={self.dropout_rate}; valid: 0 <= rate < 1"
            )
        act = get_activation(self.activation)  # raises on an unknown name before any layer
        for i, size in enumerate(self.features):
            _check_size(self, f"features[{i}]", size)
        if self.out_features is not None:
            _check_size(self, "out_features", self.out_features)
        sizes = [*self.features] + ([self.out_features] if self.out_features is not None else [])
        in_shape = x.shape
        for i, size in enumerate(sizes):
            x = nn.Dense(
                size,
                use_bias=self.use_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=initializers.lecun_normal(),  # flax's default, drawn flat
                name=f"Dense_{i}",
            )(x)
            if i < len(self.features):
                x = activate(act, x)
                if self.dropout_rate > 0:
                    x = Dropout(self.dropout_rate, deterministic=not train)(x)
        chex.assert_shape(x, (*in_shape[:-1], sizes[-1] if sizes else in_shape[-1]))
        return x


class ConvBlock(nn.Module):
    """Convolution -> optional normalisation -> activation -> optional pooling.

    Attributes:
      features: output channels.
      kernel_size: kernel size; a tuple fixes the layer's rank (``(3,)`` 1-D,
        ``(3, 3)`` 2-D, ``(3, 3, 3)`` 3-D); an int uses the input's spatial rank.
      stride: int or one per axis.
      padding: any form the calculator knows: ``"VALID"``, ``"SAME"``, ``"SAME_LOWER"``,
        ``"CIRCULAR"``, ``"REFLECT"``, ``"CAUSAL"`` (1-D), an int, per-axis ints or
        ``(lo, hi)`` pairs.
      dilation: kernel dilation, int or one per axis.
      feature_group_count: channel groups; ``"depthwise"`` means one group per input
        channel (``features`` must then be a multiple of the input channels).
      in_channels: if set, the input must have this many channels.
      norm: ``None``, ``"batch"`` (``BatchNorm``; batch statistics when
        ``train=True``), ``"group"`` (``GroupNorm``) or ``"layer"`` (``LayerNorm``
        over channels, as in ConvNeXt).
      norm_groups: groups for ``"group"``; ``None`` takes ``gcd(32, features)``.
      norm_momentum: ``BatchNorm`` running-average momentum (0.9 = PyTorch's 0.1).
      norm_epsilon: the norm's epsilon; ``None`` keeps each norm's default (1e-5 for
        batch and group norm, 1e-6 for layer norm). airbench uses 1e-12.
      activation: name, callable, or ``None`` (identity).
      pool: ``None`` or a pooling kind (``"max"``, ``"avg"``, ``"sum"``) after the
        activation; ``pool_window``, ``pool_stride``, ``pool_padding`` and
        ``pool_method`` are passed to :class:`Pool`.
      pool_first: pool right after the convolution, before the norm and the
        activation (airbench's order: the norm's statistics are those of the pooled
        map, and norm and activation touch ``prod(pool_window)`` times fewer
        elements). Same output shape and parameters.
      use_bias: conv bias; ``None`` means "only without a norm" (a norm's own shift
        makes it redundant).
      kernel_init: conv kernel initialiser; ``None``: flax's default, ``lecun_normal``
        (the same numbers, from ``jaxcnn.initializers``).
      dtype: computation dtype (``None``: from inputs and params).
      param_dtype: parameter dtype.
      fused_pool: ``True`` (default) runs ``conv + bias -> ReLU -> max pool`` as
        ``conv -> max pool -> + bias -> ReLU`` (:func:`jaxcnn.fast_ops.max_pool_relu`)
        when that is exact: max pooling whose windows tile the input (stride ==
        window, no padding, ``pool_method`` ``"auto"`` or ``"reshape"``), no norm,
        ReLU, a conv bias. ReLU is monotone and the bias is one number per channel,
        so both give the same values, and the same gradients except where rounding
        ``conv + bias`` ties two maxima that the conv output does not tie. The bias
        and ReLU then touch ``prod(pool_window)`` times fewer elements (about 1.6x
        faster training of the MNIST net on CPU). The ``nn.Conv`` sub-module is the
        same (parameters ``{'conv': {'kernel', 'bias'}}``; ``capture_intermediates``
        records its output with the bias); the block just uses its bias-free output,
        and under ``jit`` XLA drops the then unused full-size bias add. Where the
        pool drops the conv output's trailing rows or columns (a 13 x 13 output
        pooled by 2), the conv runs on the input cropped to what the pool reads
        (:func:`jaxcnn.conv_pool.conv_for_tiled_pool`); the full conv is then unused
        under ``jit`` (run eagerly, both run). ``False`` always runs the plain sequence.
      fused_norm: ``True`` (default) runs ``norm="batch"`` and the activation after it
        as one :class:`jaxcnn.batch_norm.BatchNorm` sub-module (still named ``"norm"``,
        with Flax's variables): in training one op with a hand-written gradient
        (1.2-1.7x faster norm + activation on CPU), the activation computed on the
        float32 pre-activation and rounded once. ``capture_intermediates`` then records
        the norm's output after the activation. ``False``: ``flax.linen.BatchNorm``,
        then :func:`activate`; forward-mode autodiff (``jax.jvp``) needs that (and,
        where convolutions run on oneDNN, the ``"xla"`` conv backend).
      space_to_depth: how that fused ``conv -> max pool`` runs when the conv has stride
        1, no dilation and one group. ``True``: as one convolution over the
        space-to-depth input (:func:`jaxcnn.conv_pool.conv_max_pool`; 1.3-1.8x faster
        forward + backward on CPU for 1-4 input channels, slower for 8 or more).
        ``False``: conv, then pool. ``None`` (default): ``True`` when the input has at
        most 4 channels and JAX's default backend is the CPU (decided when the block is
        traced). ``True`` where the fused path does not apply raises ``ValueError``.
      materialize_output: write the output to memory once on CPU
        (:func:`jaxcnn.fast_ops.materialize`), so that XLA does not fuse the block's
        elementwise tail into each of its consumers (a residual block's output feeds the
        next block twice). Skipped where the fused batch norm's kernels write the output
        themselves (training on CPU): it is in memory already, and the copy is nine
        passes of 0.5 ms in ResNet-20's bfloat16 step (``docs/perf_notes.md``, item 59).

    Examples:
      >>> block = ConvBlock(16, (3, 3), stride=2, padding="SAME", norm="batch")
      >>> x = jnp.ones((2, 32, 32, 3))
      >>> variables = block.init(jax.random.key(0), x)
      >>> block.apply(variables, x).shape
      (2, 16, 16, 16)
    """

    features: int
    kernel_size: int | Sequence[int] = 3
    stride: int | Sequence[int] = 1
    padding: Any = "VALID"
    dilation: int | Sequence[int] = 1
    feature_group_count: int | str = 1
    in_channels: int | None = None
    norm: str | None = None
    norm_groups: int | None = None
    norm_momentum: float = 0.9
    norm_epsilon: float | None = None
    activation: Activation = "relu"
    pool: str | None = None
    pool_window: int | Sequence[int] = 2
    pool_stride: int | Sequence[int] | None = None
    pool_padding: Any = "VALID"
    pool_method: str = "auto"
    pool_first: bool = False
    use_bias: bool | None = None
    kernel_init: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    fused_pool: bool = True
    fused_norm: bool = True
    space_to_depth: bool | None = None
    materialize_output: bool = False

    def conv_spec(self, rank: int) -> shapes.ConvSpec:
        """The convolution as a :class:`jaxcnn.shapes.ConvSpec` (for receptive fields)."""
        kernel = _as_tuple(self.kernel_size, rank, "kernel_size", self)
        stride = _as_tuple(self.stride, rank, "stride", self)
        dilation = _as_tuple(self.dilation, rank, "dilation", self)
        try:  # the calculator's own checks, prefixed with this block's name
            return shapes.ConvSpec(kernel, stride, self.padding, dilation)
        except ValueError as error:
            raise ValueError(f"{_describe(self)}: {error}") from error

    def pool_spec(self, rank: int) -> shapes.PoolSpec | None:
        """The optional pooling as a :class:`jaxcnn.shapes.PoolSpec`, else ``None``."""
        if self.pool is None:
            return None
        window = _as_tuple(self.pool_window, rank, "pool_window", self)
        stride = window if self.pool_stride is None else self.pool_stride
        stride = _as_tuple(stride, rank, "pool_stride", self)
        try:
            return shapes.PoolSpec(window=window, stride=stride, padding=self.pool_padding)
        except ValueError as error:
            # The calculator names its own fields (window, stride, padding); here they
            # are this block's pool_window, pool_stride and pool_padding.
            raise ValueError(f"{_describe(self)}: pool_{error}") from error

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The output shape :mod:`jaxcnn.shapes` predicts (conv, then the optional pool).

        Args:
          input_shape: ``(batch, *spatial, channels)``.

        Returns:
          ``(batch, *spatial out, features)``.

        Examples:
          >>> ConvBlock(8, (3, 3), stride=2, pool="max").output_shape((1, 32, 32, 3))
          (1, 7, 7, 8)
        """
        _check_size(self, "features", self.features)
        input_shape = tuple(input_shape)
        rank = len(input_shape) - 2 if isinstance(self.kernel_size, int) else len(self.kernel_size)
        spec = self.conv_spec(rank)
        spatial = _calculator(
            self,
            shapes.conv_output_shape,
            input_shape[1:-1],
            spec.kernel,
            spec.stride,
            self.padding,
            spec.dilation,
        )
        pool = self.pool_spec(rank)
        if pool is not None:
            spatial = _calculator(
                self, shapes.pool_output_shape, spatial, pool.window, pool.stride, pool.padding
            )
        return (input_shape[0], *spatial, self.features)

    def _groups(self, in_channels: int) -> int:
        groups = self.feature_group_count
        if groups == "depthwise":
            groups = in_channels
        if not isinstance(groups, int) or groups < 1 or in_channels % groups:
            raise ValueError(
                f"{_describe(self)}: feature_group_count={self.feature_group_count!r} must be "
                f"'depthwise' or a positive int dividing the {in_channels} input channels"
            )
        if self.features % groups:
            raise ValueError(
                f"{_describe(self)}: features={self.features} must be a multiple of "
                f"feature_group_count={groups}"
            )
        return groups

    def _epsilon(self, default: float) -> float:
        return default if self.norm_epsilon is None else self.norm_epsilon

    def _bias_activation_alone(self, residual, pool) -> bool:
        """Whether the conv's bias and activation follow it directly (no norm, residual, pool)."""
        return self.norm is None and residual is None and not (self.pool_first and pool)

    def _written_by_norm_kernels(
        self, x: jax.Array, train: bool, residual: jax.Array | None
    ) -> bool:
        """Whether :meth:`_norm_activate`'s output is the batch-norm kernels' (in memory)."""
        return (
            train
            and self.norm == "batch"
            and self.fused_norm
            and batch_norm.trains_on_kernels(
                x, self.activation, self.dtype, self.param_dtype, residual
            )
        )

    def _finish(self, y: jax.Array, in_memory: bool = False) -> jax.Array:
        """The block's output, through ``materialize`` if asked and not in memory already."""
        return fast_ops.materialize(y) if self.materialize_output and not in_memory else y

    def _norm_activate(
        self, x: jax.Array, train: bool, residual: jax.Array | None = None
    ) -> jax.Array:
        if self.norm == "batch" and self.fused_norm:
            return BatchNorm(
                use_running_average=not train,
                momentum=self.norm_momentum,
                epsilon=self._epsilon(1e-5),
                activation=self.activation,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="norm",
            )(x, residual=residual)
        y = self._norm(x, train)
        return activate(self.activation, y if residual is None else y + residual)

    def _norm(self, x: jax.Array, train: bool) -> jax.Array:
        if self.norm is None:
            return x
        if self.norm == "batch":
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=self.norm_momentum,
                epsilon=self._epsilon(1e-5),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="norm",
            )(x)
        if self.norm == "group":
            groups = self.norm_groups or math.gcd(32, self.features)
            if self.features % groups:
                raise ValueError(
                    f"{_describe(self)}: norm_groups={groups} must divide features={self.features}"
                )
            return nn.GroupNorm(
                num_groups=groups,
                epsilon=self._epsilon(1e-5),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="norm",
            )(x)
        if self.norm == "layer":
            return nn.LayerNorm(
                epsilon=self._epsilon(1e-6),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="norm",
            )(x)
        raise ValueError(f"{_describe(self)}: norm={self.norm!r}; valid: None or one of {NORMS}")

    def _fusable_pool_window(
        self, rank: int, conv_spatial: tuple[int, ...], use_bias: bool
    ) -> tuple[int, ...] | None:
        """The max-pool window if ``relu(conv + b) -> pool`` may run as ``relu(pool + b)``."""
        if not (
            self.fused_pool
            and self.pool == "max"
            and self.pool_method in ("auto", "reshape")
            and self.norm is None
            and use_bias
            and get_activation(self.activation) is nn.relu
        ):
            return None
        spec = self.pool_spec(rank)
        padding = _pool_padding_for_flax(spec.padding, conv_spatial, spec.window, spec.stride)
        no_padding = padding == "VALID" or all(pair == (0, 0) for pair in padding)
        return spec.window if spec.window == spec.stride and no_padding else None

    def _use_space_to_depth(self, call: dict[str, Any], in_channels: int) -> bool:
        """Whether the fused conv + max pool runs as one space-to-depth convolution."""
        rank = call["lhs"].ndim - 2
        ones = (1,) * rank
        applies = (
            tuple(call["window_strides"]) == ones
            and tuple(call["lhs_dilation"] or ones) == ones
            and tuple(call["rhs_dilation"] or ones) == ones
            and call["feature_group_count"] == 1
            and call["batch_group_count"] == 1
            and call["dimension_numbers"] == conv_pool.dimension_numbers(rank)
            and call["preferred_element_type"] is None
            and (not isinstance(call["padding"], str) or call["padding"] in ("VALID", "SAME"))
        )
        if self.space_to_depth is None:
            return applies and in_channels <= 4 and placement.on_cpu()
        if self.space_to_depth and not applies:
            raise ValueError(
                f"{_describe(self)}: space_to_depth=True needs a stride-1 convolution "
                f"without dilation or groups; got stride={self.stride!r}, "
                f"dilation={self.dilation!r}, feature_group_count="
                f"{self.feature_group_count!r}"
            )
        return self.space_to_depth

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, residual: jax.Array | None = None
    ) -> jax.Array:
        """Runs the block; ``residual`` is added after the norm, before the activation.

        ``residual`` (a residual block's shortcut) must have the shape of the map the
        norm sees: the conv output, or the pooled one with ``pool_first``. With the
        fused batch norm it costs no pass of its own (:class:`jaxcnn.batch_norm.BatchNorm`).
        """
        if not (self.space_to_depth is None or isinstance(self.space_to_depth, bool)):
            raise ValueError(
                f"{_describe(self)}: space_to_depth={self.space_to_depth!r}; valid: "
                "None (automatic), True, False"
            )
        _check_size(self, "features", self.features)
        rank = _spatial_rank(self, x, self.kernel_size, "kernel_size")
        in_channels = x.shape[-1]
        if self.in_channels is not None and in_channels != self.in_channels:
            expected = (x.shape[0], *x.shape[1:-1], self.in_channels)
            raise ValueError(
                f"{_describe(self)}: expected input with {self.in_channels} channels, shape "
                f"{expected}; got shape {tuple(x.shape)} ({in_channels} channels)"
            )
        spec = self.conv_spec(rank)
        spatial = tuple(x.shape[1:-1])
        out_spatial = _calculator(
            self,
            shapes.conv_output_shape,
            spatial,
            spec.kernel,
            spec.stride,
            self.padding,
            spec.dilation,
        )
        # None: flax's default (lecun_normal), drawn flat by jaxcnn.initializers: the same
        # numbers, compiled by XLA:CPU in a fraction of the time (perf_notes item 81).
        kernel_init = initializers.lecun_normal() if self.kernel_init is None else self.kernel_init
        use_bias = self.norm is None if self.use_bias is None else self.use_bias
        # The fused conv -> pool path adds no residual: it runs the plain sequence then.
        fused_window = (
            None if residual is not None else self._fusable_pool_window(rank, out_spatial, use_bias)
        )
        # With a bias the conv's bias-free output is taken from a tap and the bias added
        # by fast_ops.add_channel_bias (its gradient summed in float32: in bfloat16 this is
        # 1.2x the CIFAR net's step); under jit XLA drops nn.Conv's own, unused bias add.
        tap = _ConvOutputTap() if use_bias else None
        conv = nn.Conv(
            self.features,
            kernel_size=spec.kernel,
            strides=spec.stride,
            padding=_conv_padding_for_flax(
                self.padding, spatial, spec.kernel, spec.stride, spec.dilation
            ),
            kernel_dilation=spec.dilation,
            feature_group_count=self._groups(in_channels),
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
            kernel_init=kernel_init,
            conv_general_dilated=conv_backend.conv_general_dilated if tap is None else tap,
        )
        spec = self.pool_spec(rank)
        pool = None
        if spec is not None:
            pool = Pool(
                self.pool,
                spec.window,
                spec.stride,
                spec.padding,
                method=self.pool_method,
                name="pool",
            )
        conv_shape = (x.shape[0], *out_spatial, self.features)
        if fused_window is not None:
            # Checked before the conv runs: errors name the pool, as on the plain path.
            expected = pool.output_shape(conv_shape)
            # The conv module runs as usual (same parameters, and capture_intermediates
            # records conv + bias), but only its bias-free output, kept by the tap, is
            # used: under jit XLA drops the unused full-size bias add.
            conv(x)
            y = tap.output
            chex.assert_shape(y, conv_shape)
            bias = conv.variables["params"]["bias"]  # cast to y.dtype by the add
            if self._use_space_to_depth(tap.call, in_channels):
                # The same conv + pool from the conv's own (padded, cast) operands; under
                # jit XLA drops the then unused plain conv.
                pooled = conv_pool.conv_max_pool(
                    tap.call["lhs"],
                    tap.call["rhs"],
                    fused_window,
                    tap.call["padding"],
                    tap.call["precision"],
                )
                y = jax.nn.relu(fast_ops.add_channel_bias(pooled, bias))
            else:
                # Only the conv outputs the pool reads (the CIFAR net's conv2: 12 x 12 of
                # 13 x 13); under jit XLA drops the then unused full conv.
                cropped = conv_pool.conv_for_tiled_pool(tap.call, fused_window)
                y = y if cropped is None else cropped
                y = fast_ops.max_pool_relu(y, fused_window, bias=bias, stored_input=True)
            chex.assert_shape(y, expected)
            return self._finish(y)
        if self.space_to_depth:
            raise ValueError(
                f"{_describe(self)}: space_to_depth=True needs the fused conv -> max pool "
                "path: pool='max' whose window equals its stride with no padding, "
                "activation 'relu', a conv bias, no norm and fused_pool=True"
            )
        y = conv(x)
        if tap is not None and self._bias_activation_alone(residual, pool):
            # No norm between: a GELU and the bias as one kernel pass each way where the
            # kernels run, else add_channel_bias and activate as _norm_activate would.
            y = bias_activation_lib.bias_activation(
                tap.output, conv.variables["params"]["bias"], self.activation
            )
            chex.assert_shape(y, conv_shape)
            return self._finish(y if pool is None else pool(y))
        if tap is not None:
            y = fast_ops.add_channel_bias(tap.output, conv.variables["params"]["bias"])
        chex.assert_shape(y, conv_shape)
        if self.pool_first and pool is not None:
            y, pool = pool(y), None  # pooled already: norm and activation follow
        if residual is not None and residual.shape != y.shape:
            raise ValueError(
                f"{_describe(self)}: residual must have the shape of the map the norm sees, "
                f"{tuple(y.shape)} (the conv output{', pooled' if self.pool_first else ''}); "
                f"got residual of shape {tuple(residual.shape)}"
            )
        in_memory = pool is None and self._written_by_norm_kernels(y, train, residual)
        y = self._norm_activate(y, train, residual)
        return self._finish(y if pool is None else pool(y), in_memory)


class _ConvOutputTap:
    """``nn.Conv``'s ``conv_general_dilated``: runs lax's and keeps its output and call.

    ``nn.Conv`` adds its bias right after this call; the tap lets :class:`ConvBlock`
    take the bias-free output (in the conv's computation dtype) and add the bias after
    pooling instead, or redo the conv + pool from the recorded operands
    (``call``: ``lax.conv_general_dilated``'s arguments by name).
    """

    _signature = inspect.signature(lax.conv_general_dilated)

    def __init__(self):
        self.output: jax.Array | None = None
        self.call: dict[str, Any] = {}

    def __call__(self, *args, **kwargs) -> jax.Array:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        self.call = dict(bound.arguments)
        self.output = conv_backend.conv_general_dilated(*args, **kwargs)
        return self.output
