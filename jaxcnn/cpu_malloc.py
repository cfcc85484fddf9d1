"""glibc malloc settings that keep XLA:CPU's scratch memory mapped from one step to the next.

Why: XLA:CPU allocates all of an execution's temporaries (for a train step, every
activation the backward pass keeps) as one block, usually from one of its worker threads,
and frees it when the step ends. glibc serves a block that large from a fresh ``mmap``
(always above 64 MB in a worker thread's arena, above 32 MB anywhere) and unmaps it on
``free``, so every page of it faults on first touch, every step. ResNet-20 at batch 128 in
bfloat16 asks for a 103 MB block: 25,157 page faults per step, 85 ms per step instead of
72 (``docs/perf_notes.md``, item 47). The teaching nets' blocks at batch 128 stay under the
limit and never fault, and there the settings cost: all threads then share one heap lock, and
the CIFAR net's bfloat16 step measured 1.25x faster without them.

What: :func:`configure` calls glibc's ``mallopt`` so that every thread allocates from the
main heap (``M_ARENA_MAX`` = 1), never from ``mmap`` (``M_MMAP_MAX`` = 0), and a freed block
stays with the process unless 2 GiB lie free at the heap's top (``M_TRIM_THRESHOLD``). The
next step then reuses the same, already mapped pages. The cost: memory once used stays
resident, so the peak RSS is higher (the fast CIFAR net in bfloat16: 578 -> 851 MB).

When: a thread keeps the arena it first allocated from, and XLA's worker threads start with
the backend, so the settings act only if made before JAX's first computation. ``configure``
does nothing (and says why) once a backend exists, off CPU, or where the C library is not
glibc.

Where: ``auto`` (the default) applies them only when the caller's estimate of the step's
scratch (:func:`scratch_estimate`: every layer output of one training forward pass, times
the batch, 16-bit ones at float32's width in a model without batch norm) is at least
``REUSE_FROM_BYTES``. ``jaxcnn.train.fit``'s session passes its
model's estimate before it creates the device mesh; the benchmark passes one to
``jaxcnn.xla_flags.configure_cpu``, which calls :func:`configure`. Switch (read at call
time): ``JAXCNN_MALLOC`` = ``auto``, ``reuse`` (always) or ``system`` (never).

Examples:
    >>> SETTINGS["M_MMAP_MAX"]
    (-4, 0)
    >>> state().split(":")[0] in ("reuse", "system", "unchanged")
    True
    >>> REUSE_FROM_BYTES >> 20
    48
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

CHOICES = ("auto", "reuse", "system")
# The settings pay where XLA's block passes 32 MiB (glibc's largest dynamic mmap threshold:
# every larger block faulted in each step, every smaller one did not). The block is
# 0.45-0.97x scratch_estimate over the 12 zoo nets, dtypes and batch sizes whose block was
# measured, so no threshold on the estimate fits every batch size; 48 MiB puts all 24
# whose page faults were counted (batch 32-1024) on the side those favour
# (docs/perf_notes.md, items 47 and 93).
REUSE_FROM_BYTES = 48 * 2**20
# mallopt's parameter numbers (glibc's malloc.h) and the values set.
SETTINGS = {
    "M_ARENA_MAX": (-8, 1),
    "M_MMAP_MAX": (-4, 0),
    "M_TRIM_THRESHOLD": (-1, 2**31 - 1),
}

_state = "unchanged: configure() not called"


def _glibc():
    """glibc as a ctypes library, or None where the C library is another one."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError):  # musl and others have no gnu_get_libc_version
        return None


def activation_bytes(model, example_shape, batch_size: int) -> int | None:
    """Bytes of every layer output of one training forward pass of ``batch_size`` examples.

    Traced abstractly (``jax.eval_shape``) without starting a JAX backend: the layers'
    "one CPU device?" checks are answered by :func:`jaxcnn.placement.assume_one_cpu_device`
    meanwhile. None if the model cannot be traced so (then :func:`configure`'s ``auto``
    keeps glibc's defaults).

    Examples:
        >>> import flax.linen as nn
        >>> activation_bytes(nn.Dense(4), (3,), batch_size=10)  # 10 x 4 float32 outputs
        160
    """
    traced = _layer_outputs(model, example_shape)
    if traced is None:
        return None
    leaves, _ = traced
    return batch_size * sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)


