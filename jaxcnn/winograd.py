"""3x3 stride-1 float32 convolutions as Winograd F(4x4, 3x3), NHWC (CPU only).

A direct 3x3 convolution spends 144 multiplications on a 4 x 4 tile of outputs per input
and output channel; Winograd's minimal filtering spends 36 (Lavin and Gray 2016). Each
input tile of 6 x 6 pixels (overlapping by 2) is transformed once (``V = BT d B``), each
kernel once (``U = G g GT``), the 36 positions of a tile become 36 matrix products over
the channels (``M = V U``, XLA's batched dot on every core), and ``AT M A`` gives the 4 x
4 outputs. Two ways to run it (``method``), both binding calls
(``jaxcnn/onednn/winograd.cc``) on the OpenMP team, both with Winograd gradients:

* unfused: the transforms are calls of their own and the 36 products XLA's batched dots;
  the gradient runs the transposed transforms and two more dots. For wide layers, whose
  products are most of the work.
* fused: each thread transforms a block of tiles, multiplies it (an FMA micro-kernel)
  and transforms the result back while it is in its caches; the input gradient is the
  same kernel on dy with the kernel turned by 180 degrees, the kernel gradient sums
  ``V^T dM`` per thread. For narrow layers, where the unfused path's trips of the
  transformed tiles to memory and back cost more than the products (item 87).

Any padding (SAME, VALID, uneven, negative entries that crop): the tiles cover the
output map, and what they read outside the image is zero.

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
    >>> conv3x3(x, w, "VALID").shape
    (1, 3, 3, 1)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

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


def explicit_padding(spatial: Sequence[int], padding) -> tuple[tuple[int, int], ...]:
    """``((top, bottom), (left, right))`` of a 3x3 stride-1 convolution over ``spatial``.

    Raises:
      ValueError: naming ``padding`` when it is neither ``"SAME"``, ``"VALID"`` nor two
        pairs of integers.

    Examples:
        >>> explicit_padding((5, 6), "SAME")
        ((1, 1), (1, 1))
    """
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(
                f"winograd.conv3x3: padding {padding!r}; valid: 'SAME', 'VALID' or pairs"
            )
        return tuple(map(tuple, lax.padtype_to_pads(tuple(spatial), (3, 3), (1, 1), padding)))
    try:
        pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    except TypeError:  # not pairs of integers, e.g. (1, 1)
        pads = ()
    if len(pads) != 2 or any(len(pair) != 2 for pair in pads):
        raise ValueError(
            f"winograd.conv3x3: padding {padding!r}; valid: 'SAME', 'VALID' or "
            f"((top, bottom), (left, right))"
        )
    return pads


def tile_waste(spatial: Sequence[int], padding) -> float:
    """Outputs that the 4 x 4 tiles compute per output wanted of a 3x3 stride-1
    convolution's map (they cover it to the next multiple of 4 on each side); 1.0 for a
    map within one tile.

    Examples:
        >>> tile_waste((12, 12), "VALID")  # a 10 x 10 map: 12 x 12 computed
        1.44
        >>> tile_waste((3, 3), "SAME")  # one tile
        1.0
    """
    pads = explicit_padding(spatial, padding)
    out = [size + lo + hi - 2 for size, (lo, hi) in zip(spatial, pads, strict=True)]
    if max(out) <= TILE:
        return 1.0
    return math.prod(-(-o // TILE) * TILE for o in out) / max(1, math.prod(out))


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


def _binding(target: str, shape: tuple[int, ...], *operands: jax.Array, **attrs) -> jax.Array:
    call = jax.ffi.ffi_call(
        target, jax.ShapeDtypeStruct(tuple(shape), operands[0].dtype), vmap_method="sequential"
    )
    return call(*operands, **{name: np.int64(value) for name, value in attrs.items()})


def _products(v: jax.Array, u: jax.Array) -> jax.Array:
    # [36, R, C] x [36, C, K] -> [36, R, K], batched over the 36 positions.
    return lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))


# geometry: (input height, input width, padding top, bottom, left, right), static.
def _tiling(n: int, geometry: tuple[int, ...]) -> tuple[int, int, int, dict[str, int]]:
    h, w, top, bottom, left, right = geometry
    oh, ow = h + top + bottom - 2, w + left + right - 2
    attrs = {"out_h": oh, "out_w": ow, "pad_top": top, "pad_left": left}
    return oh, ow, tile_count(n, oh, ow), attrs


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, geometry: tuple[int, ...]) -> jax.Array:
    return _conv_fwd(x, w, geometry)[0]


def _conv_fwd(x, w, geometry):
    n, c = x.shape[0], x.shape[-1]
    oh, ow, rows, attrs = _tiling(n, geometry)
    v = _binding("jaxcnn_winograd_input", (POINTS, rows, c), x, **attrs)
    u = kernel_transform(w)
    y = _binding("jaxcnn_winograd_output", (n, oh, ow, w.shape[-1]), _products(v, u))
    return y, (v, u, w)


def _conv_bwd(geometry, residuals, dy):
    v, u, w = residuals
    n, c = dy.shape[0], v.shape[-1]
    _, _, rows, attrs = _tiling(n, geometry)
    dm = _binding("jaxcnn_winograd_output_grad", (POINTS, rows, dy.shape[-1]), dy)
    dv = lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))))  # [36, R, C]
    dx = _binding("jaxcnn_winograd_input_grad", (n, *geometry[:2], c), dv, **attrs)
    du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))))  # [36, C, K]
    (dw,) = jax.vjp(kernel_transform, w)[1](du)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


# The fused kernels: each thread transforms a block of tiles, multiplies it and
# transforms it back within its caches (winograd.cc). The input gradient is the same
# convolution of dy with the kernel turned by 180 degrees, its channels swapped, and low
# padding 2 - top (negative: the tiles start inside dy).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_fused(x: jax.Array, w: jax.Array, geometry: tuple[int, ...]) -> jax.Array:
    return _conv_fused_fwd(x, w, geometry)[0]


def _conv_fused_fwd(x, w, geometry):
    _, _, top, _, left, _ = geometry
    oh, ow, _, _ = _tiling(x.shape[0], geometry)
    shape = (x.shape[0], oh, ow, w.shape[-1])
    y = _binding("jaxcnn_winograd_conv", shape, x, kernel_transform(w), pad_top=top, pad_left=left)
    return y, (x, w)


def _conv_fused_bwd(geometry, residuals, dy):
    x, w = residuals
    _, _, top, _, left, _ = geometry
    turned = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    u_turned = kernel_transform(turned)
    dx = _binding("jaxcnn_winograd_conv", x.shape, dy, u_turned, pad_top=2 - top, pad_left=2 - left)
    du_shape = (POINTS, *w.shape[2:])
    du = _binding("jaxcnn_winograd_kernel_grad", du_shape, x, dy, pad_top=top, pad_left=left)
    (dw,) = jax.vjp(kernel_transform, w)[1](du)
    return dx, dw


_conv_fused.defvjp(_conv_fused_fwd, _conv_fused_bwd)

METHODS = ("auto", "fused", "unfused")
# "auto" fuses layers with at most this many channels in and out (item 87).
FUSED_MAX_CHANNELS = 64
# ... and whose input map takes at most this many tiles per tile of the output map: the
# fused input gradient tiles the input map, the forward pass and the kernel gradient the
# output map. The MNIST net's conv2 (12 x 12 -> 10 x 10: 1.0) and the CIFAR net's (14 x 14
# -> 12 x 12: 1.78) gained fused, its conv3 (6 x 6 -> 4 x 4: 4.0) lost (items 87, 89).
FUSED_MAX_TILE_RATIO = 2.0


def fused_pays(
    channels: Sequence[int],
    pads: Sequence[tuple[int, int]],
    spatial: Sequence[int] | None = None,
) -> bool:
    """Whether ``method="auto"`` runs a layer by the fused kernels: at most
    ``FUSED_MAX_CHANNELS`` channels in and out (where the unfused path sends the
    transformed tiles to memory and back for few products), and an input map (``spatial``,
    height and width) of at most ``FUSED_MAX_TILE_RATIO`` times the output map's tiles.
    The input gradient, a convolution of dy onto the input map, takes that many more
    tiles than the forward pass: none with SAME padding, 4 for 1 on a 6 x 6 VALID map.
    Without ``spatial``, SAME padding only (output map = input map).

    Examples:
        >>> fused_pays((16, 16), ((1, 1), (1, 1))), fused_pays((256, 256), ((1, 1), (1, 1)))
        (True, False)
        >>> fused_pays((32, 64), ((0, 0), (0, 0)), (12, 12))  # VALID, 10 x 10: 9 tiles each
        True
        >>> fused_pays((64, 64), ((0, 0), (0, 0)), (6, 6))  # VALID, 4 x 4: 4 tiles for 1
        False
    """
    if max(channels) > FUSED_MAX_CHANNELS:
        return False
    if all(lo + hi == 2 for lo, hi in pads):
        return True
    if spatial is None:
        return False
    (top, bottom), (left, right) = pads
    height, width = spatial
    output_tiles = tile_count(1, height + top + bottom - 2, width + left + right - 2)
    return tile_count(1, height, width) <= FUSED_MAX_TILE_RATIO * output_tiles


def conv3x3(
    x: jax.Array,
    w: jax.Array,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    method: str = "auto",
) -> jax.Array:
    """A 3x3 stride-1 convolution, NHWC x HWIO -> NHWC, float32, by F(4x4, 3x3).

    Args:
      x: (N, H, W, C) float32.
      w: (3, 3, C, K) float32.
      padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))``, as lax
        takes it (negative entries crop).
      method: ``"fused"`` (each thread transforms, multiplies and transforms back a
        block of tiles in its caches), ``"unfused"`` (the transforms as calls of their
        own, the products as XLA's batched dots), or ``"auto"``: fused where
        :func:`fused_pays` (narrow layers whose input map takes few more tiles than
        their output map).

    Returns:
      (N, OH, OW, K) float32, OH = H + top + bottom - 2:
      ``lax.conv_general_dilated(x, w, (1, 1), padding)`` up to rounding; differentiable
      in both arguments.

    Raises:
      ValueError: naming the argument, its shape, dtype or value and what is valid.
    """
    if x.ndim != 4 or w.shape[:2] != (3, 3) or w.ndim != 4 or w.shape[2] != x.shape[-1]:
        raise ValueError(
            f"winograd.conv3x3: x must be (N, H, W, C) and w (3, 3, C, K); got x {x.shape}, "
            f"w {w.shape}"
        )
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise ValueError(f"winograd.conv3x3: x and w must be float32; got {x.dtype} and {w.dtype}")
    h, wd = x.shape[1:3]
    (top, bottom), (left, right) = explicit_padding((h, wd), padding)
    if h + top + bottom < 3 or wd + left + right < 3:
        raise ValueError(
            f"winograd.conv3x3: padding {padding!r} leaves no output for x {x.shape}; the "
            f"padded height and width must be at least 3"
        )
    if method not in METHODS:
        raise ValueError(f"winograd.conv3x3: method {method!r}; valid: {', '.join(METHODS)}")
    build.require()
    geometry = (h, wd, top, bottom, left, right)
    pads = ((top, bottom), (left, right))
    if method == "fused" or (method == "auto" and fused_pays(w.shape[2:], pads, (h, wd))):
        return _conv_fused(x, w, geometry)
    return _conv(x, w, geometry)
