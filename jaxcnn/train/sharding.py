"""Data parallelism with ``jax.sharding``: one code path for one device or many.

A 1-D :class:`jax.sharding.Mesh` named ``"data"`` spans the devices; the batch
axis is split over it and everything else (parameters, optimiser state, the
uint8 dataset itself) is replicated. The train step is written for the *global*
batch: XLA's SPMD partitioner inserts the gradient all-reduce, and batch-norm
statistics come out synchronised over the global batch, so 4 devices give the
same numbers as 1 (within float round-off).

Multi-host: call ``jax.distributed.initialize()`` (coordinator address, process
count and id from the flags or the cluster's environment) *before* anything else
touches JAX; ``jax.devices()`` then lists every host's devices and the same code
runs unchanged on every host. Each host loads the full (small) dataset and builds
the same index arrays from the same seed; :func:`put_global` places the slices
each host owns.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D data-parallel mesh over the first ``num_devices`` devices (0: all of them).

    Args:
      num_devices: how many devices to use; 0 means ``jax.device_count()``.

    Returns:
      A ``Mesh`` with the single axis ``"data"``.

    Examples:
      >>> dict(make_mesh(1).shape)
      {'data': 1}
    """
    available = jax.devices()
    if num_devices < 0 or num_devices > len(available):
        raise ValueError(f"num_devices must be 0 (all) or 1..{len(available)}; got {num_devices!r}")
    devices = available[: num_devices or len(available)]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, datasets)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """The array's ``batch_axis`` is split over the ``"data"`` mesh axis."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """Raise unless the global batch splits evenly over the mesh's devices."""
    devices = mesh.shape[DATA_AXIS]
    if batch_size % devices:
        raise ValueError(
            f"{name}={batch_size} must be divisible by the number of devices ({devices}); "
            f"use a multiple of {devices} or set num_devices"
        )


def put_global(value: Any, sharding: NamedSharding) -> Any:
    """Place host arrays (identical on every host) onto the mesh with ``sharding``.

    ``jax.make_array_from_callback`` asks for exactly the slices this host's
    devices own, so the same call works on one host and on many.
    """

    def place(array):
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return jax.tree_util.tree_map(place, value)
