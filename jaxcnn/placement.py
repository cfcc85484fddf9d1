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
import os
from collections.abc import Iterator

import jax

_ASSUMED = contextvars.ContextVar("jaxcnn_assume_one_cpu_device", default=False)
# Substrings of the plugin names that start a backend other than the CPU.
_ACCELERATOR_PLUGINS = ("cuda", "gpu", "rocm", "tpu", "metal")


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


def cpu_platform_problem() -> str | None:
    """Why JAX's backend, once started, may not be the CPU (None when it will be).

    Asked without starting a backend (from ``JAX_PLATFORMS`` and the installed plugins), for
    the settings that must come before it: :mod:`jaxcnn.xla_flags`, :mod:`jaxcnn.cpu_malloc`.

    Examples:
        >>> previous = jax.config.jax_platforms
        >>> jax.config.update("jax_platforms", "cuda,cpu")  # as JAX_PLATFORMS=cuda,cpu would
        >>> cpu_platform_problem()
        "JAX_PLATFORMS='cuda,cpu' does not start with cpu"
        >>> jax.config.update("jax_platforms", previous)
    """
    platforms = (jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")).lower()
    if platforms:
        first = platforms.split(",")[0].strip()
        return None if first == "cpu" else f"JAX_PLATFORMS={platforms!r} does not start with cpu"
    try:
        from importlib.metadata import entry_points

        plugins = [ep.name for ep in entry_points(group="jax_plugins")]
    except Exception:  # a broken metadata install must not stop training
        plugins = []
    accel = [p for p in plugins if any(a in p.lower() for a in _ACCELERATOR_PLUGINS)]
    if accel:
        return f"accelerator plugin(s) installed: {', '.join(accel)}"
    return None
