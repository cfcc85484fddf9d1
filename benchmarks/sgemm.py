"""The SGEMM ceiling: float32 n x n x n matmul FLOP/s in JAX and (if installed) PyTorch.

A practical upper bound for what a training step can reach on this machine: convolutions
are at best matmuls of this kind. Prints one JSON object.

    python benchmarks/sgemm.py --n 2048 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _best_rate(fn, n: int, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def measure(framework: str, n: int, repeats: int) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n``-cubed float32 matmul.

    Args:
      framework: ``"jax"`` or ``"torch"``.
      n: matrix size.
      repeats: timed repetitions (the best is kept: the ceiling, not the typical).

    Returns:
      GFLOP/s.

    Examples:
      >>> measure("jax", 64, 2) > 0
      True
    """
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        matmul = jax.jit(jnp.dot)
        return _best_rate(lambda: matmul(a, a).block_until_ready(), n, repeats)
    if framework == "torch":
        import os

        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        a = torch.randn(n, n)
        return _best_rate(lambda: torch.mm(a, a), n, repeats)
    raise ValueError(f"framework must be 'jax' or 'torch', got {framework!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--framework", choices=["jax", "torch"], default="jax")
    args = parser.parse_args(argv)
    print(
        json.dumps(
            {
                "framework": args.framework,
                "n": args.n,
                "gflops": measure(args.framework, args.n, args.repeats),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
