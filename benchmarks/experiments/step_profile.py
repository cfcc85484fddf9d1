"""Where one jaxcnn train step spends its time: step time, per-op XLA profile, optimised HLO.

Runs ``jaxcnn.train``'s jitted step for a zoo net on random uint8 data (as the ``jaxcnn``
benchmark runner does), prints the median step time over ``--windows`` windows and, unless
``--no-profile``, the XLA:CPU ops that took longest (from a ``jax.profiler`` trace with
``--xla_cpu_enable_xprof_traceme``). Convolutions run asynchronously on Eigen's threads, so
their rows show only the dispatch: their cost is the step time minus the rest, or
``conv_pieces.py`` in isolation. ``--hlo FILE`` writes the optimised HLO, which names
every fusion in the profile.

    python benchmarks/experiments/step_profile.py --net cifar_cnn
    python benchmarks/experiments/step_profile.py --net mnist_cnn --no-profile --devices 2
    python benchmarks/experiments/step_profile.py --net fast_cifar --dtype bfloat16 \
        --batch 1024 --model-kwargs '{"pool_first": true, "activation": "gelu_exact"}'

The ``x`` column counts an op's trace events per step: ``x 1.0`` for a fusion means it
ran as one task, on one thread. In jaxlib 0.10 that holds for every elementwise fusion;
only the convolutions use every core (``docs/perf_notes.md``, session 5).

``--devices N`` splits the batch over N CPU devices (it sets
``--xla_force_host_platform_device_count``), the data-parallel experiment in
``docs/perf_notes.md``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _build(net: str, batch: int, devices: int, dtype: str = "float32", kwargs=None):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import common
    from jaxcnn import models
    from jaxcnn.train import base_config, create_train_state, make_train_step

    shape = common.NETS[net][0]
    model = models.get(net, dtype=jnp.dtype(dtype), **(kwargs or {}))
    config = base_config()
    config.optimizer.name, config.optimizer.learning_rate = "adam", 1e-3
    config.schedule.name, config.num_epochs = "constant", 1
    state = create_train_state(model, config, jax.random.key(0), (1, *shape), steps_per_epoch=1)
    channels = np.full(shape[-1], 0.5, np.float32)
    from jaxcnn import xla_scheduler

    step = jax.jit(
        make_train_step(model, mean=channels, std=channels / 2),
        donate_argnums=0,
        # fit's XLA:CPU scheduler for this step (JAXCNN_XLA_SCHEDULER overrides it)
        compiler_options=xla_scheduler.train_step_options(dtype, batch_norm=state.has_batch_norm),
    )
    rng = np.random.default_rng(0)
    batch_arrays = {
        "image": jnp.asarray(rng.integers(0, 255, (batch, *shape), dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, 10, batch).astype(np.int32)),
    }
    if devices > 1:
        from jaxcnn.train import sharding

        mesh = sharding.make_mesh(devices)
        state = jax.device_put(state, sharding.replicated(mesh))
        batch_arrays = jax.device_put(batch_arrays, sharding.batch_sharded(mesh))
    return step, state, batch_arrays


def _top_ops(trace_dir: str, steps: int, top: int) -> list[str]:
    path = next(Path(trace_dir).rglob("*.trace.json.gz"))
    with gzip.open(path) as stream:
        events = json.load(stream)["traceEvents"]
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X":
            total[event["name"]] += event["dur"]
            count[event["name"]] += 1
    return [
        f"{us / steps / 1e3:8.3f} ms/step  x{count[name] / steps:5.1f}  {name[:100]}"
        for name, us in total.most_common(top)
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="cifar_cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=20, help="steps per timed window")
    p.add_argument("--windows", type=int, default=7)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--hlo", type=Path, help="write the optimised HLO here")
    p.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help="JSON keyword arguments for the zoo model, e.g. '{\"pool_first\": true}'",
    )
    args = p.parse_args(argv)

    from jaxcnn import xla_flags

    extra = ["--xla_cpu_enable_xprof_traceme=true"]
    if args.devices > 1:
        extra.append(f"--xla_force_host_platform_device_count={args.devices}")
    xla_flags.configure_cpu((*xla_flags.chosen_cpu_flags(), *extra))  # JAXCNN_XLA_FLAGS too
    import jax

    step, state, batch = _build(args.net, args.batch, args.devices, args.dtype, args.model_kwargs)
    if args.hlo:
        args.hlo.write_text(step.lower(state, batch).compile().as_text())
    for _ in range(5):
        state, sums = step(state, batch)
    jax.block_until_ready(sums)
    seconds = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps):
            state, sums = step(state, batch)
        jax.block_until_ready(sums)
        seconds.append((time.perf_counter() - start) / args.steps)
    median = statistics.median(seconds)
    print(f"{args.net} {args.dtype} batch {args.batch}: step {median * 1e3:.2f} ms (median of "
          f"{args.windows}), {args.batch / median:,.0f} img/s, best window "
          f"{args.batch / min(seconds):,.0f} img/s")  # fmt: skip
    if not args.no_profile:
        with tempfile.TemporaryDirectory() as trace_dir:
            jax.profiler.start_trace(trace_dir)
            for _ in range(10):
                state, sums = step(state, batch)
            jax.block_until_ready(sums)
            jax.profiler.stop_trace()
            print("\n".join(_top_ops(trace_dir, 10, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
