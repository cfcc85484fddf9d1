"""Conv + 2x2 max pool + bias + ReLU, forward and backward: plain vs space-to-depth.

For each layer shape, milliseconds of the jitted gradient (w.r.t. kernel and bias, and the
input where a net needs it) of ``relu(max_pool(conv(x)) + b)`` computed two ways: the
plain path (``lax.conv_general_dilated`` then ``jaxcnn.fast_ops.max_pool_relu``) and
``jaxcnn.conv_pool.conv_max_pool``. Interleaved in one process over ``--rounds`` rounds;
``speedup`` is the median per-round ratio plain / space-to-depth. This table set
``ConvBlock(space_to_depth=None)``'s rule (at most 4 input channels), see
``docs/perf_notes.md``, session 5.

    python benchmarks/experiments/conv_pool_pieces.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# (input size, in channels, out channels, input gradient needed): first layers of the
# MNIST/CIFAR nets (no input gradient), then deeper shapes.
LAYERS = [
    (28, 1, 32, False),
    (32, 1, 32, False),
    (32, 3, 32, False),
    (32, 4, 32, True),
    (32, 8, 32, True),
    (32, 16, 32, True),
    (16, 8, 16, True),
    (16, 16, 32, True),
    (15, 32, 64, True),
    (13, 32, 64, True),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    from jaxcnn import xla_flags

    xla_flags.configure_cpu()
    import jax
    import jax.numpy as jnp
    from jax import lax

    from benchmarks.experiments.conv_pieces import median_ms
    from jaxcnn import fast_ops
    from jaxcnn.conv_pool import conv_max_pool

    def plain(x, kernel, bias):
        z = lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        return fast_ops.max_pool_relu(z, 2, bias=bias)

    def space_to_depth(x, kernel, bias):
        y = conv_max_pool(x, kernel, 2)
        return jax.nn.relu(y + bias.reshape(1, 1, 1, -1))

    for size, cin, cout, input_grad in LAYERS:
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (args.batch, size, size, cin))
        kernel = jax.random.normal(keys[1], (3, 3, cin, cout)) * 0.2
        bias = jnp.full((cout,), 0.1)
        probe = jax.random.normal(keys[2], plain(x, kernel, bias).shape)
        argnums = (0, 1, 2) if input_grad else (1, 2)
        grads = {
            name: jax.jit(jax.grad(lambda a, k, b, f=f, p=probe: jnp.sum(f(a, k, b) * p), argnums))
            for name, f in (("plain", plain), ("s2d", space_to_depth))
        }
        times: dict[str, list[float]] = {name: [] for name in grads}
        for _ in range(args.rounds):
            for name, grad in grads.items():
                times[name].append(median_ms(grad, x, kernel, bias, windows=3))
        ratio = statistics.median(a / b for a, b in zip(times["plain"], times["s2d"], strict=True))
        print(f"{size}x{size}x{cin} -> {cout} (input grad {input_grad!s:5}): plain "
              f"{statistics.median(times['plain']):6.2f} ms, space-to-depth "
              f"{statistics.median(times['s2d']):6.2f} ms, speedup x{ratio:.2f}",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
