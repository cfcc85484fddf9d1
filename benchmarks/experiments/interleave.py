"""Compare variants of one runner, interleaved A B C A B C, as ratios to the first variant.

Each variant is ``LABEL=VARIANT[@ENV=VALUE...]``: a ``--variant`` string for the runner and
optional environment settings (e.g. ``XLA_FLAGS``). On a shared machine only the per-round
ratios to the first variant are evidence; the median ratio and its range are printed.

    python benchmarks/experiments/interleave.py --net mnist_cnn --rounds 4 \\
        'base=flags=none' 'ynn=flags=default' \\
        'onednn=flags=none@XLA_FLAGS=--xla_cpu_use_onednn=true'
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import harness  # noqa: E402


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    label, sep, rest = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"variant must be LABEL=VARIANT[@ENV=VALUE...]: {text}")
    variant, *envs = rest.split("@")
    if ":" in variant:  # RUNNER:VARIANT picks another runner for this variant
        runner, variant = variant.split(":", 1)
        label = f"{label}|{runner}"
    env = dict(e.split("=", 1) for e in envs)
    return label, variant, env


def _ratio(values: list[float]) -> str:
    return f"x{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", type=parse_variant)
    p.add_argument("--runner", default="jaxcnn", choices=sorted(harness.RUNNERS))
    p.add_argument("--python", default=sys.executable, help="interpreter for the runner")
    p.add_argument("--net", default="mnist_cnn")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)
    base = harness.RUNNERS[args.runner]
    python = args.python
    settings = {"batch": args.batch, "steps": args.steps, "warmup": 3,
                "windows": args.windows, "seed": 0}  # fmt: skip
    rates: dict[str, list[float]] = {label: [] for label, _, _ in args.variants}
    firsts: dict[str, list[float]] = {label: [] for label, _, _ in args.variants}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in args.variants}
    for r in range(args.rounds):
        for label, variant, env in args.variants:
            base = (
                harness.RUNNERS[label.split("|")[1]]
                if "|" in label
                else harness.RUNNERS[args.runner]
            )
            runner = harness.Runner(base.name, base.script, variant, base.modules, base.group)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                res = harness.run_one(runner, python, args.net, args.dtype,
                                      settings, timeout=900)  # fmt: skip
            finally:
                for k, v in saved.items():
                    os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            ok = res.get("status") == "ok"
            # The best window is the least disturbed by other processes on a shared machine.
            best = max(res["images_per_sec"]) if ok else float("nan")
            rates[label].append(best)
            cpu_rate = statistics.median(res.get("images_per_cpu_sec") or [float("nan")])
            cpu[label].append(cpu_rate)
            first = res.get("first_step_s", float("nan"))
            firsts[label].append(first)
            status = "" if ok else res["status"]
            print(
                f"round {r + 1} {label:16s} {best:8.0f} img/s (best window)  first {first:5.1f}s"
                f"  {cpu_rate:6.0f} img/cpu-s  load {res['load_before']:.2f}  {status}",
                flush=True,
            )
    first_label = args.variants[0][0]
    print(f"\n{args.net} {args.dtype} batch {args.batch}: best-window img/s (median over")
    print(f"rounds), ratio to {first_label} within each round (median, min-max)")
    for label, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates[first_label], strict=True)]
        cpu_ratios = [v / b for v, b in zip(cpu[label], cpu[first_label], strict=True)]
        print(
            f"  {label:16s} {statistics.median(values):8.0f}  {_ratio(ratios)}  first step "
            f"{statistics.median(firsts[label]):.1f}s; per CPU-second {_ratio(cpu_ratios)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
