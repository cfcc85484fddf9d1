"""Where a traced program will run: the question the layers ask before a native kernel.

jaxcnn's oneDNN kernels (convolution, fused conv + max pool, batch norm) are foreign calls,
and XLA cannot split a foreign call over several devices' shards, so a layer takes them
only when :func:`one_cpu_device` says the program runs on a single CPU device. Asking JAX
(``jax.default_backend()``) starts its backend, and some settings must come before that
(:mod:`jaxcnn.cpu_malloc`'s allocator settings are read when XLA's threads first
allocate). :func:`assume_one_cpu_device` lets such a caller trace a model abstractly
first: inside it both questions answer "one CPU device" without asking JAX. The
assumption lives in a context variable, so another thread tracing meanwhile still asks
JAX.

Examples:
    >>> with assume_one_cpu_device():
    ...     on_cpu(), one_cpu_device()
    (True, True)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax

_ASSUMED = contextvars.ContextVar("jaxcnn_assume_one_cpu_device", default=False)


def on_cpu() -> bool:
    """Whether the traced program runs on CPU (JAX's default backend is ``"cpu"``)."""
    return _ASSUMED.get() or jax.default_backend() == "cpu"


def one_cpu_device() -> bool:
    """Whether it runs on CPU with one device: where a foreign call needs no sharding."""
    return _ASSUMED.get() or (jax.default_backend() == "cpu" and jax.device_count() == 1)


@contextlib.contextmanager
def assume_one_cpu_device() -> Iterator[None]:
    """Within the block, :func:`on_cpu` and :func:`one_cpu_device` answer True unasked."""
    token = _ASSUMED.set(True)
    try:
        yield
    finally:
        _ASSUMED.reset(token)
