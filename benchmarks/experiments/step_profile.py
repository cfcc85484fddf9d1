"""Where one jaxcnn train step spends its time: step time, per-op XLA profile, optimised HLO.

Runs ``jaxcnn.train``'s jitted step for a zoo net on random uint8 data (as the ``jaxcnn``
benchmark runner does), prints the median step time over ``--windows`` windows and, unless
``--no-profile``, the XLA:CPU ops that took longest (from a ``jax.profiler`` trace with
``--xla_cpu_enable_xprof_traceme``). Convolutions run asynchronously on Eigen's threads, so
their rows show only the dispatch: their cost is the step time minus the rest, or
``conv_pieces.py`` in isolation. ``--hlo FILE`` writes the optimised HLO, which names
every fusion in the profile. glibc malloc is set as ``jaxcnn.train.fit`` and the benchmark
set it for the net (``jaxcnn.cpu_malloc``, printed): before session 29 it was not, and
where the step's scratch is large every step faulted its pages in again, charged to
whichever op touched them first.

    python benchmarks/experiments/step_profile.py --net cifar_cnn
    python benchmarks/experiments/step_profile.py --net mnist_cnn --no-profile --devices 2
    python benchmarks/experiments/step_profile.py --net fast_cifar --dtype bfloat16 \
        --batch 1024 --model-kwargs '{"pool_first": true, "activation": "gelu_exact"}'

The ``x`` column counts an op's trace events per step: ``x 1.0`` for a fusion means it
ran as one task, on one thread. In jaxlib 0.10 that holds for every elementwise fusion;
only the convolutions use every core (``docs/perf_notes.md``, session 5).

``--timeline`` adds, from the same trace, how the step's wall time divides between the
binding's calls (oneDNN, the norm kernels: each runs alone on the whole OpenMP team) and
XLA's own ops: time with a binding call running (``F-``), both (``FX``), only XLA ops
(``-X``) or nothing (``--``); the XLA ops that ran while no binding call did (work that
no call hides); and the binding's calls summed by FFI target. Session 29 found with it
that its own earlier profiles ran without fit's malloc settings (``docs/perf_notes.md``,
item 64).

``--calls`` adds each binding call's time per step, by FFI target and result shape: how
many such calls a step makes, their mean and their fastest, to set against the same
call alone (session 31 found ResNet-20's norm kernels 1.5-3x slower in the step than
alone: ``docs/perf_notes.md``, item 67).

``--devices N`` splits the batch over N CPU devices (it sets
``--xla_force_host_platform_device_count``), the data-parallel experiment in
``docs/perf_notes.md``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
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


def _trace_events(trace_dir: str) -> list[dict]:
    """The Chrome trace events that ``jax.profiler`` wrote under ``trace_dir``."""
    path = next(Path(trace_dir).rglob("*.trace.json.gz"))
    with gzip.open(path) as stream:
        return json.load(stream)["traceEvents"]


def _top_ops(events: list[dict], steps: int, top: int) -> list[str]:
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


def _work_events(events: list[dict]) -> list[dict]:
    """Complete ("X") events of ops: no executor, dispatch or client bookkeeping."""
    skip = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool", "CommonPjRt", "Parse")
    return [e for e in events if e.get("ph") == "X" and not e["name"].startswith(skip)]


def timeline(events: list[dict], targets: dict[str, str], steps: int) -> list[str]:
    """The ``--timeline`` report of trace ``events`` (Chrome trace dicts, times in us).

    ``targets`` maps the HLO names of the binding's custom calls to their FFI targets;
    every other op counts as XLA's. Figures are ms per step over ``steps`` steps.

    Examples:
        >>> events = [
        ...     {"ph": "X", "name": "ffi_call.1", "ts": 0, "dur": 3000},
        ...     {"ph": "X", "name": "copy_fusion", "ts": 2000, "dur": 2000},
        ...     {"ph": "X", "name": "add_fusion.2", "ts": 5000, "dur": 1000},
        ... ]
        >>> print("\\n".join(timeline(events, {"ffi_call.1": "jaxcnn_conv"}, 1)))
        wall 6.0 ms/step: F- 2.0, FX 1.0, -X 2.0, -- 1.0
        XLA ops while no binding call ran (ms/step):
              1.00  copy_fusion
              1.00  add_fusion
        binding calls (ms/step):
              3.00  jaxcnn_conv
    """
    work = _work_events(events)
    edges = []
    for e in work:
        kind = "F" if e["name"] in targets else "X"
        edges += [(e["ts"], 1, kind), (e["ts"] + e["dur"], -1, kind)]
    edges.sort(key=lambda edge: (edge[0], edge[1]))  # ends before starts at one instant
    running = {"F": 0, "X": 0}
    spans: collections.Counter = collections.Counter()
    last = edges[0][0] if edges else 0
    for at, change, kind in edges:
        spans[("F" if running["F"] else "-") + ("X" if running["X"] else "-")] += at - last
        running[kind] += change
        last = at
    ms = 1e3 * steps
    lines = [
        f"wall {sum(spans.values()) / ms:.1f} ms/step: "
        + ", ".join(f"{k} {spans[k] / ms:.1f}" for k in ("F-", "FX", "-X", "--"))
    ]
    calls = sorted((e["ts"], e["ts"] + e["dur"]) for e in work if e["name"] in targets)
    alone: collections.Counter = collections.Counter()
    for e in work:
        if e["name"] in targets:
            continue
        start, end = e["ts"], e["ts"] + e["dur"]
        hidden = sum(max(0, min(end, b) - max(start, a)) for a, b in calls)
        alone[e["name"].rsplit(".", 1)[0] if e["name"][-1].isdigit() else e["name"]] += max(
            0, end - start - hidden
        )
    lines.append("XLA ops while no binding call ran (ms/step):")
    lines += [f"    {us / ms:6.2f}  {name}" for name, us in alone.most_common(12) if us > 0]
    by_target: collections.Counter = collections.Counter()
    for e in work:
        if e["name"] in targets:
            by_target[targets[e["name"]]] += e["dur"]
    lines.append("binding calls (ms/step):")
    lines += [f"    {us / ms:6.2f}  {name}" for name, us in by_target.most_common()]
    return lines


def binding_calls(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (FFI target, first result's shape), for the binding's
    (``jaxcnn_*``) custom calls; the shape ``"?"`` where the HLO does not give one.

    Examples:
        >>> binding_calls('%ffi_call.3 = bf16[2,8]{1,0} custom-call(%p), '
        ...               'custom_call_target="jaxcnn_add"')
        {'ffi_call.3': ('jaxcnn_add', 'bf16[2,8]')}
        >>> binding_calls('%ffi_call.4 = (f32[4]{0}, f32[4]{0}) custom-call(%p, %q), '
        ...               'custom_call_target="jaxcnn_batch_norm_forward"')
        {'ffi_call.4': ('jaxcnn_batch_norm_forward', 'f32[4]')}
    """
    found = re.finditer(
        r'%([\w.\-]+) = \(?([a-z0-9]+\[[\d,]*\])?[^\n]*custom_call_target="(jaxcnn\w*)"',
        hlo_text,
    )
    return {m.group(1): (m.group(3), m.group(2) or "?") for m in found}


