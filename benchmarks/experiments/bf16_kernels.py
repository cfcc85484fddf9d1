"""Does XLA:CPU run bfloat16 matmuls and convolutions faster than float32 on this CPU?

Keras on TensorFlow trains faster in bfloat16 than in float32 on CPUs with
``avx512_bf16`` (oneDNN), while on those CPUs jaxcnn's bfloat16 step is slower than its
float32 one (``docs/benchmarks.md``). This script times the kernels underneath, as
XLA:CPU compiles them with jaxcnn's flags, in three precisions:

* ``f32``: float32 operands, float32 result;
* ``bf16``: bfloat16 operands, bfloat16 result (what a bfloat16 Flax layer asks for);
* ``bf16>f32``: bfloat16 operands, float32 result (``preferred_element_type``).

Matmuls are timed forward; convolutions forward and forward + backward (both gradients).
Output: milliseconds (median of windows) and GFLOP/s per kernel.

    python benchmarks/experiments/bf16_kernels.py
    python benchmarks/experiments/bf16_kernels.py --only conv

Reading (session 7, AMD EPYC family 26 with ``avx512_bf16``, ``docs/perf_notes.md``): the
2048^3 matmul ran at 388 / 273 / 824 GFLOP/s, so only ``bf16>f32`` uses the bfloat16
instructions; no convolution was faster in either bfloat16 form.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# The same timing rule and NHWC/HWIO convolution as the float32 pieces (imports no JAX).
from benchmarks.experiments.conv_pieces import DIMS, median_ms  # noqa: E402

# (m, k, n): a square matmul, and a conv2-like patches matmul (rows = batch x pixels).
MATMULS = {"square 2048": (2048, 2048, 2048), "patches 32768x576x64": (32768, 576, 64)}
# (batch, size, in channels, out channels), 3x3 SAME: teaching CIFAR conv2, a ResNet-20
# stage-1 conv, and two fast-CIFAR-net convs.
CONVS = {
    "cifar conv2": (128, 15, 32, 64),
    "resnet20 stage1": (128, 32, 16, 16),
    "fast_cifar 64->128": (128, 32, 64, 128),
    "fast_cifar 128->256": (128, 16, 128, 256),
}
PRECISIONS = ("f32", "bf16", "bf16>f32")


def _operands_and_result(precision: str):
    """``(operand dtype, preferred_element_type)`` for a precision name.

    Examples:
      >>> _operands_and_result("bf16>f32")[1].__name__
      'float32'
    """
    import jax.numpy as jnp

    return {
        "f32": (jnp.float32, None),
        "bf16": (jnp.bfloat16, None),
        "bf16>f32": (jnp.bfloat16, jnp.float32),
    }[precision]


def time_matmul(m: int, k: int, n: int, precision: str) -> float:
    """Milliseconds for one ``(m, k) @ (k, n)`` matmul in ``precision``."""
    import jax
    import jax.numpy as jnp

    dtype, result = _operands_and_result(precision)
    a = jax.random.normal(jax.random.key(0), (m, k)).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (k, n)).astype(dtype)
    return median_ms(jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=result)), a, b)


def conv_in(precision: str):
    """A 3x3 SAME NHWC convolution ``(x, w) -> y`` whose result has ``precision``'s type."""
    from jax import lax

    result = _operands_and_result(precision)[1]

    def conv(x, w):
        return lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=DIMS, preferred_element_type=result
        )

    return conv


def time_conv(batch: int, size: int, cin: int, cout: int, precision: str) -> tuple[float, float]:
    """``(forward ms, forward + backward ms)`` of one 3x3 SAME convolution in ``precision``."""
    import jax
    import jax.numpy as jnp

    dtype, _ = _operands_and_result(precision)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, cin)).astype(dtype)
    w = (jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1).astype(dtype)
    conv = conv_in(precision)

    def loss(x, w):  # summed in float32 so every precision gets the same cotangent
        return conv(x, w).astype(jnp.float32).sum()

    forward = median_ms(jax.jit(conv), x, w)
    both = median_ms(jax.jit(jax.grad(loss, argnums=(0, 1))), x, w)
    return forward, both


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("matmul", "conv"), default=None)
    args = parser.parse_args(argv)

    from jaxcnn import xla_flags

    xla_flags.configure_cpu()
    if args.only != "conv":
        for name, (m, k, n) in MATMULS.items():
            flops = 2 * m * k * n
            row = []
            for precision in PRECISIONS:
                ms = time_matmul(m, k, n, precision)
                row.append(f"{precision} {ms:7.2f} ms {flops / ms / 1e6:5.0f} GFLOP/s")
            print(f"matmul {name:22s} " + " | ".join(row), flush=True)
    if args.only != "matmul":
        for name, (batch, size, cin, cout) in CONVS.items():
            flops = 2 * batch * size * size * 9 * cin * cout  # forward only
            row = []
            for precision in PRECISIONS:
                forward, both = time_conv(batch, size, cin, cout, precision)
                row.append(
                    f"{precision} fwd {forward:6.2f} ms ({flops / forward / 1e6:4.0f} GFLOP/s)"
                    f" fwd+bwd {both:7.2f} ms"
                )
            print(f"conv {name:20s} " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
