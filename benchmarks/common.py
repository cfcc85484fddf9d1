"""What every benchmark runner shares: its command line, the timing protocol and its JSON line.

A runner is a small program (``benchmarks/<runner>.py``) that trains one net on random
in-memory data and prints exactly one line ``BENCH_RESULT {...json...}``. The harness
(``scripts/benchmark.py``) starts each runner in its own process, possibly under another
Python interpreter (the peers live in their own virtual environment), so this module
imports only the standard library and numpy.

The protocol, identical for every runner:

1. build the model, the optimiser and ``steps`` batches of random data (not timed);
2. ``first_step_s``: one training step including tracing/compilation, synchronised;
3. ``warmup`` more steps (not timed);
4. ``windows`` timed windows of ``steps`` steps each, synchronised at both ends;
   ``images_per_sec`` lists one throughput per window (the harness takes their median).

``--device`` (``auto``, ``cpu`` or ``gpu``) says where: ``auto`` is where the framework
puts work by default (its GPU when it sees one), ``cpu`` keeps a GPU machine's GPU out,
``gpu`` insists. A runner that cannot honour it prints an "unsupported" result saying
why (``DeviceUnavailable``), so the report keeps the row. Every result names the
``device`` it ran on and, on a GPU, the framework's peak device memory
(``device_peak_mb``); ``peak_rss_mb`` is always the host process's.

Examples:
    >>> args = parse_args("demo", ["--net", "mnist_cnn", "--steps", "3"])
    >>> (args.net, args.batch, args.steps)
    ('mnist_cnn', 128, 3)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

# name -> (input shape HWC, classes). The nets themselves are defined once per framework
# (benchmarks/nets_flax.py, torch_peer.py, keras_peer.py) with identical layers.
NETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist_cnn": ((28, 28, 1), 10),  # the teaching MNIST net, 34,826 parameters
    "cifar_cnn": ((32, 32, 3), 10),  # the teaching CIFAR net, 122,570 parameters
    "resnet20": ((32, 32, 3), 10),  # He et al. 2016, CIFAR variant, ~0.27 M parameters
    "fast_cifar": ((32, 32, 3), 10),  # airbench-style net, ~2 M parameters
}
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "gpu")
RESULT_PREFIX = "BENCH_RESULT "


class DeviceUnavailable(RuntimeError):
    """The ``--device`` asked for is not one this runner's framework can use here."""


