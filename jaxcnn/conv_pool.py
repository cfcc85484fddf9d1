"""Convolution followed by a tiled max pool, computed through space-to-depth.

Why this module exists: XLA:CPU runs a convolution slowly when its input has only a few
channels, as the first layer of an MNIST or CIFAR net does (1 or 3). Each output pixel is
then an inner product of only ``k*k*C`` terms, gathered in runs of ``C`` floats, which
does not vectorise. When a stride-1 convolution is followed by a max pool whose windows
tile its output (window ``p``, stride ``p``), the pair can instead be computed as one
convolution over the *space-to-depth* input:

* each ``p x p`` block of input pixels becomes one pixel with ``p*p*C`` channels;
* the kernel becomes ``ceil((k + p - 1) / p)`` taps per axis, with ``p*p*F`` outputs:
  the ``F`` channels at each of the ``p*p`` positions of a pooling window (taps a
  position does not see are zero);
* the pool is then a max over those ``p*p`` output groups, a reduction over a non-minor
  axis, with no strided window reads.

The convolution does about ``(k + p - 1)**2 / k**2`` times more multiply-adds (1.8x for
``k=3, p=2``), but with 4x the channels on both sides it runs faster on CPU. The
gradient is computed the usual way (the max's gradient in the original layout, then
XLA's own convolution gradients), which was faster than differentiating the
space-to-depth convolution. Measurements are in ``docs/perf_notes.md`` (session 5).

On one CPU device where jaxcnn's binding builds, the pair runs instead on its own fused
kernel (``jaxcnn/onednn/conv_pool.cc``, :func:`conv_pool_backend`): each pooled output
is computed from its window's conv outputs in registers and only the pooled map and a
one-byte winner per output are written, where the space-to-depth convolution writes the
whole conv output and reads it back to pool and to differentiate (the MNIST net's step
1.27x faster on the Intel Xeon; ``docs/perf_notes.md``, item 42).

Values equal ``max_pool(conv(x, kernel))`` up to float rounding (the sums are grouped
differently); the gradient of each window goes to its first maximum in row-major order,
as :func:`jaxcnn.fast_ops.max_pool` and ``flax.linen.max_pool`` do.

Examples:
    >>> x = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
    >>> k = jnp.ones((3, 3, 1, 4))
    >>> conv_max_pool(x, k, (2, 2)).shape  # 6 - 3 + 1 = 4, pooled by 2
    (2, 2, 2, 4)
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn import conv_backend, placement, shapes
from jaxcnn.fast_ops import first_max_gradient


def dimension_numbers(rank: int) -> lax.ConvDimensionNumbers:
    """Flax's layout for any spatial rank: (N, *spatial, C) input, (*k, I, O) kernel.

    Examples:
      >>> dimension_numbers(2).lhs_spec
      (0, 3, 1, 2)
    """
    spatial = tuple(range(1, rank + 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, rank + 1, *spatial),
        rhs_spec=(rank + 1, rank, *range(rank)),
        out_spec=(0, rank + 1, *spatial),
    )


def _taps(k: int, p: int) -> int:
    """Kernel taps per axis after space-to-depth by ``p``: ``ceil((k + p - 1) / p)``."""
    return -(-(k + p - 1) // p)


def _space_to_depth_input(x: jax.Array, kernel: tuple, window: tuple) -> jax.Array:
    """(N, *S, C) -> (N, *B, prod(window) * C), channels ordered (window position, c).

    ``B`` holds exactly the blocks the pooled outputs read: the input is cropped or
    zero-padded at the high end to ``B * p`` (padded pixels only meet zero taps).
    """
    n, c, rank = x.shape[0], x.shape[-1], len(window)
    pooled = [(s - k + 1) // p for s, k, p in zip(x.shape[1:-1], kernel, window, strict=True)]
    blocks = [o + _taps(k, p) - 1 for o, k, p in zip(pooled, kernel, window, strict=True)]
    sizes = [b * p for b, p in zip(blocks, window, strict=True)]
    grow = [(0, max(0, t - s)) for t, s in zip(sizes, x.shape[1:-1], strict=True)]
    x = jnp.pad(x, [(0, 0), *grow, (0, 0)])
    x = x[(slice(None), *(slice(0, t) for t in sizes))]
    x = x.reshape(n, *itertools.chain(*zip(blocks, window, strict=True)), c)
    # (N, B1, p1, B2, p2, .., C) -> (N, B1, B2, .., p1, p2, .., C)
    order = (0, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2), 2 * rank + 1)
    return x.transpose(order).reshape(n, *blocks, math.prod(window) * c)


def _space_to_depth_kernel(kernel: jax.Array, window: tuple) -> jax.Array:
    """(*k, C, F) -> (*taps, prod(window) * C, prod(window) * F).

    Output channel ``q * F + f`` is channel ``f`` at window position ``q`` (row-major);
    input channel ``s * C + c`` is channel ``c`` at block offset ``s``. Its weight is
    ``kernel[p * t + s - d]`` (per axis, tap ``t``, window position ``d``), or zero
    where that index falls outside the kernel.
    """
    rank = len(window)
    ksize, (c, f) = kernel.shape[:rank], kernel.shape[rank:]
    taps = [_taps(k, p) for k, p in zip(ksize, window, strict=True)]
    # (t1, p1, t2, p2, .., C, F) -> (t1, t2, .., p1, p2, .., C, F)
    order = (*range(0, 2 * rank, 2), *range(1, 2 * rank, 2), 2 * rank, 2 * rank + 1)
    phases = []
    for shift in itertools.product(*(range(p) for p in window)):
        pad = [(d, p * t - k - d) for d, p, t, k in zip(shift, window, taps, ksize, strict=True)]
        shifted = jnp.pad(kernel, [*pad, (0, 0), (0, 0)])
        split = shifted.reshape(*itertools.chain(*zip(taps, window, strict=True)), c, f)
        phases.append(split.transpose(order))
    stacked = jnp.stack(phases, axis=-2)  # (*taps, *window, C, Q, F)
    q = math.prod(window)
    return stacked.reshape(*taps, q * c, q * f)


def _plain_conv(x, kernel, padding, precision):
    rank = x.ndim - 2
    return conv_backend.conv_general_dilated(
        x, kernel, (1,) * rank, padding,
        dimension_numbers=dimension_numbers(rank), precision=precision,
    )  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_max_pool(x, kernel, window, padding, precision):
    return _forward(x, kernel, window, padding, precision)[0]


def _forward(x, kernel, window, padding, precision):
    rank = len(window)
    x = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    z = conv_backend.conv_general_dilated(
        _space_to_depth_input(x, kernel.shape[:rank], window),
        _space_to_depth_kernel(kernel, window),
        (1,) * rank,
        "VALID",
        dimension_numbers=dimension_numbers(rank),
        precision=precision,
    )
    features = kernel.shape[-1]
    z = z.reshape(*z.shape[:-1], math.prod(window), features)  # (N, *pooled, Q, F)
    return jnp.max(z, axis=-2), z


def _forward_rule(x, kernel, window, padding, precision):
    y, z = _forward(x, kernel, window, padding, precision)
    return y, (x, kernel, z, y)


def _backward_rule(window, padding, precision, residuals, g):
    x, kernel, z, y = residuals
    rank = len(window)
    dz = first_max_gradient(z, y, g, (rank + 1,))  # the window positions of (N, *P, Q, F)
    return _conv_gradients(dz, x, kernel, window, padding, precision)


def _conv_gradients(dz, x, kernel, window, padding, precision):
    """``(dx, dkernel)`` from ``dz``, the gradient at each window position (N, *P, Q, F)."""
    rank = len(window)
    # (N, *pooled, p1, p2, .., F) -> (N, o1*p1, o2*p2, .., F): the conv output's layout.
    n, pooled, features = dz.shape[0], dz.shape[1 : rank + 1], dz.shape[-1]
    dz = dz.reshape(n, *pooled, *window, features)
    order = (0, *itertools.chain(*((1 + i, 1 + rank + i) for i in range(rank))), 2 * rank + 1)
    covered = [o * p for o, p in zip(pooled, window, strict=True)]
    dz = dz.transpose(order).reshape(n, *covered, features)
    # Rows of the conv output that filled no window get no gradient.
    conv_out = shapes.conv_output_shape(x.shape[1:-1], kernel.shape[:rank], 1, padding)
    dz = jnp.pad(
        dz, [(0, 0), *((0, o - c) for o, c in zip(conv_out, covered, strict=True)), (0, 0)]
    )
    _, vjp = jax.vjp(lambda a, b: _plain_conv(a, b, padding, precision), x, kernel)
    return vjp(dz)


_conv_max_pool.defvjp(_forward_rule, _backward_rule)


CONV_POOL_BACKENDS = ("auto", "xla", "native")
# "auto" takes the binding's kernel for at most this many input channels, by dtype. It
# computes each output from kh * kw * C float32 products in registers, which beats a
# convolution plus separate pooling passes when C is small (a first layer) and no longer
# pays when the convolution itself dominates. In bfloat16 oneDNN's space-to-depth
# convolution runs on AMX on the Intel Xeon and won from 3 channels (the CIFAR net's step
# x0.91 on the kernel; the MNIST net's, 1 channel, x1.20): docs/perf_notes.md, item 42.
NATIVE_MAX_CHANNELS = {"float32": 4, "bfloat16": 1}
# On an AVX2-only CPU (AMD's Zen 3) the kernel lost to the space-to-depth convolution:
# the MNIST net's float32 step 2.1x, the CIFAR net's 1.8x with XLA's (item 79), so "auto"
# does not take it there. Its 16-lane vectors spilled AVX2's registers; with 8 lanes there
# (item 84) it is level (x0.96-1.01), still no gain, so the rule stays.


def conv_pool_backend() -> str:
    """``JAXCNN_CONV_POOL_BACKEND``, validated: who runs :func:`conv_max_pool` on a CPU.

    * ``"auto"`` (default): the binding's fused kernel (``jaxcnn/onednn/conv_pool.cc``:
      the pooled map computed without writing the conv output, on every core) when the
      library builds here and the call is one it takes (2-D, float32 or bfloat16, at
      most :data:`NATIVE_MAX_CHANNELS` input channels for its dtype, one CPU device, a
      CPU with AVX-512: not an AVX2-only one), else the space-to-depth convolution;
    * ``"xla"``: always the space-to-depth convolution;
    * ``"native"``: the kernel wherever the call allows, any channel count; raises if
      the library is unavailable.

    Read when a function is traced. ``docs/perf_notes.md``, item 42, has the measurements.

    Examples:
        >>> conv_pool_backend() in CONV_POOL_BACKENDS
        True
    """
    return conv_backend.env_choice("JAXCNN_CONV_POOL_BACKEND", "auto", CONV_POOL_BACKENDS)


def _native_applies(x: jax.Array, kernel: jax.Array, window: tuple) -> bool:
    """Whether this conv + pool runs on the binding's fused kernel (see conv_pool_backend)."""
    choice = conv_pool_backend()
    if choice == "xla":
        return False
    from jaxcnn.onednn import build, ffi_conv_pool

    if x.ndim != 4 or jnp.dtype(x.dtype) not in ffi_conv_pool.DTYPES or kernel.dtype != x.dtype:
        return False
    # The winning position is stored in one byte; the kernel holds at most 128 taps.
    if math.prod(window) > 255 or math.prod(kernel.shape[:-1]) > ffi_conv_pool.MAX_TAPS:
        return False
    if choice == "auto" and x.shape[-1] > NATIVE_MAX_CHANNELS[jnp.dtype(x.dtype).name]:
        return False
    if choice == "auto" and conv_backend.avx2_without_avx512_here():
        return False  # the kernel's loops want AVX-512: see NATIVE_MAX_CHANNELS
    # One CPU device only: XLA cannot split a foreign call over several devices' shards.
    if not placement.one_cpu_device():
        return False
    if choice == "native":
        build.require()
    return build.available()


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _native_conv_max_pool(x, kernel, window, padding, precision):
    return _native_forward(x, kernel, window, padding, precision)[0]


