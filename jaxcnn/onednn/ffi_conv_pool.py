"""The fused first-layer conv + tiling max pool of ``conv_pool.cc``: two FFI calls (CPU only).

:func:`forward` computes ``max_pool(conv(x, kernel, "VALID"), window)`` without writing
the conv output, and which window position won each pooled element; :func:`kernel_grad`
the kernel's gradient from those positions. :mod:`jaxcnn.conv_pool` calls them (with its
own custom VJP) when its ``_native_applies`` says so.

Examples (tests/test_conv_pool_native.py runs them where the binding builds):
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> y, arg = forward(x, jnp.ones((1, 1, 1, 1)), (2, 2))
    >>> y[0, :, :, 0].tolist(), arg[0, :, :, 0].tolist()  # the bottom-right of each window
    ([[5.0, 7.0], [13.0, 15.0]], [[3, 3], [3, 3]])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import shapes
from jaxcnn.onednn import build

DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
MAX_TAPS = 128  # KH * KW * C: conv_pool.cc's kMaxTaps


def pooled_shape(x_shape, kernel_shape, window) -> tuple[int, int, int, int]:
    """``(N, OH, OW, F)``: the VALID conv's output pooled by ``window`` (floor), by
    :mod:`jaxcnn.shapes`' calculator.

    Examples:
        >>> pooled_shape((128, 28, 28, 1), (3, 3, 1, 32), (2, 2))
        (128, 13, 13, 32)
    """
    conv = shapes.conv_output_shape(x_shape[1:3], kernel_shape[:2])
    pooled = shapes.pool_output_shape(conv, window, stride=window)
    return (x_shape[0], *pooled, kernel_shape[3])


def forward(x: jax.Array, kernel: jax.Array, window: tuple[int, int]):
    """``(y, arg)``: the pooled VALID convolution and each element's winning position.

    Args:
      x: ``(N, H, W, C)`` (padded already); the kernel reads it as float32 (a first
        layer's input is small: the cast costs little, and saves converting each value
        at every tap).
      kernel: ``(KH, KW, C, F)``, float32 or bfloat16.
      window: the pool's ``(PH, PW)``, equal to its stride.

    Returns:
      ``y`` ``(N, OH, OW, F)`` in ``kernel``'s dtype, and ``arg``, uint8 of the same
      shape: the row-major position ``a * PW + b`` in its window of the first maximum.
    """
    build.require()
    shape = pooled_shape(x.shape, kernel.shape, window)
    return jax.ffi.ffi_call(
        "jaxcnn_conv_max_pool_forward",
        (jax.ShapeDtypeStruct(shape, kernel.dtype), jax.ShapeDtypeStruct(shape, jnp.uint8)),
        vmap_method="sequential",
    )(x.astype(jnp.float32), kernel, window_h=np.int64(window[0]), window_w=np.int64(window[1]))


def kernel_grad(x, arg, dy, kernel, window: tuple[int, int]) -> jax.Array:
    """The cotangent of :func:`forward`'s ``kernel`` (its shape and dtype) from ``y``'s, ``dy``.

    ``dy`` may be float32 or bfloat16; ``x`` and ``arg`` are :func:`forward`'s.
    """
    build.require()
    return jax.ffi.ffi_call(
        "jaxcnn_conv_max_pool_kernel_grad",
        jax.ShapeDtypeStruct(kernel.shape, kernel.dtype),
        vmap_method="sequential",
    )(x.astype(jnp.float32), arg, dy, window_h=np.int64(window[0]), window_w=np.int64(window[1]))