def parse_args(runner: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line every runner accepts.

    Args:
      runner: the runner's name, used in ``--help``.
      argv: arguments (default ``sys.argv[1:]``).

    Returns:
      The namespace with ``net``, ``dtype``, ``batch``, ``steps``, ``warmup``, ``windows``,
      ``seed``, ``device`` (``auto``, ``cpu`` or ``gpu``) and ``variant`` (a
      runner-specific flavour such as ``compile`` for torch).

    Examples:
      >>> parse_args("x", ["--net", "cifar_cnn", "--dtype", "bfloat16"]).dtype
      'bfloat16'
    """
    parser = argparse.ArgumentParser(prog=runner, description=f"benchmark runner: {runner}")
    parser.add_argument("--net", choices=sorted(NETS), required=True)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--batch", type=positive_int, default=128)
    parser.add_argument("--steps", type=positive_int, default=30, help="steps per window")
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--windows", type=positive_int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="", help="runner-specific flavour")
    parser.add_argument(
        "--device", choices=DEVICES, default="auto",
        help="auto: the framework's default (its GPU if it sees one); cpu; gpu (or fail)",
    )  # fmt: skip
    return parser.parse_args(argv)


def pick_device(requested: str, gpu_name: str | None, framework: str) -> str:
    """``"cpu"`` or ``"gpu"``: where a runner runs, given what its framework sees.

    Args:
      requested: ``--device`` (``auto``, ``cpu`` or ``gpu``).
      gpu_name: the GPU the framework sees (None: it sees none).
      framework: named in the error.

    Returns:
      ``"gpu"`` for ``gpu``, or ``auto`` with a GPU; else ``"cpu"``.

    Raises:
      DeviceUnavailable: ``gpu`` was asked for and the framework sees none.

    Examples:
      >>> pick_device("auto", None, "torch"), pick_device("auto", "NVIDIA H200", "torch")
      ('cpu', 'gpu')
      >>> pick_device("cpu", "NVIDIA H200", "torch")
      'cpu'
    """
    if requested not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if gpu_name is None:
        if requested == "gpu":
            raise DeviceUnavailable(f"--device gpu, but {framework} sees no GPU here")
        return "cpu"
    return "gpu"


def use_jax_device(requested: str) -> None:
    """Points JAX at ``--device`` without starting a backend (call before any JAX work).

    ``cpu`` sets ``jax_platforms`` to ``cpu``, so a GPU machine's GPU stays out and the CPU
    XLA flags (``jaxcnn.xla_flags.configure_cpu``) still apply; ``auto`` and ``gpu`` leave
    JAX's default, which ``jax_device_info`` then checks.
    """
    import jax

    if requested == "cpu":
        jax.config.update("jax_platforms", "cpu")


def jax_device_info(requested: str) -> dict:
    """Where JAX runs (this starts its backend): ``{"device", "device_name"}``.

    Args:
      requested: ``--device``.

    Returns:
      ``device`` is ``"cpu"`` or ``"gpu"``; ``device_name`` the device's ``device_kind``
      (e.g. ``"NVIDIA H200"``, or ``"cpu"``).

    Raises:
      DeviceUnavailable: ``gpu`` was asked for and JAX's default backend is not a GPU.
    """
    import jax

    first = jax.devices()[0]
    gpu = first.platform in ("gpu", "cuda", "rocm")
    if requested == "cpu" and gpu:  # use_jax_device came after JAX had started
        raise DeviceUnavailable("--device cpu, but JAX had already started on its GPU")
    kind = pick_device(requested, first.device_kind if gpu else None, "jax")
    return {"device": kind, "device_name": first.device_kind}


def jax_device_peak_mb() -> float | None:
    """JAX's peak device memory in MiB on its first device, None where not reported (CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse names the flag in its error)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


# Not jaxcnn.commands.arguments.at_least: the peer runners import this module in
# interpreters that have PyTorch or Keras but need not have jaxcnn.
def _int_at_least(text: str, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {value}")
    return value


def random_data(net: str, num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 images (N, H, W, C) in [0, 1) and int32 labels, the same for every runner.

    Args:
      net: a key of ``NETS``.
      num_images: how many images.
      seed: numpy seed.

    Returns:
      ``(images, labels)``.

    Examples:
      >>> x, y = random_data("mnist_cnn", 4, 0)
      >>> x.shape, y.dtype
      ((4, 28, 28, 1), dtype('int32'))
    """
    shape, classes = NETS[net]
    rng = np.random.default_rng(seed)
    images = rng.random((num_images, *shape), dtype=np.float32)
    labels = rng.integers(0, classes, size=num_images, dtype=np.int32)
    return images, labels


def time_loop(
    args: argparse.Namespace, step: Callable[[int], object], sync: Callable[[object], None]
) -> dict:
    """Runs the protocol (first step, warm-up, timed windows) for a step-at-a-time runner.

    Args:
      args: the parsed command line.
      step: ``step(i)`` dispatches training step ``i`` and returns something ``sync`` can wait
        on (e.g. the loss array).
      sync: blocks until the value returned by ``step`` is computed.

    Returns:
      ``{"first_step_s": float, "images_per_sec": [...], "images_per_cpu_sec": [...]}``: one
      rate per window, by wall clock and by this process's CPU time (all threads; a
      load-independent view of the work per image, inflated by threads that spin).
    """
    start = time.perf_counter()
    sync(step(0))
    first_step_s = time.perf_counter() - start
    out = None
    for i in range(args.warmup):
        out = step(1 + i)
    if out is not None:
        sync(out)
    rates, cpu_rates = [], []
    i = 1 + args.warmup
    for _ in range(args.windows):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            out = step(i)
            i += 1
        sync(out)
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
        cpu_rates.append(args.steps * args.batch / (time.process_time() - cpu_start))
    return {"first_step_s": first_step_s, "images_per_sec": rates, "images_per_cpu_sec": cpu_rates}


def emit(runner: str, args: argparse.Namespace, measured: dict, **extra) -> None:
    """Prints the one ``BENCH_RESULT`` JSON line the harness reads.

    Args:
      runner: runner name (e.g. ``"torch"``).
      args: the parsed command line.
      measured: the output of ``time_loop`` (or the same keys from a runner's own loop).
      **extra: more fields, e.g. ``params`` (parameter count) and ``versions``.
    """
    result = {
        "runner": runner,
        "variant": args.variant,
        "net": args.net,
        "dtype": args.dtype,
        "batch": args.batch,
        "device": "cpu",
        "steps": args.steps,
        "windows": args.windows,
        "status": "ok",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "python": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **measured,
        **extra,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def emit_unsupported(runner: str, args: argparse.Namespace, reason: str) -> None:
    """Prints a ``BENCH_RESULT`` saying this runner cannot run this case, and why."""
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "runner": runner,
                "variant": args.variant,
                "net": args.net,
                "dtype": args.dtype,
                "batch": args.batch,
                "status": f"unsupported ({reason})",
            }
        ),
        flush=True,
    )
