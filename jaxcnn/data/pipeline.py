"""Batching indices on the host; normalisation and placement on the device.

Index arrays are computed with numpy once per epoch and handed to a jitted step
that gathers from uint8 arrays already on the device, so no image crosses the
host-device boundary after the first ``device_put``. Every batch has the same
shape (evaluation pads and masks), so the step compiles once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.dataset import Split, is_count
from jaxcnn.data.errors import DataError


def _positive_int(value, what: str) -> int:
    if not is_count(value, 1):
        raise DataError(f"{what} must be a positive int; got {value!r}")
    return int(value)


def normalization_stats(
    images_uint8: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation in [0, 1] units (float32).

    Computed in float64 over chunks, so 50,000 CIFAR images need no float copy.

    Args:
        images_uint8: uint8 ``(N, H, W, C)``, usually the training split.
        chunk: images per partial sum.

    Returns:
        ``(mean, std)``, each float32 ``(C,)``.

    Examples:
        >>> mean, std = normalization_stats(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1))
        >>> mean, std
        (array([0.5], dtype=float32), array([0.5], dtype=float32))
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise DataError(
            f"images_uint8 must be a non-empty uint8 (N, H, W, C) array; got "
            f"{images.dtype} {images.shape}"
        )
    channels = images.shape[-1]
    total, total_sq = np.zeros(channels), np.zeros(channels)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, channels).astype(np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    # A constant channel would divide by zero; leave it unscaled instead.
    std = np.where(std > 0, std, 255.0)
    return (mean / 255.0).astype(np.float32), (std / 255.0).astype(np.float32)


def normalize(images, mean, std) -> jax.Array:
    """``(images - mean) / std`` per channel, float32; uint8 input is divided by 255 first.

    Jit-able; ``mean``/``std`` broadcast explicitly over the last axis (no implicit
    rank promotion).

    Args:
        images: uint8 0..255 or float 0..1, ``(..., C)``.
        mean: ``(C,)`` in [0, 1] units, e.g. from :func:`normalization_stats`.
        std: ``(C,)`` in [0, 1] units.

    Returns:
        float32 array, same shape as ``images``.

    Examples:
        >>> normalize(np.full((1, 1, 1, 1), 255, np.uint8), np.array([0.5]), np.array([0.5]))
        Array([[[[1.]]]], dtype=float32)
    """
    images = jnp.asarray(images)
    was_uint8 = images.dtype == jnp.uint8
    images = images.astype(jnp.float32)
    if was_uint8:
        images = images / 255.0
    shape = (1,) * (images.ndim - 1) + (-1,)
    mean = jnp.asarray(mean, jnp.float32).reshape(shape)
    std = jnp.asarray(std, jnp.float32).reshape(shape)
    return (images - mean) / std


def epoch_indices(
    num_examples: int, batch_size: int, seed: int, epoch: int, drop_remainder: bool = True
) -> np.ndarray:
    """Shuffled example indices for one epoch, as int32 ``(steps, batch_size)``.

    The permutation comes from ``np.random.default_rng([seed, epoch])`` (PCG64 fed by a
    SeedSequence of both numbers): the same on every run and machine, different per epoch.

    Args:
        num_examples: size of the split.
        batch_size: examples per step.
        seed: run seed.
        epoch: epoch number (0-based).
        drop_remainder: drop the last partial batch; if False, it is filled up with
            the first indices of the same permutation (a few examples twice), keeping
            every batch the same shape.

    Returns:
        int32 ``(steps, batch_size)``.

    Examples:
        >>> epoch_indices(5, 2, seed=0, epoch=0).shape
        (2, 2)
    """
    num_examples = _positive_int(num_examples, "num_examples")
    batch_size = _positive_int(batch_size, "batch_size")
    for value, what in ((seed, "seed"), (epoch, "epoch")):
        if not is_count(value, 0):
            raise DataError(f"{what} must be a non-negative int; got {value!r}")
    if drop_remainder and batch_size > num_examples:
        raise DataError(
            f"batch_size={batch_size} is larger than num_examples={num_examples} with "
            "drop_remainder=True: no step would run"
        )
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)
    steps = num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)
    if steps * batch_size > num_examples:
        order = np.resize(order, steps * batch_size)  # wraps around the permutation
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def eval_indices(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every example exactly once, in order, in fixed-size batches with a validity mask.

    The last batch is padded with index 0 and masked out, so evaluation never drops an
    example and never compiles a second, smaller batch shape.

    Args:
        num_examples: size of the split.
        batch_size: examples per step.

    Returns:
        ``(indices int32 (steps, batch_size), mask bool (steps, batch_size))``.

    Examples:
        >>> idx, mask = eval_indices(5, 2)
        >>> idx.tolist(), mask.sum()
        ([[0, 1], [2, 3], [4, 0]], np.int64(5))
    """
    num_examples = _positive_int(num_examples, "num_examples")
    batch_size = _positive_int(batch_size, "batch_size")
    steps = -(-num_examples // batch_size)
    flat = np.arange(steps * batch_size)
    mask = flat < num_examples
    indices = np.where(mask, flat, 0).astype(np.int32)
    return indices.reshape(steps, batch_size), mask.reshape(steps, batch_size)


class DeviceSplit(NamedTuple):
    """A split on the device(s): uint8 images and int32 labels (unpacks as a pair)."""

    images: jax.Array
    labels: jax.Array


def batch_sharding(devices=None, axis_name: str = "batch"):
    """A ``NamedSharding`` splitting axis 0 (the batch) over ``devices`` (default: all).

    Examples:
        >>> batch_sharding().spec
        P('batch',)
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    mesh = jax.sharding.Mesh(devices, (axis_name,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))


def device_put_split(split: Split, sharding=None) -> DeviceSplit:
    """Put a split's uint8 images and int32 labels on the device(s).

    Args:
        split: the host split.
        sharding: ``None`` (default device), or a ``jax.sharding.Sharding`` applied to
            both arrays, e.g. :func:`batch_sharding` to split the example axis over
            devices (the number of examples must then divide evenly), or a replicated
            ``NamedSharding(mesh, PartitionSpec())`` so each device holds everything.

    Returns:
        :class:`DeviceSplit` ``(images, labels)``; images stay uint8 (4x smaller than float).

    Examples:
        >>> on_device = device_put_split(Split(np.zeros((2, 4, 4, 1), np.uint8), [0, 1]))
        >>> on_device.images.dtype, on_device.labels.shape
        (dtype('uint8'), (2,))
    """
    if not isinstance(split, Split):
        raise DataError(f"split must be a jaxcnn.data.Split; got {type(split).__name__}")
    if sharding is not None and isinstance(sharding, jax.sharding.NamedSharding):
        spec = sharding.spec
        if len(spec) and spec[0] is not None:
            shards = int(np.prod([sharding.mesh.shape[a] for a in np.atleast_1d(spec[0])]))
            if len(split) % shards:
                raise DataError(
                    f"cannot shard {len(split)} examples over {shards} devices evenly; trim the "
                    "split or use a replicated sharding (PartitionSpec())"
                )
    images = jax.device_put(split.images, sharding)
    labels = jax.device_put(split.labels, sharding)
    return DeviceSplit(images, labels)
