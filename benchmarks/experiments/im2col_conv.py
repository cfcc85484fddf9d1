"""A loser kept for the record: convolution as shifted slices + one matmul (im2col).

Measured in docs/perf_notes.md: on XLA:CPU (jaxlib 0.10.2) building the patch matrix
(a concatenate of kh*kw shifted slices) and its gradient cost more than XLA's own
convolution and its gradients for every layer of the MNIST and CIFAR nets, so jaxcnn does
not use it. ``benchmarks/nets_flax.py`` still accepts ``conv="im2col"`` to re-measure it:

    python benchmarks/jaxcnn_bench.py --net mnist_cnn --variant impl=standin,conv=im2col
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def _is_channels_last(lhs_ndim: int, dimension_numbers) -> bool:
    """True when the dimension numbers are NHWC / HWIO / NHWC (Flax's layout)."""
    if dimension_numbers is None:
        return False
    spatial = tuple(range(1, lhs_ndim - 1))
    dn = lax.conv_dimension_numbers(
        (1,) * lhs_ndim, (1,) * lhs_ndim, dimension_numbers
    )  # normalises strings and tuples to ConvDimensionNumbers
    return (
        dn.lhs_spec == (0, lhs_ndim - 1, *spatial)
        and dn.rhs_spec == (lhs_ndim - 1, lhs_ndim - 2, *range(lhs_ndim - 2))
        and dn.out_spec == (0, lhs_ndim - 1, *spatial)
    )


def conv_im2col(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """Convolution as shifted slices + one matrix multiply (channels-last, no dilation).

    The patches are built by slicing (not ``conv_general_dilated_patches``, which is itself
    a convolution), so the gradient w.r.t. the kernel is one large matmul
    ``patches^T @ dy`` and the gradient w.r.t. ``x`` is a matmul plus padded adds: all ops
    XLA:CPU runs at close to its GEMM speed.

    Args:
      x: (N, *spatial, C).
      kernel: (*window, C, O).
      strides: one stride per spatial axis.
      padding: one ``(low, high)`` pair per spatial axis.
      precision, preferred_element_type: as for ``lax.dot_general``.

    Returns:
      (N, *out_spatial, O), equal to ``lax.conv_general_dilated`` with NHWC/HWIO/NHWC.

    Examples:
      >>> x = jnp.ones((1, 4, 4, 2)); k = jnp.ones((3, 3, 2, 5))
      >>> conv_im2col(x, k, (1, 1), ((0, 0), (0, 0))).shape
      (1, 2, 2, 5)
    """
    window = kernel.shape[:-2]
    if any(lo or hi for lo, hi in padding):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    spatial = x.shape[1:-1]
    out = tuple((s - w) // t + 1 for s, w, t in zip(spatial, window, strides, strict=True))
    slices = []
    for offset in _offsets(window):
        index = tuple(
            slice(o, o + (n - 1) * t + 1, t) for o, n, t in zip(offset, out, strides, strict=True)
        )
        slices.append(x[(slice(None), *index, slice(None))])
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    matrix = kernel.reshape(-1, kernel.shape[-1])  # (prod(window) * C, O), same order
    return lax.dot_general(
        patches,
        matrix,
        (((patches.ndim - 1,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _offsets(window: Sequence[int]) -> list[tuple[int, ...]]:
    """All kernel offsets in row-major order (the order of ``kernel.reshape``)."""
    offsets = [()]
    for w in window:
        offsets = [o + (i,) for o in offsets for i in range(w)]
    return offsets


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """Drop-in for ``lax.conv_general_dilated`` that uses :func:`conv_im2col` when it can.

    It can when the layout is channels-last (NHWC/HWIO/NHWC, as Flax uses), there is no
    dilation and no grouping; anything else goes to ``lax.conv_general_dilated`` unchanged.
    Pass it to Flax as ``nn.Conv(..., conv_general_dilated=fast_ops.conv_general_dilated)``.

    Args:
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type: as for
        ``lax.conv_general_dilated``.

    Returns:
      The convolution, equal in value and gradient to ``lax.conv_general_dilated``.

    Examples:
      >>> x = jnp.ones((2, 5, 5, 3)); k = jnp.ones((3, 3, 3, 4))
      >>> conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO",
      ...     "NHWC")).shape
      (2, 5, 5, 4)
    """
    n_spatial = lhs.ndim - 2
    no_dilation = all(d == 1 for d in (lhs_dilation or ())) and all(
        d == 1 for d in (rhs_dilation or ())
    )
    if (
        no_dilation
        and feature_group_count == 1
        and batch_group_count == 1
        and _is_channels_last(lhs.ndim, dimension_numbers)
    ):
        strides = tuple(window_strides) or (1,) * n_spatial
        if isinstance(padding, str):
            pads = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], strides, padding)
        else:
            pads = tuple(tuple(p) for p in padding)
        return conv_im2col(lhs, rhs, strides, pads, precision, preferred_element_type)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
