"""A 2-D NHWC/HWIO convolution that runs oneDNN's kernels, differentiable by a custom VJP.

Forward, input gradient and kernel gradient are each one FFI call into
``onednn_conv.cc`` (oneDNN's forward, backward-data and backward-weights primitives), or
for bfloat16 kernel gradients on CPUs with AVX-512 BF16 and no AMX into the binding's own
``kernel_grad_pairs.cc`` (:func:`kernel_grad_method`), so ``jax.grad`` through
:func:`conv2d` never reaches XLA's own convolution. Reverse mode
only: ``jax.jvp`` / ``jax.jacfwd`` through it raise (a custom VJP has no JVP rule).

Examples (tests/test_onednn.py runs them where oneDNN is available):
    >>> import jax.numpy as jnp
    >>> y = conv2d(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 2)), (1, 1), ((0, 0), (0, 0)))
    >>> y.shape, float(y[0, 0, 0, 0])  # each output sums a 3x3 window of ones
    ((1, 3, 3, 2), 9.0)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from jaxcnn import shapes
from jaxcnn.onednn import build

Pairs = tuple[tuple[int, int], ...]


# oneDNN's algorithm, by name -> the binding's "algorithm" attribute.
ALGORITHMS = {"direct": 0, "winograd": 1}
# The binding's third value, forward passes only: see forward_method.
_ATTRIBUTES = {**ALGORITHMS, "transposed": 2}


def _call(
    target: str,
    out: jax.ShapeDtypeStruct,
    a,
    b,
    strides,
    padding,
    dilation,
    algorithm,
    on_main: bool = False,
):
    build.require()
    if out.dtype == jax.numpy.bfloat16 and not build.makes_bfloat16(on_main):
        raise build.OnednnUnavailable(
            f"oneDNN has no bfloat16 convolution kernels for this CPU ({target}): they need "
            "AVX-512 or AVX2-VNNI-2; use float32, or the xla convolution backend"
        )
    # bfloat16 on oneDNN 3 where it runs beside 2.x, unless `on_main` (main_library_pays)
    if not on_main and build.onednn3_serves(out.dtype):
        target = build.onednn3_target(target)
    return jax.ffi.ffi_call(target, out, vmap_method="sequential")(
        a,
        b,
        window_strides=np.asarray(strides, np.int64),
        padding=np.asarray(padding, np.int64).reshape(-1),
        rhs_dilation=np.asarray(dilation, np.int64),
        algorithm=np.int64(_ATTRIBUTES[algorithm]),
    )


# Below this many input or output channels oneDNN pads Winograd's tiles with zeros: the
# CIFAR net's first layer (3 -> 32) took its kernel gradient in 9.2 ms against 4.7 direct.
WINOGRAD_MIN_CHANNELS = 16


def winograd_pays(x_shape, kernel_shape, strides, dilation) -> bool:
    """Whether ``algorithm="winograd"`` asks oneDNN for Winograd on this convolution.

    3x3 kernels, stride 1, no dilation, at least ``WINOGRAD_MIN_CHANNELS`` channels in
    and out; oneDNN may still decline (no AVX-512, bfloat16), and then runs direct.

    Examples:
        >>> winograd_pays((8, 15, 15, 32), (3, 3, 32, 64), (1, 1), (1, 1))
        True
        >>> winograd_pays((8, 32, 32, 3), (3, 3, 3, 32), (1, 1), (1, 1))  # 3 channels in
        False
    """
    return (
        tuple(kernel_shape[:2]) == (3, 3)
        and tuple(strides) == (1, 1)
        and tuple(dilation) == (1, 1)
        and min(x_shape[3], kernel_shape[3]) >= WINOGRAD_MIN_CHANNELS
    )


# "auto" asks for Winograd only from this many channels in and out: the fast CIFAR net's
# 64- and 256-channel layers (its float32 step x1.17 on the Intel Xeon, x1.21-1.46 on
# Zen 4), not the teaching nets' 32 -> 64 conv2, where Winograd lost on the Xeon (x0.84,
# x0.89) (docs/perf_notes.md, items 34, 37 and 41).
WINOGRAD_AUTO_MIN_CHANNELS = 64

# ... and only from this many output tiles (4 x 4 each, over the batch) times the smaller
# channel count: below it the tile transforms cost more than the multiplications saved.
# Alone on the Intel Xeon, forward and both gradients, Winograd against direct: 8,192
# x0.57-0.77 (ResNet-20's 64 -> 64 on 8 x 8 at batch 32; the fast CIFAR net's 256 -> 256
# on 3 x 3 at 32), 16,384 x0.77-1.00, 32,768 x0.98-1.08 (both at batch 128), above that
# x1.23-1.38 (docs/perf_notes.md, item 94). So the batch-128 choices stay as they were.
WINOGRAD_AUTO_MIN_TILE_CHANNELS = 1 << 15


def winograd_tiles(x_shape, kernel_shape, strides, padding, dilation) -> int:
    """How many 4 x 4 output tiles Winograd F(4x4, 3x3) computes over the whole batch.

    Examples:
        >>> winograd_tiles((32, 8, 8, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)), (1, 1))
        128
        >>> winograd_tiles((32, 3, 3, 256), (3, 3, 256, 256), (1, 1), ((1, 1), (1, 1)), (1, 1))
        32
    """
    from jaxcnn.winograd import tile_count  # imports this package: not at module level

    _, height, width, _ = output_shape(x_shape, kernel_shape, strides, padding, dilation)
    return tile_count(x_shape[0], height, width)


def resolve_algorithm(algorithm: str, x_shape, kernel_shape, strides, padding, dilation) -> str:
    """The algorithm one convolution runs with: ``"direct"`` or ``"winograd"``.

    ``"winograd"`` where :func:`winograd_pays`; ``"auto"`` where it pays, both channel
    counts are at least ``WINOGRAD_AUTO_MIN_CHANNELS``, and the output tiles
    (:func:`winograd_tiles`) times the smaller channel count reach
    ``WINOGRAD_AUTO_MIN_TILE_CHANNELS``; else ``"direct"``.

    Examples:
        >>> same = ((1, 1), (1, 1))
        >>> resolve_algorithm("auto", (32, 16, 16, 64), (3, 3, 64, 256), (1, 1), same, (1, 1))
        'winograd'
        >>> resolve_algorithm("auto", (8, 15, 15, 32), (3, 3, 32, 64), (1, 1), same, (1, 1))
        'direct'
        >>> resolve_algorithm("auto", (32, 8, 8, 64), (3, 3, 64, 64), (1, 1), same, (1, 1))
        'direct'
    """
    pays = winograd_pays(x_shape, kernel_shape, strides, dilation)
    if algorithm == "auto":
        channels = min(x_shape[3], kernel_shape[3])
        if not pays or channels < WINOGRAD_AUTO_MIN_CHANNELS:
            return "direct"
        tiles = winograd_tiles(x_shape, kernel_shape, strides, padding, dilation)
        return "winograd" if tiles * channels >= WINOGRAD_AUTO_MIN_TILE_CHANNELS else "direct"
    return "winograd" if algorithm == "winograd" and pays else "direct"


def output_shape(x_shape, kernel_shape, strides, padding, dilation) -> tuple[int, ...]:
    """NHWC output shape, by :func:`jaxcnn.shapes.conv_output_shape` on the two spatial axes.

    Raises:
      ValueError: the (dilated) kernel does not fit the padded input.

    Examples:
        >>> output_shape((2, 32, 32, 3), (3, 3, 3, 8), (1, 1), ((0, 0), (0, 0)), (1, 1))
        (2, 30, 30, 8)
    """
    spatial = shapes.conv_output_shape(x_shape[1:3], kernel_shape[:2], strides, padding, dilation)
    return (x_shape[0], *spatial, kernel_shape[3])


# Input gradients of convolutions with fewer channels than this in and out run on the
# main library (oneDNN 2.6) even where bfloat16 runs on oneDNN 3.2, on CPUs without AMX:
# there 3.2's backward data (brg_fwd, brgconv_strided) is the slower one, wider ones the
# faster. Alone on the Zen 5 CPU, batch 128, bfloat16 (ms, 2.6 against 3.2): ResNet-20's
# 32x32 16 -> 32 stride 2 0.36 against 0.95, 16x16 32 -> 64 stride 2 0.35 against 0.56,
# 16x16 32 -> 32 0.55 against 0.60, 32x32 16 -> 16 and 8x8 64 -> 64 level (0.77, 0.56-0.57
# against 0.55-0.56); the teaching nets' conv2 (valid) 12x12 0.57 against 0.78, 14x14 0.80
# against 0.84, the CIFAR net's 6x6 conv3 0.15 against 0.22; the fast CIFAR net's 31x31
# 24 -> 64 4.9 against 5.3, 15x15 64 -> 64 level; but 15x15 64 -> 256 9.3 against 7.6,
# 7x7 256 -> 256 8.3 against 6.8, stride 2 from 128 channels (batch 32) 4.2 against 3.7
# (docs/perf_notes.md, item 76). Not where the CPU has AMX, whose 3.2 kernels are the
# fast ones (item 46).
INPUT_GRAD_MAIN_BELOW = 128


def main_library_pays(kernel_shape, amx: bool | None = None) -> bool:
    """Whether a convolution's input gradient runs on the main library even where
    bfloat16 runs on oneDNN 3 (``jaxcnn.onednn.build.onednn3_serves``): fewer than
    ``INPUT_GRAD_MAIN_BELOW`` channels in and out, on a CPU without AMX (``amx``;
    ``None``: this CPU's ``amx_bf16`` flag).

    Examples:
        >>> main_library_pays((3, 3, 16, 32), amx=False)
        True
        >>> main_library_pays((3, 3, 16, 32), amx=True)
        False
        >>> main_library_pays((3, 3, 64, 256), amx=False)
        False
    """
    from jaxcnn.conv_backend import amx_here

    if max(kernel_shape[2:]) >= INPUT_GRAD_MAIN_BELOW:
        return False
    return not (amx_here() if amx is None else amx)


FORWARD_METHODS = ("auto", "direct", "transposed")
# "auto" runs the forward pass as the transposed convolution's backward data (the
# binding's "transposed") for layers with fewer than TRANSPOSED_OUT_CHANNELS_BELOW output
# channels, or up to that many from fewer than TRANSPOSED_NARROW_IN_CHANNELS input
# channels: there oneDNN's forward kernel (brgconv) is the slower one. Alone on the Zen 5
# CPU, batch 128, float32, oneDNN 2.6 (ms): 32x32 maps 3 -> 16 channels 0.38 -> 0.25,
# 16 -> 16 1.39 -> 1.27 (1.81 -> 1.37 in another run), 8 -> 16 0.82 -> 0.68, the whitening
# layer's 2x2 3 -> 24 0.34 -> 0.24, 3 -> 32 (30x30 out) 0.57 -> 0.39; but 8 -> 32 and
# 16 -> 32 x0.97-0.98, 3 -> 64 x0.90-0.97, 32 -> 32 x0.96, 24 -> 64 x0.87. bfloat16 on
# oneDNN 3.2: 3 -> 24 x1.50, 3 -> 16 x1.09, 16 -> 16 x1.03, wider ones x0.94-1.02
# (docs/perf_notes.md, item 75).
TRANSPOSED_OUT_CHANNELS_BELOW = 32
TRANSPOSED_NARROW_IN_CHANNELS = 8


def forward_method(x_shape, kernel_shape, strides, padding, dilation, algorithm: str) -> str:
    """How the forward pass of one convolution runs: ``"direct"`` (oneDNN's forward
    convolution, Winograd's where ``algorithm`` is ``"winograd"``) or ``"transposed"``.

    ``"transposed"`` computes it as oneDNN's backward data of the transposed convolution
    (taps flipped, channels exchanged: the same sums), for stride 1, direct algorithm,
    padding no wider than the (dilated) kernel less one, and kernels of up to 2**18
    elements (the binding's 1 MiB gather table).
    ``JAXCNN_ONEDNN_FORWARD`` (read at trace time): ``auto`` (default) takes it for those
    with fewer than ``TRANSPOSED_OUT_CHANNELS_BELOW`` output channels, or exactly that
    many from fewer than ``TRANSPOSED_NARROW_IN_CHANNELS`` input channels;
    ``transposed`` for every one it can run; ``direct`` for none.

    Examples:
        >>> same, one = ((1, 1), (1, 1)), (1, 1)
        >>> forward_method((8, 32, 32, 16), (3, 3, 16, 16), one, same, one, "direct")
        'transposed'
        >>> forward_method((8, 32, 32, 16), (3, 3, 16, 32), one, same, one, "direct")
        'direct'
        >>> forward_method((8, 32, 32, 3), (3, 3, 3, 32), one, same, one, "direct")
        'transposed'
        >>> forward_method((8, 32, 32, 16), (3, 3, 16, 16), (2, 2), same, one, "direct")
        'direct'
    """
    from jaxcnn.conv_backend import env_choice

    choice = env_choice("JAXCNN_ONEDNN_FORWARD", "auto", FORWARD_METHODS)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel_shape[:2], dilation, strict=True)]
    runs = (
        algorithm == "direct"
        and tuple(strides) == (1, 1)
        and all(max(pair) <= e - 1 for pair, e in zip(padding, extents, strict=True))
        and np.prod(kernel_shape) <= 1 << 18  # the binding's gather table: 1 MiB in float32
    )
    if choice == "direct" or not runs:
        return "direct"
    if choice == "transposed":
        return "transposed"
    channels_in, channels_out = kernel_shape[2:]
    few_out = channels_out < TRANSPOSED_OUT_CHANNELS_BELOW
    narrow_in = channels_in < TRANSPOSED_NARROW_IN_CHANNELS
    return "transposed" if few_out or (narrow_in and channels_out == 32) else "direct"


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, kernel, strides: tuple, padding: Pairs, dilation: tuple, algorithm: str):
    shape = output_shape(x.shape, kernel.shape, strides, padding, dilation)
    out = jax.ShapeDtypeStruct(shape, x.dtype)
    method = forward_method(x.shape, kernel.shape, strides, padding, dilation, algorithm)
    geometry = (strides, padding, dilation, algorithm if method == "direct" else method)
    return _call("jaxcnn_onednn_conv_forward", out, x, kernel, *geometry)


def _forward_rule(x, kernel, strides, padding, dilation, algorithm):
    return _conv(x, kernel, strides, padding, dilation, algorithm), (x, kernel)


def _backward_rule(strides, padding, dilation, algorithm, residuals, dy):
    x, kernel = residuals
    geometry = (strides, padding, dilation, algorithm)
    dy = dy.astype(x.dtype)
    # d(loss)/dx: oneDNN's backward-data; d(loss)/dkernel: its backward-weights (over
    # mosaics of the images), or its forward convolution with batch and channels swapped,
    # where each measured faster (kernel_grad_method).
    on_main = main_library_pays(kernel.shape) and build.makes_bfloat16(on_main=True)
    dx = _call("jaxcnn_onednn_conv_input_grad", _like(x), dy, kernel, *geometry, on_main)
    method = kernel_grad_method(x.shape, kernel.shape, x.dtype, strides, padding, dilation)
    if method == "pairs":
        dkernel = _kernel_grad_pairs(x, dy, kernel.shape, padding, strides)
    elif method == "swapped":
        dkernel = _kernel_grad_swapped(x, dy, kernel.shape, padding)
    elif method == "mosaic":
        dkernel = _kernel_grad_mosaic(x, dy, kernel.shape, padding, algorithm)
    else:
        used_x, used_padding = _without_unread_edge(x, dy, kernel.shape, strides, padding, dilation)
        compute = kernel_grad_dtype(used_x.shape, x.dtype, strides)
        dkernel = _call(
            "jaxcnn_onednn_conv_kernel_grad",
            jax.ShapeDtypeStruct(kernel.shape, compute),
            used_x.astype(compute),
            dy.astype(compute),
            strides,
            used_padding,
            dilation,
            algorithm,
        ).astype(kernel.dtype)
    return dx, dkernel


def kernel_grad_dtype(x_shape, dtype, strides) -> np.dtype:
    """The dtype oneDNN's backward-weights runs one kernel gradient in: ``dtype``, or
    float32 for a bfloat16 convolution over a map no larger than its stride on some axis.

    oneDNN 3.2's bfloat16 backward-weights leaves some such kernel gradients partly
    unwritten (the output then holds whatever the memory held: zeros in a fresh process,
    another call's numbers later), e.g. a 3x3 stride-2 convolution over a 7 x 1 map: 10
    of 60 random geometries with the width no larger than its stride (> 1), none of 340
    others, on the Intel Xeon (AMX) under glibc's ``MALLOC_PERTURB_``; the float32
    kernels were right on all 400 (docs/perf_notes.md, session 44). Which of those fail
    is not clear, so all of them take the detour, and so does a height that small: it
    costs nothing on maps this small. ``x_shape`` is the input as oneDNN gets it (after
    :func:`_without_unread_edge`).

    Examples:
        >>> import jax.numpy as jnp
        >>> kernel_grad_dtype((8, 7, 1, 16), jnp.bfloat16, (2, 2)).name
        'float32'
        >>> kernel_grad_dtype((8, 8, 8, 16), jnp.bfloat16, (2, 2)).name
        'bfloat16'
    """
    dtype = np.dtype(dtype)
    narrow = any(s > 1 and n <= s for n, s in zip(x_shape[1:3], strides, strict=True))
    return np.dtype(np.float32) if dtype == jax.numpy.bfloat16 and narrow else dtype


def _without_unread_edge(x, dy, kernel_shape, strides, padding, dilation):
    """``x`` and ``padding`` cut to the rows and columns the convolution reads.

    A stride that does not divide the padded extent leaves trailing pixels no output
    reads (a 1x1 stride-2 shortcut on 34 rows reads 33). oneDNN's backward-weights then
    gets a negative right padding, and for 1x1 strided kernels it returned wrong and
    run-to-run different gradients (seen on an AVX2 AMD EPYC, 2026-12-07). Cut, the
    geometry is exact: the padding's high side first, then the input's last rows.
    """
    out = dy.shape[1:3]  # the convolution's output size
    cut_padding, keep = [], []
    for axis in range(2):
        lo, hi = padding[axis]
        span = dilation[axis] * (kernel_shape[axis] - 1) + 1
        excess = lo + x.shape[1 + axis] + hi - ((out[axis] - 1) * strides[axis] + span)
        from_padding = min(max(hi, 0), excess)
        cut_padding.append((lo, hi - from_padding))
        keep.append(x.shape[1 + axis] - (excess - from_padding))
    cut_padding = tuple(cut_padding)
    if keep == list(x.shape[1:3]):
        return x, cut_padding  # unread only in the padding (or nowhere)
    return x[:, : keep[0], : keep[1], :], cut_padding


KERNEL_GRAD_METHODS = ("auto", "direct", "swapped", "mosaic", "pairs")
# "auto" takes the binding's own kernel over image pairs (kernel_grad_pairs.cc) for every
# bfloat16 convolution it can run (output channels a multiple of PAIRS_CHANNEL_MULTIPLE)
# on CPUs with AVX-512 BF16 and no AMX. Alone on the Zen 5 CPU, batch 128, against
# oneDNN 3.2's backward-weights (or item 44's swap): 7x7 maps 256 -> 256 channels
# 11.0-12.0 -> 8.3-8.5 ms, 15x15 64 -> 256 11.6-12.3 -> 9.5, 3x3 256 -> 256 2.45
# (swapped) -> 1.6-1.8 (docs/perf_notes.md, item 66). Not on AMX, whose oneDNN kernels
# run bfloat16 several times faster than AVX-512 (not measured against them). Nor:
# * with fewer than PAIRS_MIN_NARROW_IN_CHANNELS input channels and an odd multiple of
#   32 output channels: its 12 x 32 tiles lost alone there, 3 -> 32 channels on 30x30
#   maps 0.50 -> 0.64 ms, 1 -> 32 0.31 -> 0.51, where 8 -> 32 won 1.01 -> 0.86 and
#   32 -> 32 (16x16 maps) 0.79-0.89 -> 0.73 (item 68);
# * where a stride exceeds the kernel (a 1x1 stride-2 shortcut 0.09 -> 0.26 ms alone: the
#   kernel copies the pixels it skips). Other strided ones it takes: ResNet-20's two
#   stride-2 layers in its step 1.24 -> 0.98 and 1.68 -> 0.95 ms a call (alone oneDNN's
#   were as fast as the kernel: 0.57 against 0.59, 0.61 against 0.54; item 70);
# * on maps above PAIRS_MAX_PIXELS output pixels: a group of one image pair then
#   outgrows the core's L2 cache, and each tile streams it from memory. Alone on Zen 5,
#   3x3, 64 channels: 56x56 maps (batch 32) 9.9 -> 9.3 ms, 112x112 (64 -> 128, batch 8)
#   level (18.7-21.1 against 18.7-19.1), 224x224 (batch 4) 22.7 -> 31-32 ms (item 66).
PAIRS_CHANNEL_MULTIPLE = 32
PAIRS_MIN_NARROW_IN_CHANNELS = 8
PAIRS_MAX_PIXELS = 64 * 64
# "auto" swaps where the output map is small, in bfloat16: oneDNN 2.6's AMX
# backward-weights kernel is slow there, its forward one is not. Alone, batch 128, on the
# Intel Xeon: 4x4 outputs 64 -> 64 channels 1.22 -> 0.54 ms, 256 -> 256 10.1 -> 2.5 ms.
# At 6x6 and 8x8 outputs it won alone too (1.75 -> 0.96 ms at 64 channels) but ResNet-20's
# bfloat16 step (8x8, 64 channels) lost (x0.95), and at 12x12 or in float32 it lost
# alone. docs/perf_notes.md, item 44.
SWAP_MAX_PIXELS = 16  # output pixels (OH * OW) up to which "auto" swaps
# Above that, up to MOSAIC_MAX_PIXELS (11 x 11 maps), "auto" tiles bfloat16 convolutions
# with at least MOSAIC_MIN_CHANNELS in and out into mosaics (_kernel_grad_mosaic). Alone,
# batch 128, 256 -> 256 channels: 7x7 maps 11.4 -> 7.1 ms, 5x5 8.5 -> 3.7, 11x11
# 16.0 -> 11.2; 128 channels at 7x7 3.2 -> 2.5; but 64 channels x1.00, 14x14 maps x0.97
# and 15x15 ones x0.6 (docs/perf_notes.md, item 57). That was AMX (the Intel Xeon); on
# AVX-512 BF16 without it (Zen 5) the mosaics lose alone, 7x7 at 256 channels 10.9 ->
# 13.8 ms, 7x7 at 128 2.7 -> 4.0 (item 63), so "auto" tiles only where the CPU has AMX.
MOSAIC_MAX_PIXELS = 121
MOSAIC_MIN_CHANNELS = 128
# Grids tried, and the mosaic area (pixels) the fastest ones were nearest to.
MOSAIC_GRIDS = ((1, 2), (2, 2), (2, 4))
MOSAIC_AREA = 400


def mosaic_grid(batch: int, padded_hw: Sequence[int]) -> tuple[int, int] | None:
    """Rows x columns of padded images per mosaic for :func:`_kernel_grad_mosaic`.

    The grid of :data:`MOSAIC_GRIDS` whose mosaic area is nearest :data:`MOSAIC_AREA`
    pixels among those that divide ``batch``; ``None`` if none does.

    Examples:
        >>> mosaic_grid(128, (9, 9))  # 7x7 maps padded by 1: 2 x 2 tiles of 18 x 18
        (2, 2)
        >>> mosaic_grid(128, (7, 7)), mosaic_grid(3, (9, 9))
        ((2, 4), None)
    """
    area = padded_hw[0] * padded_hw[1]
    fits = [g for g in MOSAIC_GRIDS if batch % (g[0] * g[1]) == 0]
    return min(fits, key=lambda g: abs(g[0] * g[1] * area - MOSAIC_AREA), default=None)


def kernel_grad_method(
    x_shape,
    kernel_shape,
    dtype,
    strides,
    padding,
    dilation,
    amx: bool | None = None,
    avx512_bf16: bool | None = None,
) -> str:
    """How the kernel gradient of one convolution runs: ``"direct"``, ``"swapped"``,
    ``"mosaic"`` or ``"pairs"``.

    ``JAXCNN_ONEDNN_KERNEL_GRAD`` (read at trace time): ``auto`` (default), for bfloat16
    convolutions with no dilation and no stride longer than the kernel, on a CPU with
    AVX-512 BF16 and no AMX (``avx512_bf16``, ``amx``; ``None``: whether the library's
    ``-march=native`` build has the kernel, and this CPU's ``amx_bf16`` flag), runs the
    binding's own kernel where the output channels are a multiple of
    ``PAIRS_CHANNEL_MULTIPLE`` (of 64, or of 32 with at least
    ``PAIRS_MIN_NARROW_IN_CHANNELS`` input channels) and the output maps have at most
    ``PAIRS_MAX_PIXELS`` pixels; otherwise, at stride 1, it swaps those with at most
    ``SWAP_MAX_PIXELS`` output pixels and, where the CPU has AMX, tiles into mosaics
    those with up to ``MOSAIC_MAX_PIXELS`` and at least ``MOSAIC_MIN_CHANNELS`` channels
    in and out. ``swapped`` / ``mosaic`` / ``pairs`` do so for every undilated one they
    can run (``swapped`` and ``mosaic`` at stride 1, ``mosaic`` where :func:`mosaic_grid`
    finds a grid for the batch, ``pairs`` for bfloat16 with those output channels on
    AVX-512 BF16); ``direct`` none. ``"swapped"`` is oneDNN's
    *forward* convolution of the input, batch and channels exchanged, with the output
    gradient as its kernel (:func:`_kernel_grad_swapped`); ``"mosaic"`` its
    backward-weights over fewer, larger images (:func:`_kernel_grad_mosaic`); ``"pairs"``
    ``kernel_grad_pairs.cc`` (:func:`_kernel_grad_pairs`).

    Examples:
        >>> valid, same = ((0, 0), (0, 0)), ((1, 1), (1, 1))
        >>> xeon, zen5 = {"amx": True}, {"amx": False, "avx512_bf16": True}
        >>> avx2 = {"amx": False, "avx512_bf16": False}
        >>> conv3 = ((128, 6, 6, 64), (3, 3, 64, 64), "bfloat16", (1, 1), valid, (1, 1))
        >>> kernel_grad_method(*conv3, **xeon), kernel_grad_method(*conv3, **zen5)
        ('swapped', 'pairs')
        >>> thirty_two = ((128, 14, 14, 32), (3, 3, 32, 32), "bfloat16", (1, 1), valid, (1, 1))
        >>> sixteen = ((128, 14, 14, 32), (3, 3, 32, 16), "bfloat16", (1, 1), valid, (1, 1))
        >>> rgb = ((128, 32, 32, 3), (3, 3, 3, 32), "bfloat16", (1, 1), valid, (1, 1))
        >>> [kernel_grad_method(*conv, **zen5) for conv in (thirty_two, sixteen, rgb)]
        ['pairs', 'direct', 'direct']
        >>> halve = ((128, 16, 16, 32), (3, 3, 32, 64), "bfloat16", (2, 2), same, (1, 1))
        >>> kernel_grad_method(*halve, **zen5), kernel_grad_method(*halve, **xeon)
        ('pairs', 'direct')
        >>> seven = ((128, 7, 7, 256), (3, 3, 256, 256), "bfloat16", (1, 1), same, (1, 1))
        >>> [kernel_grad_method(*seven, **cpu) for cpu in (xeon, zen5, avx2)]
        ['mosaic', 'pairs', 'direct']
    """
    from jaxcnn.conv_backend import amx_here, env_choice

    choice = env_choice("JAXCNN_ONEDNN_KERNEL_GRAD", "auto", KERNEL_GRAD_METHODS)
    if choice == "direct" or tuple(dilation) != (1, 1):
        return "direct"
    strided = tuple(strides) != (1, 1)  # of the four, only the pairs kernel takes strides
    padded = [size + lo + hi for size, (lo, hi) in zip(x_shape[1:3], padding, strict=True)]
    tiles = not strided and mosaic_grid(x_shape[0], padded) is not None
    if avx512_bf16 is None:  # -march=native compiled the kernel only on such a CPU
        avx512_bf16 = build.kernel_grad_pairs_built()
    pairs = (
        avx512_bf16
        and np.dtype(dtype) == jax.numpy.bfloat16
        and kernel_shape[3] % PAIRS_CHANNEL_MULTIPLE == 0
        and min(lo for pair in padding for lo in pair) >= 0
    )
    if choice == "pairs":
        return "pairs" if pairs else "direct"
    if choice != "auto":
        return choice if (choice == "swapped" and not strided) or tiles else "direct"
    if np.dtype(dtype) != jax.numpy.bfloat16:
        return "direct"
    amx = amx_here() if amx is None else amx
    out = shapes.conv_output_shape(x_shape[1:3], kernel_shape[:2], tuple(strides), padding)
    pixels = out[0] * out[1]
    narrow = kernel_shape[3] % 64 != 0 and kernel_shape[2] < PAIRS_MIN_NARROW_IN_CHANNELS
    # A stride longer than the kernel skips input pixels that the kernel would still copy.
    skips = any(s > k for s, k in zip(strides, kernel_shape[:2], strict=True))
    if pairs and not amx and pixels <= PAIRS_MAX_PIXELS and not narrow and not skips:
        return "pairs"
    if strided:
        return "direct"
    if pixels <= SWAP_MAX_PIXELS:
        return "swapped"
    wide = min(kernel_shape[2:]) >= MOSAIC_MIN_CHANNELS
    return "mosaic" if amx and pixels <= MOSAIC_MAX_PIXELS and wide and tiles else "direct"


def _kernel_grad_pairs(x, dy, kernel_shape, padding, strides=(1, 1)):
    """dkernel of an undilated bfloat16 convolution by ``kernel_grad_pairs.cc``: vdpbf16ps
    over the same pixel of two images at a time, float32 sums rounded once."""
    build.require()
    out = jax.ShapeDtypeStruct(tuple(kernel_shape), x.dtype)
    return jax.ffi.ffi_call("jaxcnn_kernel_grad_pairs", out, vmap_method="sequential")(
        x,
        dy,
        padding=np.asarray(padding, np.int64).reshape(-1),
        strides=np.asarray(strides, np.int64),
    )


def _kernel_grad_swapped(x, dy, kernel_shape, padding):
    """dkernel of a stride-1 convolution as oneDNN's forward convolution of x with dy.

    dkernel[u, v, c, o] = sum over n, i, j of x_pad[n, i + u, j + v, c] dy[n, i, j, o]:
    a VALID convolution whose batch is x's channels, whose input channels are x's batch,
    and whose (OH, OW, N, O) kernel is dy; its (C, KH, KW, O) output, transposed.
    """
    kh, kw = kernel_shape[:2]
    oh, ow = dy.shape[1:3]
    x = jax.numpy.pad(x, ((0, 0), *padding, (0, 0)))[:, : kh + oh - 1, : kw + ow - 1, :]
    out = jax.ShapeDtypeStruct((x.shape[3], kh, kw, dy.shape[3]), x.dtype)
    swapped = _call(
        "jaxcnn_onednn_conv_forward",
        out,
        x.transpose(3, 1, 2, 0),
        dy.transpose(1, 2, 0, 3),
        (1, 1),
        ((0, 0), (0, 0)),
        (1, 1),
        "direct",
    )
    return swapped.transpose(1, 2, 0, 3)


def _kernel_grad_mosaic(x, dy, kernel_shape, padding, algorithm):
    """dkernel of a stride-1 convolution as backward-weights over mosaics of its images.

    oneDNN's backward-weights kernel runs small maps with many channels slowly for the
    work they hold (the fast CIFAR net's 7 x 7 x 256 layers: 11.4 ms, three times their
    forward pass). The padded images, tiled ``r x c`` into fewer, larger ones, give the
    same sums: each output position still reads one image's window, and the positions
    that straddle two images get a zero output gradient, so they add nothing.
    """
    kh, kw = kernel_shape[:2]
    x = jax.numpy.pad(x, ((0, 0), *padding, (0, 0)))
    n, ph, pw = x.shape[:3]
    oh, ow = dy.shape[1:3]  # ph - kh + 1, pw - kw + 1
    dy = jax.numpy.pad(dy, ((0, 0), (0, ph - oh), (0, pw - ow), (0, 0)))
    r, c = mosaic_grid(n, (ph, pw))

    def tile(a):
        a = a.reshape(n // (r * c), r, c, ph, pw, a.shape[-1]).transpose(0, 1, 3, 2, 4, 5)
        return a.reshape(n // (r * c), r * ph, c * pw, a.shape[-1])

    dy = tile(dy)[:, : r * ph - kh + 1, : c * pw - kw + 1]
    out = jax.ShapeDtypeStruct(tuple(kernel_shape), x.dtype)
    valid = ((0, 0), (0, 0))
    return _call("jaxcnn_onednn_conv_kernel_grad", out, tile(x), dy, (1, 1), valid, (1, 1),
                 algorithm)  # fmt: skip


def _like(array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(array.shape, array.dtype)


_conv.defvjp(_forward_rule, _backward_rule)


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int] = (1, 1),
    algorithm: str = "direct",
) -> jax.Array:
    """Cross-correlation of NHWC ``x`` with HWIO ``kernel`` by oneDNN, CPU only.

    Args:
      x: (N, H, W, C), float32 or bfloat16.
      kernel: (KH, KW, C, F), the same dtype.
      strides: two positive ints.
      padding: two non-negative ``(low, high)`` pairs.
      dilation: two positive ints (kernel dilation).
      algorithm: ``"direct"``, or ``"winograd"``: oneDNN's Winograd F(4x4, 3x3) for the
        forward pass and both gradients where :func:`winograd_pays` (3x3 kernel, stride 1,
        no dilation, 16+ channels in and out) and oneDNN has one (float32 on AVX-512);
        direct otherwise. Fewer multiplications but activation reorders: faster on wide
        layers, and a slightly larger rounding error (``docs/perf_notes.md``, item 34).
        ``"auto"``: Winograd only from ``WINOGRAD_AUTO_MIN_CHANNELS`` channels in and
        out, on enough output tiles (:func:`resolve_algorithm`).

    Returns:
      (N, OH, OW, F) in ``x``'s dtype, with ``output_shape``'s sizes.

    Raises:
      ValueError: naming the argument, for anything outside the above.
      OnednnUnavailable: the library could not be built or loaded.
    """
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"x and kernel must be 4-D (NHWC, HWIO), got x {x.shape}, kernel {kernel.shape}"
        )
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"kernel input channels {kernel.shape[2]} != x channels {x.shape[3]} "
            f"(x {x.shape}, kernel {kernel.shape})"
        )
    if x.dtype != kernel.dtype or x.dtype not in (jax.numpy.float32, jax.numpy.bfloat16):
        raise ValueError(
            f"x and kernel must share a dtype, float32 or bfloat16; got {x.dtype}, {kernel.dtype}"
        )
    if algorithm not in ("auto", *ALGORITHMS):
        raise ValueError(f"algorithm={algorithm!r}; valid: auto, {', '.join(ALGORITHMS)}")
    strides, dilation = tuple(map(int, strides)), tuple(map(int, dilation))
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if len(strides) != 2 or min(strides) < 1:
        raise ValueError(f"strides must be two positive ints, got {strides}")
    if len(dilation) != 2 or min(dilation) < 1:
        raise ValueError(f"dilation must be two positive ints, got {dilation}")
    if len(padding) != 2 or min(min(p) for p in padding) < 0:
        raise ValueError(f"padding must be two non-negative (low, high) pairs, got {padding}")
    try:
        output_shape(x.shape, kernel.shape, strides, padding, dilation)
    except ValueError as err:
        raise ValueError(
            f"the kernel {kernel.shape[:2]} (dilation {dilation}) does not fit the padded "
            f"input {x.shape[1:3]} + {padding}: {err}"
        ) from err
    algorithm = resolve_algorithm(algorithm, x.shape, kernel.shape, strides, padding, dilation)
    return _conv(x, kernel, strides, padding, dilation, algorithm)
