"""Evaluation in slices: a large eval batch computed a cache-sized slice at a time.

An evaluation batch (500 images by default) is a unit of dispatch and memory, not of
computation: on a CPU its activations fall out of the cache, and a 500-image forward
pass was about twice as slow per image as four of 125 (``docs/perf_notes.md``, items 82
and 90). So on a single CPU device :func:`eval_logits` (``jaxcnn.train.steps``) cuts the
batch into slices of at most :data:`EVAL_SLICE_IMAGES` images and computes them one
group after another with ``lax.map``: the program holds one group's copy of the net, not
one per slice. A group is up to :data:`EVAL_SIDE_BY_SIDE` slices side by side where XLA
runs any of the net's convolutions (they, and XLA's elementwise loops, use one core
each, so concurrent slices fill the others), or one slice where jaxcnn's binding runs
them all (oneDNN, the Winograd kernels: each call uses every core, and concurrent
slices only compete).

Examples:
  >>> import jax.numpy as jnp
  >>> sliced_apply(lambda x: x * 2, jnp.arange(5.0), slices=2, side_by_side=1).tolist()
  [0.0, 2.0, 4.0, 6.0, 8.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcnn import placement

# At most this many images per forward pass on one CPU device. 10,000 MNIST test images
# on a 2-core Zen 3 took the same 0.57-0.62 s in slices of 62, 125 or 250 images and
# 1.19-1.31 s in slices of 500 (item 90); 128 is the training batch, whose activations
# the step's own measurements were made at.
EVAL_SLICE_IMAGES = 128
# Forward passes (slices x test-time views) side by side where XLA runs a convolution.
# XLA's convolutions only: 4 x 125 images side by side 0.80 s, 8 x 125 0.73 s (twice the
# compile time), 2 x 125 0.94 s, one at a time 1.22 s (MNIST). Every convolution on
# oneDNN: one at a time 0.69 s, 4 side by side 1.24 s (item 90).
EVAL_SIDE_BY_SIDE = 4


def auto_eval_splits(batch_size: int) -> int:
    """The slices :func:`~jaxcnn.train.steps.eval_logits` computes a batch in when
    ``batch_splits=0``, before :func:`eval_slice_plan` rounds it up to whole groups:
    ``ceil(batch_size / 128)`` on a single CPU device, else 1 (on a
    GPU or TPU one large kernel beats several small ones, and a batch split over
    several devices is split already). Evaluation normalises with the running
    statistics, so slicing never changes what batch norm computes.

    Examples:
      >>> auto_eval_splits(128), auto_eval_splits(500), auto_eval_splits(1000)  # on a CPU
      (1, 4, 8)
    """
    if not placement.one_cpu_device():
        return 1
    return max(1, math.ceil(batch_size / EVAL_SLICE_IMAGES))


def eval_slice_plan(
    batch_size: int, batch_splits: int, views: int, all_on_binding: bool
) -> tuple[int, int]:
    """``(slices, side_by_side)`` for :func:`sliced_apply`: ``batch_splits`` slices, or
    for ``0`` :func:`auto_eval_splits`'s count rounded up to a multiple of the group.

    A group computes side by side the largest divisor of ``slices`` with at most
    :data:`EVAL_SIDE_BY_SIDE` forward passes (a slice runs one per test-time view) on one
    CPU device, unless jaxcnn's binding runs every convolution (``all_on_binding``):
    then one slice.

    Examples:
      >>> eval_slice_plan(1000, 0, views=1, all_on_binding=False)  # on a CPU
      (8, 4)
      >>> eval_slice_plan(1000, 0, views=1, all_on_binding=True)
      (8, 1)
      >>> eval_slice_plan(10000, 0, views=2, all_on_binding=False)  # 79 slices would be prime
      (80, 2)
      >>> eval_slice_plan(16, 5, views=1, all_on_binding=False)
      (5, 1)
    """
    most = 1
    if not all_on_binding and placement.one_cpu_device():
        most = max(1, EVAL_SIDE_BY_SIDE // views)
    slices = batch_splits or auto_eval_splits(batch_size)
    if not batch_splits and slices > 1:
        slices = min(batch_size, math.ceil(slices / most) * most)
    side_by_side = max(d for d in range(1, min(most, slices) + 1) if slices % d == 0)
    return slices, side_by_side


def sliced_apply(
    apply: Callable[[jax.Array], jax.Array], images: jax.Array, slices: int, side_by_side: int
) -> jax.Array:
    """``apply(images)`` computed in ``slices`` equal slices, ``side_by_side`` of them per
    step of a ``lax.map`` (unrolled within it: independent work XLA may run at once).

    ``apply`` must treat images independently (evaluation mode); the last slice is padded
    with zeros to the others' size and the padding's outputs dropped. ``side_by_side``
    must divide ``slices``.

    Examples:
      >>> import jax.numpy as jnp
      >>> sliced_apply(lambda x: x + 1, jnp.zeros((7, 2)), slices=4, side_by_side=2).shape
      (7, 2)
    """
    if slices % side_by_side:
        raise ValueError(
            f"side_by_side={side_by_side} does not divide slices={slices}; valid: a divisor"
        )
    total = images.shape[0]
    size = math.ceil(total / slices)
    padding = size * slices - total
    if padding:
        images = jnp.pad(images, [(0, padding)] + [(0, 0)] * (images.ndim - 1))

    def group(block: jax.Array) -> jax.Array:  # (side_by_side * size, ...) images
        parts = [apply(block[i * size : (i + 1) * size]) for i in range(side_by_side)]
        return parts[0] if side_by_side == 1 else jnp.concatenate(parts)

    groups = slices // side_by_side
    if groups == 1:
        out = group(images)
    else:
        blocks = images.reshape((groups, side_by_side * size) + images.shape[1:])
        out = jax.lax.map(group, blocks)
        out = out.reshape((groups * side_by_side * size,) + out.shape[2:])
    return out[:total]
