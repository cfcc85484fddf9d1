"""Faster CPU formulations of CNN ops, equal in value and gradient to the reference ops.

Why this module exists: on XLA:CPU (jaxlib 0.10.x) the gradient of ``lax.reduce_window``
max-pooling is a ``select-and-scatter``, which XLA:CPU runs as a slow scalar loop: for the
teaching MNIST/CIFAR nets it costs more than all the convolutions together. When the
windows tile the input (stride == window, no padding) max-pooling is a reshape followed by
a max over the window axes, and its gradient can be written as elementwise compares and
selects that XLA fuses into one loop. ``docs/perf_notes.md`` has the measurements
(MNIST conv1 output, batch 128, CPU-ms for forward+backward: select-and-scatter 66,
reshape + autodiff 7.8, this custom gradient 3.5, and 2.1 with the ReLU after the pool).

Functions here use the Flax layout (``(N, *spatial, C)``) and return what
``flax.linen.max_pool(x, window, strides=window, padding="VALID")`` returns, gradient
included: the gradient of each window goes to its *first* maximum in row-major order,
exactly as select-and-scatter does, so ties (e.g. zeros after a ReLU) match too.

Examples:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> max_pool(x, 2)[0, :, :, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _as_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        value = (value,) * ndim
    value = tuple(value)
    if len(value) != ndim or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(
            f"{name} must be a positive int or {ndim} positive ints (one per spatial axis), "
            f"got {value!r}"
        )
    return value


def _split_windows(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """(N, s1, s2, .., C) -> (N, o1, w1, o2, w2, .., C), cropping what fills no window."""
    out = [s // w for s, w in zip(x.shape[1:-1], window, strict=True)]
    x = x[(slice(None), *(slice(0, o * w) for o, w in zip(out, window, strict=True)))]
    split = [x.shape[0], *itertools.chain(*zip(out, window, strict=True)), x.shape[-1]]
    return x.reshape(split)


def _window_axes(ndim: int) -> tuple[int, ...]:
    return tuple(2 + 2 * i for i in range(ndim))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tiled_max_pool(x: jax.Array, window: tuple[int, ...], stored: bool) -> jax.Array:
    return jnp.max(_split_windows(x, window), axis=_window_axes(len(window)))


def _tiled_max_pool_fwd(x, window, stored):
    # One copy of x for the max and for the gradient's comparison with it. Without the
    # copy XLA may recompute x's elementwise producer (a norm, an activation) inside
    # each consumer's fusion, rounding differently: a window whose recomputed values no
    # longer contain y then got no gradient at all (up to half the gradient lost).
    # (lax.optimization_barrier does not stop it: XLA:CPU expands barriers before it
    # fuses.) materialize's conditional is a fusion boundary on CPU. Not where x is
    # `stored` (a convolution's output, which XLA does not recompute): the extra copy of
    # the CIFAR net's conv outputs cost its step 9 % on the Intel Xeon (session 42).
    if not stored:
        x = materialize(x)
    y = _tiled_max_pool(x, window, stored)
    return y, (x, y)


def first_max_gradient(
    windows: jax.Array, pooled: jax.Array, g: jax.Array, axes: tuple[int, ...]
) -> jax.Array:
    """The gradient of ``max(windows, axis=axes)``: ``g`` at each window's first maximum.

    "First" is row-major over ``axes``, as select-and-scatter (``nn.max_pool``'s
    gradient) picks it, so tied maxima get the same gradient as there. Two fused loops:
    a min-reduce finds the first maximum's position, one broadcast select writes ``g``
    there and zeros elsewhere (XLA fuses it into whatever reads the gradient).

    Args:
      windows: the values pooled, window elements on ``axes`` (increasing, >= 0).
      pooled: ``windows.max(axis=axes)``.
      g: the cotangent of ``pooled``.

    Returns:
      An array shaped like ``windows``, in the dtype of ``g``.

    Examples:
      >>> w = jnp.array([[1.0, 3.0, 3.0]])
      >>> first_max_gradient(w, w.max(axis=1), jnp.array([2.0]), (1,))
      Array([[0., 2., 0.]], dtype=float32)
    """
    sizes = [windows.shape[axis] for axis in axes]
    shape = [1] * windows.ndim
    for axis, size in zip(axes, sizes, strict=True):
        shape[axis] = size
    # Row-major position of each window element; explicit full rank (no rank promotion).
    position = jnp.asarray(np.arange(math.prod(sizes), dtype=np.int32).reshape(shape))
    not_a_max = jnp.int32(math.prod(sizes))
    first = jnp.min(
        jnp.where(windows == jnp.expand_dims(pooled, axes), position, not_a_max),
        axis=axes,
        keepdims=True,
    )
    return jnp.where(position == first, jnp.expand_dims(g, axes), jnp.zeros((), g.dtype))


def _tiled_max_pool_bwd(window, stored, residuals, g):
    # No scatter and no concatenation (an earlier version stacked one select per window
    # position, which XLA turned into concatenates it computed twice, once per consumer:
    # 1.4x slower on the CIFAR step).
    x, y = residuals
    dx = first_max_gradient(_split_windows(x, window), y, g, _window_axes(len(window)))
    dx = dx.reshape(x.shape[0], *(o * w for o, w in zip(
        y.shape[1:-1], window, strict=True)), x.shape[-1])  # fmt: skip
    pad = [(0, 0)] + [(0, s - d) for s, d in zip(x.shape[1:-1], dx.shape[1:-1], strict=True)]
    return (jnp.pad(dx, [*pad, (0, 0)]).astype(x.dtype),)


_tiled_max_pool.defvjp(_tiled_max_pool_fwd, _tiled_max_pool_bwd)


def max_pool(
    x: jax.Array,
    window: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    *,
    stored_input: bool = False,
) -> jax.Array:
    """VALID max-pooling over the spatial axes of ``x`` (N, *spatial, C).

    When ``strides`` equals ``window`` (the default) it is a crop + reshape + max with a
    custom gradient made of compares and selects (no select-and-scatter); otherwise it
    falls back to ``lax.reduce_window`` (what ``flax.linen.max_pool`` uses).

    Args:
      x: array of shape (N, *spatial, C), spatial rank 1 to 3, any float dtype.
      window: window size, an int or one int per spatial axis.
      strides: stride per spatial axis; default ``window``.
      stored_input: ``x`` is an operation's stored output, not an elementwise chain XLA
        may fuse into its consumers (say a convolution's output): skips the copy that
        keeps the gradient exact when XLA:CPU would recompute ``x`` with other rounding.

    Returns:
      Array of shape (N, *[(s - w) // t + 1 ...], C), dtype of ``x``; rows/columns that
      fill no whole window are dropped (VALID).

    Raises:
      ValueError: if ``x`` has fewer than 3 dimensions, or a window/stride is invalid or
        larger than the input.

    Examples:
      >>> max_pool(jnp.ones((2, 5, 5, 3)), 2).shape  # the odd row/column is dropped
      (2, 2, 2, 3)
    """
    if x.ndim < 3:
        raise ValueError(f"x must be (N, *spatial, C) with >= 1 spatial axis, got {x.shape}")
    spatial = x.shape[1:-1]
    window = _as_tuple(window, len(spatial), "window")
    strides = window if strides is None else _as_tuple(strides, len(spatial), "strides")
    if any(w > s for w, s in zip(window, spatial, strict=True)):
        raise ValueError(f"window {window} is larger than the spatial shape {spatial}")
    if strides != window:
        dims = (1, *window, 1)
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, (1, *strides, 1), "VALID")
    return _tiled_max_pool(x, window, stored_input)


def max_pool_relu(
    x: jax.Array,
    window: int | Sequence[int],
    strides: int | Sequence[int] | None = None,
    bias: jax.Array | None = None,
    *,
    stored_input: bool = False,
) -> jax.Array:
    """``max_pool(relu(x + bias))`` computed as ``relu(max_pool(x) + bias)``.

    ReLU is monotone, so it commutes with max, and a per-channel bias is constant over a
    window, so ``max(x + b) = max(x) + b``: applied after the pool, both touch
    ``prod(window)`` times fewer elements, forward and backward, and the full-resolution
    ``x`` (a convolution's output, the largest tensor of a small CNN) is read once by the
    pool instead of being rewritten by a bias add and a ReLU. Values are equal; gradients
    are equal too, ties included, except where rounding ``x + b`` creates a tie that ``x``
    does not have (the gradient then goes to a different one of the tied maxima).

    Args:
      x: (N, *spatial, C) pre-activation without its bias (e.g. a bias-free conv output).
      window, strides, stored_input: as for :func:`max_pool`.
      bias: optional (C,) per-channel bias.

    Returns:
      Same as ``max_pool(jax.nn.relu(x + bias), window, strides)``.

    Examples:
      >>> max_pool_relu(jnp.array([[[-1.0], [-2.0], [3.0], [0.5]]]), 2)[0, :, 0]
      Array([0., 3.], dtype=float32)
    """
    y = max_pool(x, window, strides, stored_input=stored_input)
    if bias is not None:
        y = add_channel_bias(y, bias)  # checks the bias's shape (pooling keeps C)
    return jax.nn.relu(y)


def _exact_copy(x: jax.Array) -> jax.Array:
    # copysign(|x|, x) is x bit for bit (signed zeros and NaNs included); it only has to be
    # a branch XLA cannot prove equal to the identity, or it would drop the conditional.
    return jnp.copysign(jnp.abs(x), x)


def _written_once(x: jax.Array) -> jax.Array:
    # A conditional is a fusion boundary: its operand must exist in memory, so consumers of
    # the result read it instead of recomputing the elementwise chain that produced it. The
    # predicate depends on the data only so that XLA cannot fold it; both branches are the
    # identity, so the result is x whatever the predicate says.
    first = x.ravel()[0]
    return lax.cond(first == first, lambda y: y, _exact_copy, x)


@jax.custom_vjp
def materialize(x: jax.Array) -> jax.Array:
    """``x`` unchanged, but on CPU written to memory once for all its consumers.

    Why: XLA:CPU fuses cheap elementwise chains (batch-norm normalise, residual add, ReLU)
    into every consumer, including the layout transposes that feed convolution weight
    gradients. In a ResNet the block outputs form a chain, so each transpose recomputed
    up to four blocks' normalisations per element (``docs/perf_notes.md``, session 4).
    Passing a block's output through ``materialize`` cuts that chain: ResNet-20 trains
    about 1.3x faster on CPU. On other platforms (``lax.platform_dependent``) and in the
    gradient it is the identity; values and gradients are exactly those of ``x``.

    Args:
      x: any array (non-floating dtypes pass through untouched).

    Returns:
      ``x``, bit for bit.

    Examples:
      >>> import jax.numpy as jnp
      >>> y = jax.jit(materialize)(jnp.array([-0.0, 1.5, jnp.nan]))
      >>> y.tolist()[1:2], bool(jnp.signbit(y[0])), bool(jnp.isnan(y[2]))
      ([1.5], True, True)
    """
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.size == 0:
        return x
    return lax.platform_dependent(x, cpu=_written_once, default=lambda y: y)


def _materialize_fwd(x: jax.Array):
    return materialize(x), None


def _materialize_bwd(_, g: jax.Array):
    return (g,)


materialize.defvjp(_materialize_fwd, _materialize_bwd)


def add_channel_bias(x: jax.Array, bias: jax.Array) -> jax.Array:
    """``x + bias`` over the last axis, written so that the bias gradient is a float32 sum.

    Why: ``x + bias.astype(x.dtype)`` with ``x`` in bfloat16 broadcasts a bfloat16 bias,
    so autodiff sums its gradient in bfloat16. XLA:CPU splits a low-precision reduction
    into a ``reduce-window`` tree and runs it on one thread through its loop emitter: 1.8
    ms of an 18 ms CIFAR-net step for conv1's bias (``docs/perf_notes.md``, item 28).
    Here the bias is broadcast at (at least) float32 and cast to ``x.dtype`` after, so the
    transpose is a float32 sum, which XLA hands to its fast (YNNPACK) reduce. The gradient
    also keeps its float32 digits instead of being rounded to bfloat16 first. The forward
    value is the same, broadcast and cast fuse into the add, and ordinary autodiff does
    the rest (forward mode included). In float32 it is ``x + bias`` exactly.

    Args:
      x: (..., C) activations, any float dtype.
      bias: (C,) per-channel bias, typically the float32 parameter; it is cast to
        ``x.dtype`` for the add.

    Returns:
      ``x + bias.astype(x.dtype)``, dtype of ``x``; the gradient with respect to ``bias``
      has ``bias.dtype``.

    Raises:
      ValueError: if ``bias`` is not ``(C,)`` for ``x``'s last axis ``C``.

    Examples:
      >>> x = jnp.ones((2, 3), jnp.bfloat16)
      >>> add_channel_bias(x, jnp.array([0.0, 1.0, 2.0])).tolist()
      [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
      >>> jax.grad(lambda b: add_channel_bias(x, b).astype(jnp.float32).sum())(
      ...     jnp.zeros(3)).tolist()
      [2.0, 2.0, 2.0]
    """
    if bias.shape != (x.shape[-1],):
        raise ValueError(f"bias must have shape ({x.shape[-1]},) for x {x.shape}, got {bias.shape}")
    wide = bias.astype(jnp.promote_types(bias.dtype, jnp.float32))
    return x + jnp.broadcast_to(wide, x.shape).astype(x.dtype)


def fork(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x, x)`` for two consumers, whose gradients are summed on the binding's team.

    Why: a residual block's input feeds its first convolution and its shortcut, so its
    gradient is the sum of two. XLA:CPU adds them as a fusion on one thread: in
    ResNet-20's bfloat16 step about 0.55 ms for each 128 x 32 x 32 x 16 map, 3-4 ms a
    step in all. Where the batch-norm kernels run (a single CPU device, float32 or
    bfloat16, the library built, ``JAXCNN_NORM_BACKEND`` not ``xla``: see
    :func:`jaxcnn.batch_norm.native_kernel_activation`) the sum runs on every core
    (``jaxcnn/onednn/add.cc``: 0.16 ms for that map alone; ResNet-20's float32 step
    1.03x, ``docs/perf_notes.md``, item 67). Elsewhere this is ``(x, x)`` and autodiff
    adds as usual. The sum is XLA's bit for bit (bfloat16 is added in float32 and
    rounded to nearest even, as XLA does).

    Args:
      x: any array.

    Returns:
      ``(x, x)``: the same values; the gradient with respect to ``x`` is the sum of both
      outputs' gradients.

    Examples:
      >>> def loss(x):
      ...     a, b = fork(x)
      ...     return jnp.sum(a * 2.0 + b)
      >>> jax.grad(loss)(jnp.array([1.0, 5.0])).tolist()
      [3.0, 3.0]
    """
    from jaxcnn import batch_norm
    from jaxcnn.activations import get_activation

    if batch_norm.native_kernel_activation(x, get_activation("identity"), x.dtype) is None:
        return x, x
    return _native_fork(x)


@jax.custom_vjp
def _native_fork(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x, x


def _native_fork_fwd(x: jax.Array):
    return (x, x), None


def _native_fork_bwd(_, cotangents):
    from jaxcnn.onednn import ffi_add

    return (ffi_add.add(*cotangents),)


_native_fork.defvjp(_native_fork_fwd, _native_fork_bwd)
