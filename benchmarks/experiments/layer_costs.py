"""Where a training step's time goes: each layer's forward+backward timed alone.

CPU time per call (all threads together), which other processes on a shared machine
disturb far less than wall time. For every conv layer of the MNIST and CIFAR nets it
times value-and-gradient (w.r.t. kernel, and input unless it is the first layer) with
``lax`` convolution and with the im2col loser (``benchmarks/experiments/im2col_conv.py``),
and the 2x2 pools with ``reduce_window`` and ``jaxcnn.fast_ops.max_pool``.

    python benchmarks/experiments/layer_costs.py [--batch 128] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks.experiments import im2col_conv  # noqa: E402
from jaxcnn import fast_ops  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
# (name, input HWC, out channels, needs input gradient)
CONVS = [
    ("mnist conv1", (28, 28, 1), 32, False),
    ("mnist conv2", (13, 13, 32), 64, True),
    ("cifar conv1", (32, 32, 3), 32, False),
    ("cifar conv2", (15, 15, 32), 64, True),
    ("cifar conv3", (6, 6, 64), 64, True),
]
POOLS = [("mnist pool1", (26, 26, 32)), ("mnist pool2", (11, 11, 64)),
         ("cifar pool1", (30, 30, 32)), ("cifar pool2", (13, 13, 64))]  # fmt: skip


def best_ms(fn, *args, repeats: int) -> float:
    """CPU milliseconds per call (all threads), the mean over ``repeats`` calls.

    CPU time, not wall time: on a machine shared with other jobs it measures the work
    this op costs rather than how much of the CPU the scheduler happened to give us.
    """
    jax.block_until_ready(fn(*args))
    start = time.process_time()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.process_time() - start) / repeats * 1e3


def conv_cost(conv, shape, out_ch, input_grad, batch, repeats, dtype):
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (batch, *shape), dtype)
    w = jax.random.normal(k2, (3, 3, shape[-1], out_ch), dtype)
    loss = lambda x, w: jnp.sum(jax.nn.relu(conv(x, w, (1, 1), "VALID", dimension_numbers=DN)))
    fwd = jax.jit(lambda x, w: conv(x, w, (1, 1), "VALID", dimension_numbers=DN))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1) if input_grad else 1))
    return best_ms(fwd, x, w, repeats=repeats), best_ms(grad, x, w, repeats=repeats)


def pool_cost(pool, shape, batch, repeats, dtype):
    x = jax.random.normal(jax.random.key(0), (batch, *shape), dtype)
    fwd = jax.jit(pool)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(pool(jax.nn.relu(x)) ** 2)))
    return best_ms(fwd, x, repeats=repeats), best_ms(grad, x, repeats=repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load {load}  batch {args.batch}  {dtype}")
    print(f"{'layer':14s} {'impl':8s} {'fwd cpu-ms':>10s} {'fwd+bwd cpu-ms':>14s}")
    for name, shape, out_ch, input_grad in CONVS:
        for impl, conv in (("lax", lax.conv_general_dilated),
                           ("im2col", im2col_conv.conv_general_dilated)):  # fmt: skip
            f, g = conv_cost(conv, shape, out_ch, input_grad, args.batch, args.repeats, dtype)
            print(f"{name:14s} {impl:8s} {f:10.2f} {g:14.2f}")
    nn_pool = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    for name, shape in POOLS:
        for impl, pool in (("reduce_w", nn_pool), ("reshape", lambda x: fast_ops.max_pool(x, 2))):
            f, g = pool_cost(pool, shape, args.batch, args.repeats, dtype)
            print(f"{name:14s} {impl:8s} {f:10.2f} {g:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
