"""Each convolution of the teaching nets alone: forward, input gradient, weight gradient.

Milliseconds (median of 8 windows) for ``lax.conv_general_dilated`` and its two gradients
as XLA:CPU compiles them with jaxcnn's flags, and for two hand-written weight gradients
that lost (``docs/perf_notes.md``): nine ``einsum``s of shifted input slices against the
output gradient, and one ``einsum`` of the im2col patch matrix. ``err`` is their largest
difference from XLA's weight gradient, relative to its largest entry.

    python benchmarks/experiments/conv_pieces.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# (batch, input size, in channels, out channels): the convolutions of the teaching nets.
LAYERS = {
    "cifar conv1": (128, 32, 3, 32),
    "cifar conv2": (128, 15, 32, 64),
    "cifar conv3": (128, 6, 64, 64),
    "mnist conv1": (128, 28, 1, 32),
    "mnist conv2": (128, 13, 32, 64),
}
DIMS = ("NHWC", "HWIO", "NHWC")


def median_ms(fn, *args, windows: int = 8, calls: int = 5) -> float:
    """Median milliseconds per call of ``fn(*args)`` over ``windows`` timed windows."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def measure(batch: int, size: int, cin: int, cout: int, k: int = 3) -> dict[str, float]:
    """Times one 3x3 VALID convolution's pieces; returns ``{name: ms or relative error}``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    out = size - k + 1
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (batch, size, size, cin))
    w = jax.random.normal(keys[1], (k, k, cin, cout)) * 0.1
    dy = jax.random.normal(keys[2], (batch, out, out, cout))

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DIMS)

    def input_grad(x, w, dy):
        return jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]

    def weight_grad(x, w, dy):
        return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]

    def weight_grad_slices(x, w, dy):
        rows = [
            [jnp.einsum("nhwc,nhwf->cf", x[:, i : i + out, j : j + out, :], dy) for j in range(k)]
            for i in range(k)
        ]
        return jnp.stack([jnp.stack(r) for r in rows])

    def weight_grad_patches(x, w, dy):
        slices = [x[:, i : i + out, j : j + out, :] for i in range(k) for j in range(k)]
        patches = jnp.concatenate(slices, axis=-1)
        return jnp.einsum("nhwp,nhwf->pf", patches, dy).reshape(k, k, cin, cout)

    reference = jax.jit(weight_grad)(x, w, dy)
    result = {
        "forward": median_ms(jax.jit(conv), x, w),
        "input grad": median_ms(jax.jit(input_grad), x, w, dy),
        "weight grad": median_ms(jax.jit(weight_grad), x, w, dy),
    }
    for name, fn in (("9 slice einsums", weight_grad_slices), ("patches", weight_grad_patches)):
        compiled = jax.jit(fn)
        error = jnp.max(jnp.abs(compiled(x, w, dy) - reference)) / jnp.max(jnp.abs(reference))
        result[name] = median_ms(compiled, x, w, dy)
        result[f"{name} err"] = float(error)
    return result


def main() -> int:
    import argparse

    # No options: the parser gives --help (the docstring) instead of a 30-second run.
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    from jaxcnn import xla_flags

    xla_flags.configure_cpu()
    for layer, shape in LAYERS.items():
        r = measure(*shape)
        cells = [f"{k} {v:.0e}" if k.endswith("err") else f"{k} {v:.2f}" for k, v in r.items()]
        print(f"{layer:12s} " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
