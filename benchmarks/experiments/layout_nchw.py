"""NHWC against NCHW for the CIFAR / MNIST teaching nets on XLA:CPU: one train step.

The same net written twice in plain JAX (``lax.conv_general_dilated``, a tiled 2x2 max
pool as reshape + max, a dense head), trained by the "no library" baseline's step
(``benchmarks/flax_minimal.make_train_step``: softmax cross-entropy, optax Adam): once with
channels last (``NHWC`` input, ``HWIO`` kernels, Flax's and jaxcnn's layout) and once
with channels first (``NCHW``, ``OIHW``, PyTorch's). Layout is the only difference; the
pool's and the dense head's indexing follow it. Run one layout per process (XLA:CPU
compiles each step once), alternating, with the harness's best-window rule:

    python benchmarks/experiments/layout_nchw.py --rounds 4 --net cifar_cnn

Each process prints images/s and how many transposes and copies the optimised HLO holds,
which shows whether XLA kept the logical layout or moved the data.
``docs/perf_notes.md``, session 6, has the result.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# (input height/width, channels, [(features, pool after?)], dense features) per net:
# the teaching nets of jaxcnn.models (3x3 VALID convolutions, ReLU).
NETS = {
    "cifar_cnn": (32, 3, [(32, True), (64, True), (64, False)], 64),
    "mnist_cnn": (28, 1, [(32, True), (64, True)], 64),
}
SPECS = {"nhwc": ("NHWC", "HWIO", "NHWC"), "nchw": ("NCHW", "OIHW", "NCHW")}


def _init(net: str, layout: str, key):
    import jax
    import jax.numpy as jnp

    size, channels, convs, dense = NETS[net]
    params, keys = [], jax.random.split(key, len(convs) + 2)
    for (features, pool), k in zip(convs, keys, strict=False):
        shape = (3, 3, channels, features) if layout == "nhwc" else (features, channels, 3, 3)
        params.append((jax.random.normal(k, shape) * (2 / (9 * channels)) ** 0.5,
                       jnp.zeros(features)))  # fmt: skip
        size, channels = size - 2, features
        if pool:
            size //= 2
    flat = size * size * channels
    params.append((jax.random.normal(keys[-2], (flat, dense)) / flat**0.5, jnp.zeros(dense)))
    params.append((jax.random.normal(keys[-1], (dense, 10)) / dense**0.5, jnp.zeros(10)))
    return params


def _pool(x, layout: str):
    """2x2 max pool over the spatial axes, odd rows/columns dropped (VALID)."""
    if layout == "nhwc":
        n, h, w, c = x.shape
        x = x[:, : h // 2 * 2, : w // 2 * 2, :].reshape(n, h // 2, 2, w // 2, 2, c)
        return x.max(axis=(2, 4))
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
    return x.max(axis=(3, 5))


def _apply(params, images, net: str, layout: str):
    import jax
    from jax import lax

    channel_axis = 3 if layout == "nhwc" else 1
    x = images
    for (kernel, bias), (_, pool) in zip(params, NETS[net][2], strict=False):
        x = lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=SPECS[layout])
        shape = [1, 1, 1, 1]
        shape[channel_axis] = bias.shape[0]
        x = jax.nn.relu(x + bias.reshape(shape))
        if pool:
            x = _pool(x, layout)
    x = x.reshape(x.shape[0], -1)
    (w1, b1), (w2, b2) = params[-2:]
    return jax.nn.relu(x @ w1 + b1[None]) @ w2 + b2[None]  # explicit: no rank promotion


class _PlainNet:
    """The plain-JAX net behind the ``model.apply`` call of ``flax_minimal.make_train_step``,
    so both layouts train with the "no library" baseline's own step (Adam 1e-3)."""

    def __init__(self, net: str, layout: str):
        self.net, self.layout = net, layout

    def apply(self, variables, images, *, train, rngs, mutable):
        del train, rngs, mutable  # no dropout, no batch statistics
        return _apply(variables["params"], images, self.net, self.layout), {}


def _hlo_counts(text: str) -> dict[str, int]:
    return {
        "transposes": len(re.findall(r"= \S+ transpose\(", text)),
        "transpose fusions": len(re.findall(r"%\S*transpose\S*_fusion\S* = ", text)),
        "copies": len(re.findall(r"= \S+ copy\(", text)),
        "convolutions": len(re.findall(r"= \S+ convolution\(", text)),
    }


def measure(net: str, layout: str, batch: int, steps: int, windows: int) -> dict:
    """Best-window images/s of one layout's step, and its optimised HLO's op counts."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks import common, flax_minimal
    from jaxcnn import xla_flags

    xla_flags.configure_cpu()
    size, channels = NETS[net][:2]
    shape = (batch, size, size, channels) if layout == "nhwc" else (batch, channels, size, size)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    key = jax.random.key(0)
    tx = optax.adam(1e-3)
    params = _init(net, layout, key)
    step = flax_minimal.make_train_step(_PlainNet(net, layout), tx)
    state = [params, {}, tx.init(params)]
    counts = _hlo_counts(step.lower(*state, images, labels, key).compile().as_text())

    def one_step(i):
        *state[:], loss = step(*state, images, labels, key)
        return loss

    protocol = argparse.Namespace(batch=batch, steps=steps, warmup=3, windows=windows)
    measured = common.time_loop(protocol, one_step, lambda loss: loss.block_until_ready())
    return {"layout": layout, "images_per_sec": max(measured["images_per_sec"]), "hlo": counts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="cifar_cnn", choices=sorted(NETS))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--one", choices=sorted(SPECS), help="(internal) run one layout, print JSON")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.net, args.one, args.batch, args.steps, args.windows)))
        return 0
    rates: dict[str, list[float]] = {layout: [] for layout in SPECS}
    for r in range(args.rounds):
        for layout in SPECS:
            cmd = [sys.executable, __file__, "--net", args.net, "--one", layout,
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--windows", str(args.windows)]  # fmt: skip
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                            check=True).stdout.splitlines()[-1])  # fmt: skip
            rates[layout].append(out["images_per_sec"])
            print(f"round {r + 1} {layout}: {out['images_per_sec']:7.0f} img/s  {out['hlo']}")
    ratios = [a / b for a, b in zip(rates["nchw"], rates["nhwc"], strict=True)]
    print(
        f"{args.net}: NHWC {statistics.median(rates['nhwc']):.0f} img/s, NCHW "
        f"{statistics.median(rates['nchw']):.0f} img/s; NCHW / NHWC per round "
        f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
