"""Training-mode batch norm + ReLU alone: flax's ``nn.BatchNorm`` against a custom VJP.

Milliseconds (median of 5 windows) for the gradient, with respect to input, scale and
bias, of ``sum(relu(batch_norm(x)) * probe)`` at the activation shapes of ResNet-20's
first two stages (batch 128), as XLA:CPU compiles it with jaxcnn's flags. The custom VJP
keeps the normalised input ``xhat`` and the inverse standard deviation from the forward
pass and writes the textbook gradient,
``dx = scale * inv / n * (n * g - sum(g) - xhat * sum(g * xhat))``: two reductions and
one elementwise pass. ``diff`` is its largest difference from flax's autodiff gradient,
relative to that gradient's largest entry. Not in the library yet (``docs/perf_notes.md``,
session 4: the next step for ResNet-20).

    python benchmarks/experiments/bn_vjp.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.experiments.conv_pieces import median_ms  # noqa: E402

SHAPES = ((128, 32, 32, 16), (128, 16, 16, 32), (128, 8, 8, 64))
EPS = 1e-5


def _flax_batch_norm(x, scale, bias):
    import flax.linen as nn
    import jax.numpy as jnp

    module = nn.BatchNorm(use_running_average=False, epsilon=EPS)
    stats = {"mean": jnp.zeros_like(scale), "var": jnp.ones_like(scale)}
    variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": stats}
    return module.apply(variables, x, mutable=["batch_stats"])[0]


def _custom_vjp_batch_norm():
    import jax
    import jax.numpy as jnp

    def forward(x, scale, bias):
        axes = tuple(range(x.ndim - 1))
        mean = x.mean(axes)
        # E[x^2] - E[x]^2, as flax's default (use_fast_variance) computes it.
        var = jnp.maximum((x * x).mean(axes) - mean * mean, 0.0)
        inv = jax.lax.rsqrt(var + EPS)
        xhat = (x - mean) * inv
        return xhat * scale + bias, (xhat, inv, scale)

    def backward(residuals, g):
        xhat, inv, scale = residuals
        axes = tuple(range(g.ndim - 1))
        n = g.size // g.shape[-1]
        dbias = g.sum(axes)
        dscale = (g * xhat).sum(axes)
        return (scale * inv / n) * (n * g - dbias - xhat * dscale), dscale, dbias

    batch_norm = jax.custom_vjp(lambda x, scale, bias: forward(x, scale, bias)[0])
    batch_norm.defvjp(forward, backward)
    return batch_norm


def main() -> int:
    from jaxcnn import xla_flags

    xla_flags.configure_cpu()
    import jax
    import jax.numpy as jnp

    variants = {"flax": _flax_batch_norm, "custom VJP": _custom_vjp_batch_norm()}
    for shape in SHAPES:
        keys = jax.random.split(jax.random.key(0), 2)
        x = jax.random.normal(keys[0], shape) * 2 + 1
        probe = jax.random.normal(keys[1], shape)
        scale = jnp.full(shape[-1], 1.3)
        bias = jnp.full(shape[-1], 0.1)
        results = {}
        for name, batch_norm in variants.items():

            def loss(x, scale, bias, batch_norm=batch_norm, probe=probe):
                return jnp.sum(jax.nn.relu(batch_norm(x, scale, bias)) * probe)

            grad = jax.jit(jax.grad(loss, (0, 1, 2)))
            timing = median_ms(grad, x, scale, bias, windows=5, calls=20)
            results[name] = (timing, grad(x, scale, bias))
        reference = results["flax"][1]
        diff = max(
            float(jnp.abs(a - b).max() / jnp.abs(b).max())
            for a, b in zip(results["custom VJP"][1], reference, strict=True)
        )
        timings = "  ".join(f"{name} {ms:6.2f} ms" for name, (ms, _) in results.items())
        print(f"{shape}: {timings}  diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
