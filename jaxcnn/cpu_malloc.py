"""glibc malloc settings that keep XLA:CPU's scratch memory mapped from one step to the next.

Why: XLA:CPU allocates all of an execution's temporaries (for a train step, every
activation the backward pass keeps) as one block, usually from one of its worker threads,
and frees it when the step ends. glibc serves a block that large from a fresh ``mmap``
(always above 64 MB in a worker thread's arena, above 32 MB anywhere) and unmaps it on
``free``, so every page of it faults on first touch, every step. ResNet-20 at batch 128 in
bfloat16 asks for a 103 MB block: 25,157 page faults per step, 85 ms per step instead of
72 (``docs/perf_notes.md``, item 47). The small teaching nets' blocks stay under the limit
and never fault.

What: :func:`configure` calls glibc's ``mallopt`` so that every thread allocates from the
main heap (``M_ARENA_MAX`` = 1), never from ``mmap`` (``M_MMAP_MAX`` = 0), and a freed block
stays with the process unless 2 GiB lie free at the heap's top (``M_TRIM_THRESHOLD``). The
next step then reuses the same, already mapped pages. The cost: memory once used stays
resident, so the peak RSS is higher (the fast CIFAR net in bfloat16: 578 -> 851 MB).

When: a thread keeps the arena it first allocated from, and XLA's worker threads start with
the backend, so the settings act only if made before JAX's first computation. ``configure``
does nothing (and says why) once a backend exists, off CPU, or where the C library is not
glibc. ``jaxcnn.xla_flags.configure_cpu`` calls it; ``jaxcnn.train.fit`` and the benchmark
call that before anything else.

Switch (read at call time): ``JAXCNN_MALLOC`` = ``reuse`` (default) or ``system`` (leave
glibc's defaults).

Examples:
    >>> SETTINGS["M_MMAP_MAX"]
    (-4, 0)
    >>> state().split(":")[0] in ("reuse", "system", "unchanged")
    True
"""

from __future__ import annotations

import ctypes
import sys

CHOICES = ("reuse", "system")
# mallopt's parameter numbers (glibc's malloc.h) and the values set.
SETTINGS = {
    "M_ARENA_MAX": (-8, 1),
    "M_MMAP_MAX": (-4, 0),
    "M_TRIM_THRESHOLD": (-1, 2**31 - 1),
}

_state = "unchanged: configure() not called"


def choice() -> str:
    """``$JAXCNN_MALLOC``, validated: ``"reuse"`` (the default) or ``"system"``.

    Raises:
      ValueError: naming the variable, its value and the valid ones.

    Examples:
      >>> choice() in CHOICES
      True
    """
    from jaxcnn.conv_backend import env_choice

    return env_choice("JAXCNN_MALLOC", "reuse", CHOICES)


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


def configure() -> str:
    """Applies :data:`SETTINGS` if JAX has no backend yet, the run is on CPU and libc is glibc.

    Returns:
      :func:`state`'s line: ``"reuse: ..."`` when applied (now or by an earlier call),
      ``"system: ..."`` when ``JAXCNN_MALLOC=system``, else ``"unchanged: <why>"``.

    Raises:
      ValueError: for an invalid ``JAXCNN_MALLOC``.
      OSError: glibc refused a setting (it never does for these values).
    """
    global _state
    wanted = choice()
    if _state.startswith("reuse"):
        return _state
    if wanted == "system":
        _state = "system: JAXCNN_MALLOC=system"
        return _state
    from jax._src import xla_bridge  # asks without starting a backend

    from jaxcnn.xla_flags import _platform_problem

    libc = _glibc()
    if xla_bridge.backends_are_initialized():
        _state = "unchanged: the JAX backend had started (its threads keep their arenas)"
    elif (problem := _platform_problem()) is not None:
        _state = f"unchanged: {problem}"
    elif libc is None:
        _state = f"unchanged: the C library is not glibc ({sys.platform})"
    else:
        for name, (parameter, value) in SETTINGS.items():
            if libc.mallopt(parameter, value) != 1:
                raise OSError(f"glibc mallopt({name}, {value}) failed")
        settings = ", ".join(f"{name}={value}" for name, (_, value) in SETTINGS.items())
        _state = f"reuse: mallopt {settings}"
    return _state


def state() -> str:
    """What :func:`configure` did in this process, as one line (for logs and the benchmark)."""
    return _state