def _native_forward(x, kernel, window, padding, precision):
    from jaxcnn.onednn import ffi_conv_pool

    padded = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    y, arg = ffi_conv_pool.forward(padded, kernel, window)
    return y, (x, kernel, arg)


def _native_backward(window, padding, precision, residuals, g):
    from jaxcnn.onednn import ffi_conv_pool

    x, kernel, arg = residuals
    padded = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    dkernel = ffi_conv_pool.kernel_grad(padded, arg, g, kernel, window)
    # The input's gradient through the plain convolution's: a first layer's input (the
    # images) needs none, and under jit XLA then drops all of this.
    positions = jnp.arange(math.prod(window), dtype=arg.dtype).reshape(1, 1, 1, -1, 1)
    dz = jnp.where(arg[..., None, :] == positions, g[..., None, :], jnp.zeros((), g.dtype))
    dx, _ = _conv_gradients(dz, x, kernel, window, padding, precision)
    return dx, dkernel


_native_conv_max_pool.defvjp(_native_forward, _native_backward)


def conv_for_tiled_pool(call: dict, window: Sequence[int]) -> jax.Array | None:
    """The convolution ``call`` computed only where a tiling pool of ``window`` reads it.

    A VALID pool whose window equals its stride reads ``(out // p) * p`` of a conv's
    ``out`` outputs per axis; the trailing ones are dropped, and their gradient is zero.
    Keras, PyTorch and XLA still compute them, forward and in both gradients (the CIFAR
    net's conv2: 13 x 13 outputs, 12 x 12 read, 15 % of its work). This runs the same
    convolution with the high padding reduced, or the input cropped at the high end, so
    that it makes exactly the outputs that are read: each output is the same sum, and
    the gradients are equal up to rounding (the dropped outputs' terms were zeros).

    Args:
      call: ``lax.conv_general_dilated``'s arguments by name, as
        :class:`jaxcnn.layers.ConvBlock`'s conv tap records them (Flax's NHWC layout).
      window: the pool's window (= its stride), one int per spatial axis.

    Returns:
      The conv output covering ``(out // p) * p`` per axis, or ``None`` when nothing
      would be dropped or the call is outside what this handles (input dilation, other
      layouts); the caller then uses the full output.

    Examples:
      >>> call = dict(lhs=jnp.ones((1, 15, 15, 2)), rhs=jnp.ones((3, 3, 2, 4)),
      ...             window_strides=(1, 1), padding="VALID", lhs_dilation=None,
      ...             rhs_dilation=None, dimension_numbers=dimension_numbers(2),
      ...             feature_group_count=1, batch_group_count=1, precision=None,
      ...             preferred_element_type=None)
      >>> conv_for_tiled_pool(call, (2, 2)).shape  # 13 x 13 outputs, 12 x 12 pooled
      (1, 12, 12, 4)
    """
    lhs, rhs = call["lhs"], call["rhs"]
    rank = lhs.ndim - 2
    ones = (1,) * rank
    if (
        tuple(call["lhs_dilation"] or ones) != ones
        or call["dimension_numbers"] != dimension_numbers(rank)
        or len(window) != rank
    ):
        return None
    spatial, kernel_size = lhs.shape[1:-1], rhs.shape[:rank]
    strides = tuple(call["window_strides"])
    dilation = tuple(call["rhs_dilation"] or ones)
    pads = shapes.resolve_padding(call["padding"], spatial, kernel_size, strides, dilation)
    out = shapes.conv_output_shape(spatial, kernel_size, strides, pads, dilation)
    crops, new_pads = [], []
    for n, k, s, d, (lo, hi), o, p in zip(
        spatial, kernel_size, strides, dilation, pads, out, window, strict=True
    ):
        read = (o // p) * p
        # The padded input the read outputs need: (read - 1) * s + d * (k - 1) + 1 pixels.
        excess = (n + lo + hi) - ((read - 1) * s + d * (k - 1) + 1)
        cut = max(0, excess - hi)  # input pixels dropped once the high padding is used up
        if read < 1 or cut >= n:
            return None
        crops.append(n - cut)
        new_pads.append((lo, max(0, hi - excess)))
    if tuple(crops) == tuple(spatial) and tuple(new_pads) == tuple(pads):
        return None
    cropped = lhs[(slice(None), *(slice(0, c) for c in crops))]
    # lax's own extras (out_sharding) are left out: Flax does not set them.
    names = inspect.signature(conv_backend.conv_general_dilated).parameters
    kwargs = {name: call[name] for name in names if name in call}
    return conv_backend.conv_general_dilated(**{**kwargs, "lhs": cropped, "padding": new_pads})


def conv_max_pool(
    x: jax.Array,
    kernel: jax.Array,
    window: int | Sequence[int],
    padding: str | Sequence[tuple[int, int]] = "VALID",
    precision=None,
) -> jax.Array:
    """``max_pool(conv(x, kernel), window)`` for a stride-1 convolution, via space-to-depth.

    Args:
      x: input (N, *spatial, C), spatial rank 1 to 3.
      kernel: (*kernel_size, C, F), ungrouped and undilated.
      window: max-pool window (= its stride), an int or one per spatial axis; windows
        that do not fit in the conv output are dropped (VALID pooling).
      padding: the convolution's zero padding: ``"VALID"``, ``"SAME"`` or one
        ``(low, high)`` pair per spatial axis.
      precision: passed to ``lax.conv_general_dilated``.

    Returns:
      (N, *[conv_out // window], F) in the dtype of the convolution.

    Raises:
      ValueError: on inconsistent shapes, naming the argument.

    Examples:
      >>> conv_max_pool(jnp.ones((1, 32, 32, 3)), jnp.ones((3, 3, 3, 8)), 2).shape
      (1, 15, 15, 8)
    """
    rank = x.ndim - 2
    if not 1 <= rank <= 3:
        raise ValueError(f"x must be (N, *spatial, C) with 1-3 spatial axes, got {x.shape}")
    if kernel.ndim != rank + 2 or kernel.shape[-2] != x.shape[-1]:
        raise ValueError(
            f"kernel must be (*kernel_size, {x.shape[-1]}, features) for x of shape "
            f"{x.shape}, got {kernel.shape}"
        )
    if isinstance(window, int):
        window = (window,) * rank
    window = tuple(window)
    if len(window) != rank or not all(isinstance(w, int) and w >= 1 for w in window):
        raise ValueError(f"window must be a positive int or {rank} positive ints, got {window}")
    spatial, kernel_size = x.shape[1:-1], kernel.shape[:rank]
    bad_padding = ValueError(
        f"padding must be 'VALID', 'SAME' or {rank} (low, high) pairs >= 0, got {padding!r}"
    )
    if isinstance(padding, str) and padding not in ("VALID", "SAME"):
        raise bad_padding  # CIRCULAR, REFLECT, ... do not pad with zeros
    try:
        pads = shapes.resolve_padding(padding, spatial, kernel_size)
    except ValueError as error:
        raise bad_padding from error
    conv_out = shapes.conv_output_shape(spatial, kernel_size, 1, pads)
    if any(o < w for o, w in zip(conv_out, window, strict=True)):
        raise ValueError(f"window {window} is larger than the conv output {tuple(conv_out)}")
    if _native_applies(x, kernel, window):
        return _native_conv_max_pool(x, kernel, window, pads, precision)
    return _conv_max_pool(x, kernel, window, pads, precision)
