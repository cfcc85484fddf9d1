"""Two variants of one train step, compiled in one process, timed in alternating windows.

Fresh processes (``interleave.py``, ``scripts/benchmark.py``) differ from each other by
more than a 1-2 % change on a shared 2-core machine: each process lands on its own
memory, and a slow stretch of the machine hits one process and not the next. Here both
steps live in the same process and take turns, window by window (A B, B A, A B, ...), so
each ratio compares two windows a few hundred milliseconds apart. Two identical steps
gave x1.001 (quartiles 0.991-1.014) on ResNet-20 (docs/perf_notes.md, item 76).

A variant is ``none`` or settings applied only while its step is traced: environment
variables read at trace time (``env:JAXCNN_ONEDNN_FORWARD=direct``), module constants
(``attr:jaxcnn.onednn.ffi_conv.INPUT_GRAD_MAIN_BELOW=0``) or XLA options for this
step's compilation alone (``opt:xla_backend_optimization_level=1``), several joined by
``,``. Each variant's compile time is printed too.

    python benchmarks/experiments/same_process_ab.py --net resnet20 --dtype bfloat16 \\
        'env:JAXCNN_ONEDNN_FORWARD=direct' none
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

_MISSING = object()  # a module constant that did not exist before the block


def parsed(variant: str) -> list[tuple[str, str, str]]:
    """``variant``'s settings as ``(kind, name, value)``, checked.

    Examples:
        >>> parsed("env:X=1,opt:xla_backend_optimization_level=1")
        [('env', 'X', '1'), ('opt', 'xla_backend_optimization_level', '1')]
        >>> parsed("none")
        []
    """
    settings_ = []
    for item in [] if variant == "none" else variant.split(","):
        kind, _, assignment = item.partition(":")
        name, sep, value = assignment.partition("=")
        if kind not in ("env", "attr", "opt") or not sep:
            raise ValueError(
                f"setting {item!r}: expected env:VAR=VALUE, attr:MODULE.NAME=VALUE or "
                "opt:XLA_OPTION=VALUE"
            )
        settings_.append((kind, name, value))
    return settings_


@contextlib.contextmanager
def settings(variant: str):
    """Apply ``variant``'s settings for the duration of the block, then restore them.

    Examples:
        >>> with settings("env:JAXCNN_EXAMPLE=1"):
        ...     os.environ["JAXCNN_EXAMPLE"]
        '1'
        >>> "JAXCNN_EXAMPLE" in os.environ
        False
        >>> with settings("attr:statistics.EXAMPLE_LIMIT=3"):
        ...     statistics.EXAMPLE_LIMIT
        3
        >>> hasattr(statistics, "EXAMPLE_LIMIT")
        False
    """
    undo = []
    try:
        for kind, name, value in parsed(variant):
            if kind == "opt":
                continue  # compile_options() gives these to the step's compilation
            if kind == "env":
                undo.append((os.environ, name, os.environ.get(name)))
                os.environ[name] = value
            else:
                module_name, _, attribute = name.rpartition(".")
                module = importlib.import_module(module_name)
                undo.append((module, attribute, getattr(module, attribute, _MISSING)))
                setattr(module, attribute, ast.literal_eval(value))
        yield
    finally:
        for target, name, old in reversed(undo):
            if target is os.environ and old is None:
                os.environ.pop(name, None)
            elif target is os.environ:
                os.environ[name] = old
            elif old is _MISSING:
                delattr(target, name)
            else:
                setattr(target, name, old)


def compile_options(variant: str) -> dict[str, str]:
    """The ``opt:`` settings of ``variant``, as ``Lowered.compile`` takes them.

    Examples:
        >>> compile_options("opt:xla_backend_optimization_level=1,env:X=1")
        {'xla_backend_optimization_level': '1'}
        >>> compile_options("none")
        {}
    """
    return {name: value for kind, name, value in parsed(variant) if kind == "opt"}


def alternate(time_a, time_b, rounds: int) -> list[float]:
    """Each round times one window of A and one of B (A first in even rounds, B first in
    odd ones) and records A's time over B's: above 1, B was the faster.

    Examples:
        >>> alternate(lambda: 2.0, lambda: 1.0, rounds=3)
        [2.0, 2.0, 2.0]
    """
    ratios = []
    for index in range(rounds):
        first, second = (time_a, time_b) if index % 2 == 0 else (time_b, time_a)
        one, two = first(), second()
        a, b = (one, two) if index % 2 == 0 else (two, one)
        ratios.append(a / b)
    return ratios


def summary(ratios: list[float]) -> str:
    """Median ratio, its quartiles, and in how many windows B was the faster.

    Examples:
        >>> summary([0.99, 1.02, 1.03, 1.05])
        'B speed / A: x1.025 (quartiles 1.020-1.050), B faster in 3 of 4 windows'
    """
    ordered = sorted(ratios)
    low, high = ordered[len(ordered) // 4], ordered[3 * len(ordered) // 4]
    faster = sum(ratio > 1 for ratio in ratios)
    return (
        f"B speed / A: x{statistics.median(ratios):.3f} (quartiles {low:.3f}-{high:.3f}), "
        f"B faster in {faster} of {len(ratios)} windows"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resnet20")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=5, help="steps per window")
    p.add_argument("a", help="variant A: settings, or none")
    p.add_argument("b", help="variant B: settings, or none")
    args = p.parse_args(argv)

    from benchmarks.experiments import step_profile

    step_profile.configure_like_fit(args.net, args.dtype, args.batch)
    import jax

    runs, compile_seconds = [], []
    for variant in (args.a, args.b):
        with settings(variant):  # read while tracing and compiling only
            step, state, batch = step_profile._build(args.net, args.batch, 1, args.dtype)
            lowered = step.lower(state, batch)
            start = time.perf_counter()
            step = lowered.compile(compile_options(variant) or None)
            compile_seconds.append(time.perf_counter() - start)
        for _ in range(5):
            state, sums = step(state, batch)
        jax.block_until_ready(sums)
        runs.append([step, state, batch])

    def window(run) -> float:
        step, state, batch = run
        start = time.perf_counter()
        for _ in range(args.steps):
            state, sums = step(state, batch)
        jax.block_until_ready(sums)
        run[1] = state
        return (time.perf_counter() - start) / args.steps

    ratios = alternate(lambda: window(runs[0]), lambda: window(runs[1]), args.rounds)
    print(f"{args.net} {args.dtype} batch {args.batch}: A = {args.a}, B = {args.b}")
    print(f"XLA compile: A {compile_seconds[0]:.2f} s, B {compile_seconds[1]:.2f} s")
    print(summary(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
