"""The SGEMM ceiling: float32 n x n x n matmul FLOP/s in JAX and (if installed) PyTorch.

A practical upper bound for what a training step can reach on this machine: convolutions
are at best matmuls of this kind. On a GPU (``--device auto`` when the framework sees one,
or ``--device gpu``) the product runs there, n defaults to 8192 instead of 2048 (2048^3
takes microseconds there) and float32 means TF32 tensor-core math, as in the training
runs (XLA's default for float32 on these GPUs; ``set_float32_matmul_precision("high")``
in torch). Prints one JSON object.

    python benchmarks/sgemm.py --n 2048 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

CPU_N, GPU_N = 2048, 8192


def _best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def measure(framework: str, n: int | None, repeats: int, device: str = "auto") -> dict:
    """Best-of-``repeats`` GFLOP/s of an ``n``-cubed float32 matmul.

    Args:
      framework: ``"jax"`` or ``"torch"``.
      n: matrix size (None: 2048 on the CPU, 8192 on a GPU).
      repeats: timed repetitions (the best is kept: the ceiling, not the typical).
      device: ``auto``, ``cpu`` or ``gpu`` (see ``common.pick_device``).

    Returns:
      ``{"gflops", "n", "device", "device_name"}``.

    Raises:
      common.DeviceUnavailable: ``device="gpu"`` and the framework sees no GPU.

    Examples:
      >>> measure("jax", 64, 2, "cpu")["gflops"] > 0
      True
    """
    if framework == "jax":
        common.use_jax_device(device)
        where = common.jax_device_info(device)
        import jax
        import jax.numpy as jnp

        n = n or (GPU_N if where["device"] == "gpu" else CPU_N)
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        matmul = jax.jit(jnp.dot)
        return {"gflops": _best_rate(lambda: matmul(a, a).block_until_ready(), n, repeats),
                "n": n, **where}  # fmt: skip
    if framework == "torch":
        import os

        import torch

        gpu_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        kind = common.pick_device(device, gpu_name, "torch")
        torch.set_num_threads(os.cpu_count() or 1)
        n = n or (GPU_N if kind == "gpu" else CPU_N)
        if kind == "cpu":
            a = torch.randn(n, n)
            rate = _best_rate(lambda: torch.mm(a, a), n, repeats)
            return {"gflops": rate, "n": n, "device": "cpu", "device_name": "cpu"}
        torch.set_float32_matmul_precision("high")
        a = torch.randn(n, n, device="cuda")

        def product():
            torch.mm(a, a)
            torch.cuda.synchronize()

        rate = _best_rate(product, n, repeats)
        return {"gflops": rate, "n": n, "device": "gpu", "device_name": gpu_name}
    raise ValueError(f"framework must be 'jax' or 'torch', got {framework!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help=f"default {CPU_N} on the CPU, {GPU_N} on a GPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--framework", choices=["jax", "torch"], default="jax")
    parser.add_argument("--device", choices=common.DEVICES, default="auto")
    args = parser.parse_args(argv)
    found = measure(args.framework, args.n, args.repeats, args.device)
    print(json.dumps({"framework": args.framework, **found}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
