"""Which XLA:CPU scheduler orders a train step: per compiled step, not per process.

XLA:CPU orders a computation's operations with one of two schedulers. The default,
"concurrency-optimised" (breadth-first), interleaves independent chains so that its
threads find more operations ready at once; the "memory-optimised" one (depth-first)
finishes one chain before the next. Measured in fresh processes on the 2-core Intel Xeon
(``docs/perf_notes.md``, item 52), the depth-first order made the bfloat16 steps of the
nets without batch norm faster (the CIFAR net x1.04-1.11, the MNIST net x0.98-1.07), but
not those with it (the fast CIFAR net x0.97-1.00 at batch 128, and its CIFAR-10 recipe,
batch 512, 467 s against 394; ResNet-20 x1.03), nor float32 steps (the CIFAR net lost
3-7 %). So ``auto`` picks the memory-optimised scheduler for bfloat16 steps of models
without batch statistics, on CPU, and leaves XLA's default everywhere else.

The choice is a compiler option of one ``jax.jit`` (``jaxcnn.train.fit``'s step and the
benchmark's), so it touches nothing else the process compiles, and it changes only the
order: the step computes the same values either way. This jaxlib reads the enum
``xla_cpu_scheduler_type``; the older boolean
``--xla_cpu_enable_concurrency_optimized_scheduler`` still works in ``XLA_FLAGS`` but
is silently ignored when passed per jit.

Switch (read at call time): ``JAXCNN_XLA_SCHEDULER`` = ``auto`` (default), ``memory`` or
``concurrency`` (either for any step). Under ``auto``, ``JAXCNN_NO_XLA_FLAGS=1`` or a
scheduler flag already in ``XLA_FLAGS`` keeps XLA's own choice.

Examples:
    >>> train_step_options("float32", platform="cpu")
    {}
    >>> train_step_options("bfloat16", platform="cpu")
    {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}
    >>> train_step_options("bfloat16", platform="cpu", batch_norm=True)
    {}
    >>> train_step_options("bfloat16", platform="gpu")
    {}
"""

from __future__ import annotations

import os

from jaxcnn import xla_flags

CHOICES = ("auto", "memory", "concurrency")
OPTION = "xla_cpu_scheduler_type"
VALUES = {
    "memory": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
    "concurrency": "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED",
}
# XLA_FLAGS names that already decide the scheduler: the user's choice wins under auto.
_USER_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler", "--xla_cpu_scheduler_type")


def chosen(dtype, batch_norm: bool = False) -> str:
    """``"memory"`` or ``"concurrency"`` for a step computing in ``dtype`` (of a model with
    batch statistics if ``batch_norm``), or ``""`` for XLA's own choice.

    Raises:
      ValueError: for an invalid ``JAXCNN_XLA_SCHEDULER``, naming it and the valid values.

    Examples:
        >>> chosen("bfloat16"), chosen("float32"), chosen("bfloat16", batch_norm=True)
        ('memory', '', '')
    """
    import jax.numpy as jnp

    from jaxcnn.conv_backend import env_choice

    wanted = env_choice("JAXCNN_XLA_SCHEDULER", "auto", CHOICES)
    if wanted != "auto":
        return wanted
    user_flags = xla_flags.flag_names(os.environ.get("XLA_FLAGS", ""))
    if xla_flags.opted_out() or user_flags.intersection(_USER_FLAGS):
        return ""
    return "memory" if jnp.dtype(dtype) == jnp.bfloat16 and not batch_norm else ""


def train_step_options(
    dtype, platform: str | None = None, batch_norm: bool = False
) -> dict[str, str]:
    """``compiler_options`` for ``jax.jit`` of a train step computing in ``dtype``.

    Args:
      dtype: the step's computation dtype (``config.dtype``), e.g. ``"bfloat16"``.
      platform: where it compiles (``"cpu"``, ``"gpu"``, ...); default JAX's default
        backend (which starts it). Off CPU there is nothing to choose: ``{}``.
      batch_norm: whether the model keeps batch statistics (``TrainState.has_batch_norm``).

    Returns:
      ``{}`` (XLA's default) or ``{"xla_cpu_scheduler_type": <enum name>}``.

    Examples:
        >>> import jax
        >>> f = jax.jit(lambda x: x + 1, compiler_options=train_step_options("bfloat16"))
        >>> int(f(1))
        2
    """
    if platform is None:
        import jax

        platform = jax.default_backend()
    if platform != "cpu":
        return {}
    choice = chosen(dtype, batch_norm)
    return {OPTION: VALUES[choice]} if choice else {}


def describe(options: dict[str, str]) -> str:
    """The scheduler that ``options`` (from :func:`train_step_options`) picks, for a log line.

    Examples:
        >>> describe(train_step_options("bfloat16", platform="cpu"))
        'memory-optimised'
        >>> describe({})
        "XLA's default"
    """
    names = {value: name for name, value in VALUES.items()}
    name = names.get(options.get(OPTION, ""))
    return f"{name}-optimised" if name else "XLA's default"
