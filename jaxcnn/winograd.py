"""3x3 SAME stride-1 float32 convolutions as Winograd F(4x4, 3x3), NHWC (CPU only).

A direct 3x3 convolution spends 144 multiplications on a 4 x 4 tile of outputs per input
and output channel; Winograd's minimal filtering spends 36 (Lavin and Gray 2016). Each
input tile of 6 x 6 pixels (overlapping by 2) is transformed once (``V = BT d B``), each
kernel once (``U = G g GT``), the 36 positions of a tile become 36 matrix products over
the channels (``M = V U``, XLA's batched dot on every core), and ``AT M A`` gives the 4 x
4 outputs. The transforms are binding calls (``jaxcnn/onednn/winograd.cc``) on the
OpenMP team; the gradient runs the transposed transforms and two more batched dots, so
the input and kernel gradients are Winograd too.

Why: oneDNN has Winograd kernels only on AVX-512 CPUs, and on the AVX2-only Zen 3 XLA's
direct convolutions of the fast CIFAR net's 256-channel layers already ran at the SGEMM
ceiling (``docs/perf_notes.md``, item 85). Rounding: relative errors near 1e-5 of the
largest output against direct convolution (float32; the points 0, +-1, +-2 keep the
transform's entries small), the usual price of F(4x4, 3x3).

Examples (they need the binding; tests/test_winograd.py runs them where it builds):
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((1, 5, 5, 2))
    >>> w = jnp.ones((3, 3, 2, 1))
    >>> y = conv3x3(x, w)
    >>> y.shape, round(float(y[0, 2, 2, 0]), 4), round(float(y[0, 0, 0, 0]), 4)
    ((1, 5, 5, 1), 18.0, 8.0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.onednn import build

TILE = 4  # outputs per tile side
POINTS = (TILE + 2) ** 2  # 36 products per tile

# U = G g GT for F(4x4, 3x3), points 0, 1, -1, 2, -2 and infinity.
_G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=np.float32,
)


def tile_count(batch: int, height: int, width: int) -> int:
    """Rows of the transformed tiles: one per 4 x 4 block of outputs, edges included.

    Examples:
        >>> tile_count(128, 7, 7)
        512
    """
    return batch * -(-height // TILE) * -(-width // TILE)


# kron(G, G)[p * 6 + q, i * 3 + j] = G[p, i] G[q, j]: the kernel transform as one matrix,
# so that it is one dot over every channel pair (an einsum with G on both sides took XLA
# 10.8 ms for 256 x 256 channels, this 1 ms).
_GG = np.kron(_G, _G)


def kernel_transform(w: jax.Array) -> jax.Array:
    """``G g GT`` for every input and output channel: (3, 3, C, K) -> (36, C, K).

    Examples:
        >>> u = kernel_transform(jnp.ones((3, 3, 1, 1)))
        >>> u.shape, round(float(u[0, 0, 0]), 4)  # G's first row is (1/4, 0, 0)
        ((36, 1, 1), 0.0625)
    """
    flat = w.reshape(9, -1)
    u = jnp.dot(jnp.asarray(_GG, w.dtype), flat, precision=lax.Precision.HIGHEST)
    return u.reshape(POINTS, *w.shape[2:])


def _transform(target: str, operand: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.ffi.ffi_call(
        target, jax.ShapeDtypeStruct(shape, operand.dtype), vmap_method="sequential"
    )(operand)


def _products(v: jax.Array, u: jax.Array) -> jax.Array:
    # [36, R, C] x [36, C, K] -> [36, R, K], batched over the 36 positions.
    return lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))


@jax.custom_vjp
def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return _conv_fwd(x, w)[0]


def _conv_fwd(x, w):
    n, h, wd, c = x.shape
    rows = tile_count(n, h, wd)
    v = _transform("jaxcnn_winograd_input", x, (POINTS, rows, c))
    u = kernel_transform(w)
    y = _transform("jaxcnn_winograd_output", _products(v, u), (n, h, wd, w.shape[-1]))
    return y, (v, u, w, x.shape)


def _conv_bwd(residuals, dy):
    v, u, w, x_shape = residuals
    dm = _transform("jaxcnn_winograd_output_grad", dy, (POINTS, v.shape[1], dy.shape[-1]))
    dv = lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))))  # [36, R, C]
    dx = _transform("jaxcnn_winograd_input_grad", dv, x_shape)
    du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))))  # [36, C, K]
    (dw,) = jax.vjp(kernel_transform, w)[1](du)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv3x3(x: jax.Array, w: jax.Array) -> jax.Array:
    """A 3x3 SAME stride-1 convolution, NHWC x HWIO -> NHWC, float32, by F(4x4, 3x3).

    Args:
      x: (N, H, W, C) float32.
      w: (3, 3, C, K) float32.

    Returns:
      (N, H, W, K) float32: ``lax.conv_general_dilated(x, w, (1, 1), "SAME")`` up to
      rounding; differentiable in both arguments.

    Raises:
      ValueError: naming the argument, its shape or dtype and what is valid.
    """
    if x.ndim != 4 or w.shape[:2] != (3, 3) or w.ndim != 4 or w.shape[2] != x.shape[-1]:
        raise ValueError(
            f"winograd.conv3x3: x must be (N, H, W, C) and w (3, 3, C, K); got x {x.shape}, "
            f"w {w.shape}"
        )
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise ValueError(f"winograd.conv3x3: x and w must be float32; got {x.dtype} and {w.dtype}")
    build.require()
    return _conv(x, w)
