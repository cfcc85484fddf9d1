"""XLA flags that make CNN training faster on CPU, applied only when they can still act.

XLA reads ``XLA_FLAGS`` once, when JAX creates its first backend (the first array or jit
call, not ``import jax``). ``configure_cpu()`` therefore adds jaxcnn's chosen flags to the
environment only if no backend exists yet and the run will be on CPU; otherwise it does
nothing and says why. Flags the user already put in ``XLA_FLAGS`` always win.

Why these flags (measurements in ``docs/perf_notes.md``):

* ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``: jaxlib 0.10 hands each
  convolution to YNNPACK by default; for the small NHWC convolutions of these nets (and
  their gradients) XLA's own Eigen/oneDNN path is faster on x86.

The scheduler XLA:CPU orders a train step with is a compiler option of that step's jit,
not a flag: ``jaxcnn.xla_scheduler``.

Environment overrides (read at call time):

* ``JAXCNN_NO_XLA_FLAGS=1``: add no flags (opt-out; ``jaxcnn.cpu_malloc`` has its own).
* ``JAXCNN_XLA_FLAGS="--flag=value --other=value"``: use these instead of the defaults.

Examples:
    >>> merge_flags("--xla_a=1", ["--xla_a=2", "--xla_b=3"])  # the user's --xla_a wins
    '--xla_a=1 --xla_b=3'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from jaxcnn import placement

DEFAULT_CPU_FLAGS: tuple[str, ...] = (
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0].strip()


def flag_names(flags: str) -> set[str]:
    """The names set in an ``XLA_FLAGS``-style string.

    Examples:
      >>> sorted(flag_names("--xla_a=1 --xla_b"))
      ['--xla_a', '--xla_b']
    """
    return {_flag_name(flag) for flag in flags.split()}


def opted_out() -> bool:
    """Whether ``JAXCNN_NO_XLA_FLAGS`` asks for none of jaxcnn's XLA choices."""
    return os.environ.get("JAXCNN_NO_XLA_FLAGS", "") not in ("", "0")


def merge_flags(existing: str, flags: Sequence[str]) -> str:
    """Appends ``flags`` to the ``existing`` XLA_FLAGS string, skipping names already set.

    Args:
      existing: the current ``XLA_FLAGS`` value (may be empty).
      flags: flags like ``"--xla_cpu_x=1"``; each must start with ``--``.

    Returns:
      The merged, space-separated string.

    Raises:
      ValueError: if a flag does not start with ``--``.

    Examples:
      >>> merge_flags("", ["--xla_b=3"])
      '--xla_b=3'
    """
    present = flag_names(existing)
    out = existing.split()
    for flag in flags:
        if not flag.startswith("--"):
            raise ValueError(f"each XLA flag must start with '--', got {flag!r}")
        if _flag_name(flag) not in present:
            out.append(flag)
            present.add(_flag_name(flag))
    return " ".join(out)


def chosen_cpu_flags() -> tuple[str, ...]:
    """The flags :func:`configure_cpu` adds by default: ``$JAXCNN_XLA_FLAGS``, else ours.

    Examples:
        >>> import os
        >>> os.environ["JAXCNN_XLA_FLAGS"] = "--xla_a=1 --xla_b=2"
        >>> chosen_cpu_flags()
        ('--xla_a=1', '--xla_b=2')
        >>> del os.environ["JAXCNN_XLA_FLAGS"]
    """
    override = os.environ.get("JAXCNN_XLA_FLAGS")
    return tuple(override.split()) if override is not None else DEFAULT_CPU_FLAGS


def configure_cpu(
    flags: Sequence[str] | None = None, scratch_bytes: int | Callable[[], int | None] | None = None
) -> tuple[str, ...]:
    """Adds jaxcnn's CPU XLA flags to ``XLA_FLAGS`` if JAX has not started a backend yet.

    Call it before the first JAX computation (``jaxcnn.train.fit`` and the benchmark do).
    It also calls :func:`jaxcnn.cpu_malloc.configure` with ``scratch_bytes`` (its own
    switch, ``JAXCNN_MALLOC``; ``JAXCNN_NO_XLA_FLAGS`` leaves it on).

    Args:
      flags: flags to add; default ``$JAXCNN_XLA_FLAGS`` (split on spaces) if set, else
        ``DEFAULT_CPU_FLAGS``.
      scratch_bytes: the step's scratch estimate for ``cpu_malloc.configure``, or a function
        returning it (None: none).

    Returns:
      The flags added (empty if nothing was added: opted out, backend already initialised,
      not on CPU, or the user had set every flag already).

    Examples:
      >>> import os
      >>> os.environ["JAXCNN_NO_XLA_FLAGS"] = "1"
      >>> configure_cpu()
      ()
      >>> del os.environ["JAXCNN_NO_XLA_FLAGS"]
    """
    from jaxcnn import cpu_malloc

    cpu_malloc.configure(scratch_bytes)  # the same deadline: before the backend's threads
    if opted_out():
        return ()
    flags = chosen_cpu_flags() if flags is None else tuple(flags)
    from jax._src import xla_bridge  # the only way to ask without starting a backend

    if xla_bridge.backends_are_initialized() or placement.cpu_platform_problem() is not None:
        return ()
    existing = os.environ.get("XLA_FLAGS", "")
    merged = merge_flags(existing, flags)
    added = tuple(f for f in merged.split() if f not in existing.split())
    os.environ["XLA_FLAGS"] = merged
    return added


def explain() -> str:
    """One line saying which flags are in force and why (for logs and the benchmark).

    Returns:
      E.g. ``"XLA_FLAGS='--xla_cpu_...' (backend initialised: yes); malloc reuse: ..."``.

    Examples:
      >>> explain().startswith("XLA_FLAGS=")
      True
    """
    from jax._src import xla_bridge

    state = "yes" if xla_bridge.backends_are_initialized() else "no"
    problem = placement.cpu_platform_problem()
    where = f"; not applied on this platform: {problem}" if problem else ""
    from jaxcnn import cpu_malloc

    flags = os.environ.get("XLA_FLAGS", "")
    return f"XLA_FLAGS={flags!r} (backend initialised: {state}{where}); malloc {cpu_malloc.state()}"
