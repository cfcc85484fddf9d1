"""The "no library" baseline: a minimal hand-written Flax Linen + optax jit training loop.

This is what a researcher would write without jaxcnn: plain ``flax.linen`` layers with
``nn.max_pool``, Adam from optax, one ``jax.jit`` step with the state donated, random data
kept on the device as a list of batches, JAX's default XLA flags. jaxcnn must never be
slower than this (issue 5).

Run alone (the harness does this in a fresh process per measurement):

    python benchmarks/flax_minimal.py --net mnist_cnn --dtype float32 --batch 128
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from benchmarks import common, nets_flax  # noqa: E402


def make_train_step(model, tx):
    """A jit-compiled Adam step on softmax cross-entropy; state donated.

    Args:
      model: a Linen module called as ``model.apply(variables, x, train=True)``.
      tx: an optax optimiser.

    Returns:
      ``step(params, batch_stats, opt_state, x, y, key) -> (params, batch_stats, opt_state,
      loss)``.
    """

    def loss_fn(params, batch_stats, x, y, key):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        logits, updates = model.apply(
            variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates.get("batch_stats", batch_stats)

    @jax.jit(donate_argnums=(0, 1, 2))
    def step(params, batch_stats, opt_state, x, y, key):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, x, y, key
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    return step


def run(args, model, runner: str, **extra) -> None:
    """Times ``model`` with the minimal loop under the common protocol and emits the result."""
    images, labels = common.random_data(args.net, args.steps * args.batch, args.seed)
    batches = [
        (jnp.asarray(images[i : i + args.batch]), jnp.asarray(labels[i : i + args.batch]))
        for i in range(0, len(images), args.batch)
    ]
    key = jax.random.key(args.seed)
    variables = model.init({"params": key, "dropout": key}, batches[0][0][:1], train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    train_step = make_train_step(model, tx)
    state = [params, batch_stats, opt_state]

    def step(i):
        x, y = batches[i % len(batches)]
        *state[:], loss = train_step(*state, x, y, jax.random.fold_in(key, i))
        return loss

    measured = common.time_loop(args, step, lambda loss: loss.block_until_ready())
    common.emit(
        runner,
        args,
        measured,
        params=sum(p.size for p in jax.tree.leaves(params)),
        versions={"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__},
        xla_flags=__import__("os").environ.get("XLA_FLAGS", ""),
        device_peak_mb=common.jax_device_peak_mb(),
        **common.jax_device_info(args.device),
        **extra,
    )


def main(argv=None) -> int:
    args = common.parse_args("flax_minimal", argv)
    common.use_jax_device(args.device)
    try:
        common.jax_device_info(args.device)
    except common.DeviceUnavailable as error:
        common.emit_unsupported("flax_minimal", args, str(error))
        return 0
    run(args, nets_flax.build(args.net, args.dtype, pool="nn"), "flax_minimal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
