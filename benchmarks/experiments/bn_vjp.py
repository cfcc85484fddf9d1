"""Training-mode batch norm + activation alone: Flax's ``nn.BatchNorm`` against jaxcnn's op.

Milliseconds (median of ``--windows`` windows) for the gradient, with respect to input,
scale and bias, of ``sum(activation(batch_norm(x)) * probe)``, as XLA:CPU compiles it
with jaxcnn's flags:

* ``flax``: ``nn.BatchNorm`` then :func:`jaxcnn.activations.activate` (autodiff), what
  ``ConvBlock(fused_norm=False)`` runs;
* ``jaxcnn``: :func:`jaxcnn.batch_norm.batch_norm_activation`, one op with a hand-written
  gradient, what ``ConvBlock(fused_norm=True)`` runs.

``diff`` is the largest difference of the op's gradients from Flax's, relative to each
gradient's largest entry (bfloat16: the two round differently). The shapes are the fast
CIFAR net's first groups (bfloat16, GELU) and ResNet-20's first stages (float32, ReLU),
batch 128 (``docs/perf_notes.md``, item 29). Only ``jax.grad``: with
``jax.value_and_grad`` on this toy loss YNNPACK fuses the forward's output into the sum
and the comparison says nothing about a real step (item 29).

    python benchmarks/experiments/bn_vjp.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.experiments.conv_pieces import median_ms  # noqa: E402

CASES = (
    ((128, 31, 31, 64), "bfloat16", "gelu"),
    ((128, 15, 15, 256), "bfloat16", "gelu"),
    ((128, 15, 15, 256), "float32", "gelu"),
    ((128, 32, 32, 16), "float32", "relu"),
    ((128, 16, 16, 32), "float32", "relu"),
    ((128, 8, 8, 64), "float32", "relu"),
)
EPS = 1e-5


def _flax(activation: str):
    import flax.linen as nn
    import jax.numpy as jnp

    from jaxcnn.activations import activate

    def run(x, scale, bias):
        module = nn.BatchNorm(use_running_average=False, epsilon=EPS, dtype=x.dtype)
        stats = {"mean": jnp.zeros_like(scale), "var": jnp.ones_like(scale)}
        variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": stats}
        y = module.apply(variables, x, mutable=["batch_stats"])[0]
        return activate(activation, y)

    return run


def _jaxcnn(activation: str):
    from jaxcnn.activations import get_activation
    from jaxcnn.batch_norm import batch_norm_activation

    fn = get_activation(activation)

    def run(x, scale, bias):
        return batch_norm_activation(x, scale, bias, EPS, fn, x.dtype)[0]

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=7)
    args = parser.parse_args(argv)
    from jaxcnn import xla_flags

    xla_flags.configure_cpu()
    import jax
    import jax.numpy as jnp

    for shape, dtype, activation in CASES:
        keys = jax.random.split(jax.random.key(0), 2)
        x = (jax.random.normal(keys[0], shape) * 2 + 1).astype(dtype)
        probe = jax.random.normal(keys[1], shape).astype(dtype)
        scale = jnp.full(shape[-1], 1.3)
        bias = jnp.full(shape[-1], 0.1)
        results = {}
        for name, make in (("flax", _flax), ("jaxcnn", _jaxcnn)):
            norm = make(activation)

            def loss(x, scale, bias, norm=norm, probe=probe):
                return jnp.sum((norm(x, scale, bias) * probe).astype(jnp.float32))

            grad = jax.jit(jax.grad(loss, (0, 1, 2)))
            timing = median_ms(grad, x, scale, bias, windows=args.windows, calls=10)
            results[name] = (timing, grad(x, scale, bias))
        diff = max(
            float(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)).max())
            / float(jnp.abs(b.astype(jnp.float32)).max())
            for a, b in zip(results["jaxcnn"][1], results["flax"][1], strict=True)
        )
        timings = "  ".join(f"{name} {ms:6.2f} ms" for name, (ms, _) in results.items())
        ratio = results["flax"][0] / results["jaxcnn"][0]
        print(f"{shape} {dtype} {activation}: {timings}  x{ratio:.2f}  diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