def per_call(events: list[dict], calls: dict[str, tuple[str, str]], steps: int):
    """The ``--calls`` report: binding calls by (target, first result's shape).

    Examples:
        >>> events = [{"ph": "X", "name": "ffi_call.1", "ts": 0, "dur": 300},
        ...           {"ph": "X", "name": "ffi_call.2", "ts": 400, "dur": 100},
        ...           {"ph": "X", "name": "ffi_call.1", "ts": 900, "dur": 500},
        ...           {"ph": "X", "name": "ffi_call.2", "ts": 1500, "dur": 100}]
        >>> calls = {"ffi_call.1": ("jaxcnn_add", "f32[8]"), "ffi_call.2": ("jaxcnn_add", "f32[8]")}
        >>> print("\\n".join(per_call(events, calls, steps=2)))
        binding calls by target and shape (calls per step, ms per call: mean, fastest):
          jaxcnn_add                        f32[8]                  2.0  0.250  0.100
    """
    times = collections.defaultdict(list)
    for e in _work_events(events):
        if e["name"] in calls:
            times[calls[e["name"]]].append(e["dur"] / 1e3)
    lines = ["binding calls by target and shape (calls per step, ms per call: mean, fastest):"]
    for (target, shape), ms in sorted(times.items()):
        lines.append(
            f"  {target:32s}  {shape:22s} {len(ms) / steps:4.1f}  "
            f"{statistics.mean(ms):.3f}  {min(ms):.3f}"
        )
    return lines


def configure_like_fit(net: str, dtype: str, batch: int, extra_flags=(), model_kwargs=None):
    """XLA's CPU flags (``JAXCNN_XLA_FLAGS`` too) and glibc malloc as ``fit`` and the
    benchmark set them for this net (item 47), plus ``extra_flags``; before jax starts."""
    from jaxcnn import xla_flags

    def scratch():
        import jax.numpy as jnp

        from benchmarks import common
        from jaxcnn import cpu_malloc, models

        zoo = models.get(net, dtype=jnp.dtype(dtype), **(model_kwargs or {}))
        return cpu_malloc.scratch_estimate(zoo, common.NETS[net][0], batch)

    xla_flags.configure_cpu((*xla_flags.chosen_cpu_flags(), *extra_flags), scratch_bytes=scratch)


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
    p.add_argument("--timeline", action="store_true", help="also: binding calls against XLA's ops")
    p.add_argument("--calls", action="store_true", help="also: each binding call's time")
    p.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help="JSON keyword arguments for the zoo model, e.g. '{\"pool_first\": true}'",
    )
    args = p.parse_args(argv)

    extra = ["--xla_cpu_enable_xprof_traceme=true"]
    if args.devices > 1:
        extra.append(f"--xla_force_host_platform_device_count={args.devices}")
    configure_like_fit(args.net, args.dtype, args.batch, extra, args.model_kwargs)
    from jaxcnn import cpu_malloc

    print(f"malloc: {cpu_malloc.state()}")
    import jax

    step, state, batch = _build(args.net, args.batch, args.devices, args.dtype, args.model_kwargs)
    wants_hlo = args.hlo or args.timeline or args.calls
    hlo_text = step.lower(state, batch).compile().as_text() if wants_hlo else ""
    if args.hlo:
        args.hlo.write_text(hlo_text)
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
            events = _trace_events(trace_dir)  # read once, for both reports
        print("\n".join(_top_ops(events, 10, args.top)))
        calls = binding_calls(hlo_text)
        if args.timeline:
            targets = {name: target for name, (target, _) in calls.items()}
            print("\n".join(timeline(events, targets, 10)))
        if args.calls:
            print("\n".join(per_call(events, calls, 10)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