def scratch_estimate(model, example_shape, batch_size: int) -> int | None:
    """What ``auto`` compares with ``REUSE_FROM_BYTES``: :func:`activation_bytes`, but with
    16-bit float outputs counted at float32's 4 bytes in a model without batch statistics.

    Why: XLA:CPU's block faults in every step once it passes 32 MiB, and the layer outputs'
    bytes predict its size only roughly: it is 0.55-0.97x them over the zoo nets measured,
    but 1.7x for the CIFAR net in bfloat16 (``docs/perf_notes.md``, item 93). In bfloat16
    the nets without batch norm keep float32 copies (XLA's own fusions compute their
    layers), so their block is about 0.8x the float32 step's, not half of it as in the
    batch-norm nets, whose norm kernels read and write bfloat16. Counted at float32's
    width they land with the others.

    Examples:
        >>> import flax.linen as nn, jax.numpy as jnp
        >>> scratch_estimate(nn.Dense(4, dtype=jnp.bfloat16), (3,), batch_size=10)
        160
        >>> activation_bytes(nn.Dense(4, dtype=jnp.bfloat16), (3,), batch_size=10)
        80
    """
    traced = _layer_outputs(model, example_shape)
    if traced is None:
        return None
    import jax.numpy as jnp

    leaves, has_batch_stats = traced

    def width(dtype) -> int:  # bfloat16's numpy kind is "V", so ask jnp what it is
        floating = jnp.issubdtype(dtype, jnp.floating)
        return 4 if floating and dtype.itemsize < 4 and not has_batch_stats else dtype.itemsize

    return batch_size * sum(leaf.size * width(leaf.dtype) for leaf in leaves)


def _layer_outputs(model, example_shape):
    """``(every layer output of one training forward pass of one example, as abstract
    arrays; whether the model keeps batch statistics)``, or None where jaxcnn cannot trace
    the model abstractly."""
    import jax
    import jax.numpy as jnp

    from jaxcnn import placement

    found = {}

    def intermediates(x):
        keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        try:
            variables = model.init(keys, x, train=False)
            kwargs = {"train": True}
        except TypeError:  # a module without a train flag
            variables, kwargs = model.init(keys, x), {}
        found["batch_stats"] = "batch_stats" in variables
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=True,
                               rngs={"dropout": keys["dropout"]}, **kwargs)  # fmt: skip
        return state["intermediates"]

    try:
        with placement.assume_one_cpu_device():
            x = jax.ShapeDtypeStruct((1, *example_shape), jnp.float32)
            leaves = jax.tree.leaves(jax.eval_shape(intermediates, x))
    except Exception:  # any model jaxcnn cannot trace abstractly: no estimate
        return None
    return leaves, found["batch_stats"]


def configure(scratch_bytes: int | Callable[[], int | None] | None = None) -> str:
    """Applies :data:`SETTINGS` where they pay and can still act (see the module's text).

    Args:
      scratch_bytes: the caller's estimate of a step's scratch (:func:`scratch_estimate`),
        or a function returning it, called only when ``auto`` has that choice to make;
        under ``auto`` the settings apply only from ``REUSE_FROM_BYTES``.

    Returns:
      :func:`state`'s line: ``"reuse: ..."`` when applied (now or by an earlier call),
      ``"system: <why>"`` when glibc's defaults are kept by choice, else
      ``"unchanged: <why>"``.

    Raises:
      ValueError: for an invalid ``JAXCNN_MALLOC``, naming it and the valid values.
      OSError: glibc refused a setting (it never does for these values).
    """
    from jax._src import xla_bridge  # asks without starting a backend

    from jaxcnn.conv_backend import env_choice
    from jaxcnn.placement import cpu_platform_problem

    global _state
    wanted = env_choice("JAXCNN_MALLOC", "auto", CHOICES)
    if _state.startswith("reuse"):
        return _state
    if wanted == "system":
        _state = "system: JAXCNN_MALLOC=system"
        return _state
    libc = _glibc()
    if xla_bridge.backends_are_initialized():
        _state = "unchanged: the JAX backend had started (its threads keep their arenas)"
        return _state
    if (problem := cpu_platform_problem()) is not None:
        _state = f"unchanged: {problem}"
        return _state
    if libc is None:
        _state = f"unchanged: the C library is not glibc ({sys.platform})"
        return _state
    reason = wanted
    if wanted == "auto":  # the estimate (a trace of the model) only where it decides
        scratch = scratch_bytes() if callable(scratch_bytes) else scratch_bytes
        if scratch is None:
            _state = "system: auto, no estimate of the step's scratch"
            return _state
        estimate = f"~{scratch / 2**20:.0f} MB"
        if scratch < REUSE_FROM_BYTES:
            _state = (
                f"system: auto, the step's scratch ({estimate}) under {REUSE_FROM_BYTES >> 20} MB"
            )
            return _state
        reason = f"auto; scratch {estimate}"
    for name, (parameter, value) in SETTINGS.items():
        if libc.mallopt(parameter, value) != 1:
            raise OSError(f"glibc mallopt({name}, {value}) failed")
    settings = ", ".join(f"{name}={value}" for name, (_, value) in SETTINGS.items())
    _state = f"reuse: mallopt {settings} ({reason})"
    return _state


def state() -> str:
    """What :func:`configure` did in this process, as one line (for logs and the benchmark)."""
    return _state
