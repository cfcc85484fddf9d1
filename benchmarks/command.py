"""``scripts/benchmark.py``: jaxcnn against the peers, interleaved, with a Markdown report.

    python scripts/benchmark.py --quick             # < 3 min: 2 nets, 4 runners, 1 round
    python scripts/benchmark.py                     # full: writes docs/benchmarks.md
    python scripts/benchmark.py --nets mnist_cnn --runners jaxcnn,torch --rounds 5
    python scripts/benchmark.py --python-for torch=/opt/venv/bin/python --python-for keras=...
    python scripts/benchmark.py --time-to-accuracy  # MNIST to 99 % with jaxcnn.train
    python scripts/benchmark.py --device gpu --steps 200  # every runner on its GPU
    python scripts/benchmark.py --from-json a.json --from-json b.json  # one table of both

Peers (torch, keras with TensorFlow and JAX backends) are the ``bench`` extra; a runner
whose modules no interpreter has is listed as "missing (why)", never dropped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common, flops, harness, report
from jaxcnn.files import write_atomic

DOCS = harness.REPO / "docs" / "benchmarks.md"
KEEP_MARKER = "<!-- Everything below this line is kept when the harness regenerates the file. -->"
QUICK = {
    "nets": ["mnist_cnn", "cifar_cnn"],
    "dtypes": ["float32"],
    "runners": ["jaxcnn", "flax_minimal", "torch", "keras_tf"],
    "rounds": 1,
    "steps": 10,
    "warmup": 2,
    "windows": 2,
}
FULL_STEPS = {"mnist_cnn": 40, "cifar_cnn": 30, "resnet20": 6, "fast_cifar": 3}


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{bad or text!r} not in {sorted(choices)}")
        return items

    return parse


def _python_for(text: str) -> tuple[str, str]:
    key, sep, path = text.partition("=")
    groups = set(harness.RUNNERS) | {r.group for r in harness.RUNNERS.values()}
    if not sep or key not in groups or not path:
        raise argparse.ArgumentTypeError(
            f"--python-for takes NAME=PYTHON with NAME in {sorted(groups)}, got {text!r}"
        )
    if shutil.which(path) is None:  # else every run of the peer would fail the same way
        raise argparse.ArgumentTypeError(f"{text!r}: {path} is not an executable Python")
    return key, path


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g}; valid: seconds > 0")
    return value


def parse_args(argv):
    positive = common.positive_int
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--quick", action="store_true", help="few steps, 1 round, 2 nets, 4 runners")
    p.add_argument("--nets", type=_csv(common.NETS), help="default: all (quick: 2)")
    p.add_argument("--dtypes", type=_csv(common.DTYPES), help="default: float32,bfloat16")
    p.add_argument("--runners", type=_csv(harness.RUNNERS), help="default: all")
    p.add_argument("--rounds", type=positive, help="A B C rounds (default 3, quick 1)")
    p.add_argument("--batch", type=positive, default=128)
    p.add_argument("--steps", type=positive, help="steps per timed window (default: per net)")
    p.add_argument(
        "--warmup", type=common.non_negative_int, help="untimed steps after the first (default 5)"
    )
    p.add_argument("--windows", type=positive, help="timed windows per process (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", choices=common.DEVICES, default="auto",
        help="every runner's --device: auto (a framework's GPU if it sees one), cpu, gpu",
    )  # fmt: skip
    p.add_argument("--timeout", type=_positive_seconds, default=900, help="seconds per process")
    p.add_argument("--python-for", type=_python_for, action="append", default=[])
    p.add_argument(
        "--json-out", type=Path,
        help="also write every raw result here, with the run's machine, SGEMM and date",
    )  # fmt: skip
    p.add_argument("--write-docs", type=Path, help=f"Markdown report (full run default {DOCS})")
    p.add_argument("--no-docs", action="store_true", help="print only, even for a full run")
    p.add_argument("--no-sgemm", action="store_true", help="skip the SGEMM ceiling")
    p.add_argument("--time-to-accuracy", action="store_true", help="MNIST to 99 %% instead")
    p.add_argument(
        "--from-json",
        type=Path,
        action="append",
        help="re-render from a --json-out file instead of running (its recorded machine, "
        "SGEMM, settings and date; nothing is re-measured); repeat it to merge the runs "
        "of several calls (e.g. one per net on a lent GPU) into one table",
    )
    args = p.parse_args(argv)
    preset = QUICK if args.quick else {}
    args.nets = args.nets or preset.get("nets") or list(common.NETS)
    args.dtypes = args.dtypes or preset.get("dtypes") or list(common.DTYPES)
    args.runners = args.runners or preset.get("runners") or list(harness.RUNNERS)
    # Given values win over the presets (the types above refuse 0 and negatives).
    args.rounds = args.rounds if args.rounds is not None else preset.get("rounds", 3)
    args.steps = args.steps if args.steps is not None else preset.get("steps") or FULL_STEPS
    args.warmup = args.warmup if args.warmup is not None else preset.get("warmup", 5)
    args.windows = args.windows if args.windows is not None else preset.get("windows", 3)
    if args.json_out is not None and not args.json_out.parent.is_dir():
        p.error(f"--json-out {args.json_out}: the folder {args.json_out.parent} does not exist")
    for path in args.from_json or []:
        try:
            load_results(path)
        except OSError as error:
            p.error(f"--from-json {path}: {error.strerror or error}")
        except (ValueError, KeyError, TypeError) as error:
            p.error(f"--from-json {path}: not a --json-out file of this harness ({error!r})")
    if args.write_docs is None and not args.quick and not args.no_docs:
        args.write_docs = DOCS
    return args


def _run_json(python: str, *cmd: str, timeout: float = 600) -> dict:
    out = subprocess.run(
        [python, *cmd], capture_output=True, text=True, cwd=harness.REPO, timeout=timeout
    )
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-300:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sgemm(interpreters: harness.Interpreters, device: str = "auto") -> dict[str, str]:
    """Each framework's SGEMM on ``device``; a GPU figure says which GPU and n."""
    found = {}
    for framework, runner in (("jax", "flax_minimal"), ("torch", "torch")):
        python, why = interpreters.resolve(harness.RUNNERS[runner])
        try:
            if python is None:
                raise RuntimeError(why)
            out = _run_json(
                python, "benchmarks/sgemm.py", "--framework", framework, "--device", device
            )
            found[framework] = f"{out['gflops']:.0f} GFLOP/s"
            if out.get("device") == "gpu":
                found[framework] += f" on {out['device_name']} ({out['n']}^3, TF32)"
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as error:
            found[framework] = f"not measured ({error})"
    return found


def gpu_used(results: list[dict]) -> dict | None:
    """The GPU the runs used, as ``flops.gpu_peak`` gives it (name only for an unknown one)."""
    names = [r.get("device_name") for r in results if r.get("device") == "gpu"]
    if not names:
        return None
    return flops.gpu_peak(names[0]) or {"name": names[0]}


def _versions(results: list[dict]) -> dict[str, str]:
    versions = {}
    for r in results:
        versions.update(r.get("versions", {}))
    return dict(sorted(versions.items()))


def run_record(machine: dict, sgemm: dict, elapsed: float, settings: dict | None = None) -> dict:
    """What a run's report says beside its results: machine, SGEMM, date, time, command.

    ``--json-out`` saves it with the results, so ``--from-json`` renders the run's own
    record (and its ``settings``: batch, rounds, warm-up, windows, steps), not the
    machine, clock or defaults of the re-rendering.
    """
    return {
        "machine": {**machine, "platform": platform.platform()},
        "sgemm": sgemm,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": elapsed,
        "command": "python scripts/benchmark.py " + " ".join(sys.argv[1:]),
        **({"settings": settings} if settings else {}),
    }


def merge_records(records: list[dict]) -> dict:
    """One record for runs made by several calls: the first one's machine and date, the
    first SGEMM measured, the times added and every command listed.

    Examples:
      >>> a = {"machine": {}, "sgemm": {}, "date": "d1", "elapsed_s": 60.0, "command": "x"}
      >>> b = {**a, "sgemm": {"jax": "9 GFLOP/s"}, "date": "d2", "command": "y"}
      >>> merged = merge_records([a, b])
      >>> merged["sgemm"], merged["elapsed_s"], merged["command"], merged["date"]
      ({'jax': '9 GFLOP/s'}, 120.0, 'x; y', 'd1')
    """
    merged = dict(records[0])
    merged["sgemm"] = next((r["sgemm"] for r in records if r["sgemm"]), {})
    merged["elapsed_s"] = sum(r["elapsed_s"] for r in records)
    merged["command"] = "; ".join(r["command"].strip() for r in records)
    return merged


def load_results(path: Path) -> tuple[list[dict], dict | None]:
    """A ``--json-out`` file: ``(results, record)``; ``record`` is None for the older
    format (a bare list of results, before the record was saved with them)."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return data, None
    return data["results"], data["record"]


def render(args, results, rows, record, flop_counts) -> str:
    """The Markdown report: what was run, on what, the table, and how to read it."""
    machine, sgemm, date = record["machine"], record["sgemm"], record["date"]
    elapsed, command = record["elapsed_s"], record["command"]
    versions = ", ".join(f"{k} {v}" for k, v in _versions(results).items())
    flop_lines = "\n".join(
        f"| {net} | {c['forward_macs'] / 1e6:.2f} M | {c['train_flops'] / 1e6:.1f} M |"
        for net, c in flop_counts.items()
    )
    sgemm_text = ", ".join(f"{k} {v}" for k, v in sgemm.items()) or "not measured"
    sgemm_rates = [  # the CPU's figures only: a GPU's is far above the CPU's peak
        float(v.split()[0]) for v in sgemm.values() if v[:1].isdigit() and " on " not in v
    ]
    if sgemm_rates and max(sgemm_rates) > machine["peak_gflops"]:
        sgemm_text += (
            " — above the nominal peak: the clock the (virtual) CPU reports is below the one"
            ' it runs at, so read "% peak" as an upper bound and compare with SGEMM too'
        )
    gpu = gpu_used(results)
    gpu_line = ""
    if gpu:
        peaks = gpu.get("how", 'not in benchmarks/flops.py\'s table, so no "% peak"')
        gpu_line = f'\n- GPU: {gpu["name"]} (rows with device "gpu"); nominal peak: {peaks}.'
    setup = record.get("settings") or vars(args)
    steps = setup["steps"] if isinstance(setup["steps"], int) else ", ".join(
        f"{setup['steps'][n]} ({n})" for n in args.nets if n in setup["steps"]
    )  # fmt: skip
    return f"""# Benchmarks: training throughput against the peers

Generated by `{command.strip()}` on {date} in {elapsed / 60:.1f} min. Numbers
are the ones the harness printed; rerun the command to regenerate this part of the file.

- Machine: {machine["cpu_model"]} ({machine["cpu_id"]}; {machine["isa"]}),
  {machine["cores"]} cores, {machine["platform"]};
  nominal peak FP32 {machine["peak_gflops"]:.0f} / bfloat16 {machine.get("bf16_peak_gflops", 0):.0f}
  GFLOP/s ({machine["how"]}); "% peak" for a bfloat16 row is of the bfloat16 peak.{gpu_line}
- SGEMM ceiling (2048^3 float32 matmul unless said, best of 5): {sgemm_text}.
- Libraries: {versions or "n/a"}.
- Setup: batch {setup["batch"]}, random in-memory data, Adam 1e-3, {setup["rounds"]} interleaved
  rounds (A B C A B C, each run a fresh process), per process one first step (compile),
  {setup["warmup"]} warm-up steps (Keras: one untimed epoch of a window's length, as `fit`
  compiles in its first epoch), {setup["windows"]} timed windows of {steps} steps.

## Training throughput

"images/s median" is the median over rounds of each process's median window;
"x jaxcnn" is the median over rounds of runner / jaxcnn measured in the same round
(below 1: jaxcnn is faster). "load" is the 1-minute load average before the run: on a
shared machine only the ratios are evidence. "img per CPU-s" divides by the process's
CPU time (all threads) instead of wall time: steadier under load, but it penalises
runtimes whose idle threads spin (TensorFlow, OpenMP in PyTorch). `jaxcnn` is the zoo
model (its `ConvBlock`s fuse bias, ReLU and max-pool through `jaxcnn.fast_ops`) trained by
`jaxcnn.train`'s own step (`python benchmarks/jaxcnn_bench.py --variant ...` switches one
piece at a time for the experiments in `docs/perf_notes.md`). "GFLOP/s" = images/s x
training FLOPs per image (below), counted as direct convolution: Winograd (oneDNN's on
AVX-512 CPUs, jaxcnn's own on AVX2-only ones) multiplies less, so a row can pass 100 %.

{report.markdown_table(rows, machine["peak_gflops"], machine.get("bf16_peak_gflops"), gpu)}

## FLOPs per training image

Forward multiply-accumulates counted from the reference Flax net's jaxpr (conv and dense
only); training = 2 FLOPs x (3 x forward MACs - first layer's MACs), since the input needs
no gradient (see `benchmarks/flops.py`).

| net | forward MACs | training FLOPs |
|---|--:|--:|
{flop_lines}

{KEEP_MARKER}
"""


def _write_docs(path: Path, text: str) -> None:
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP_MARKER in old:
            kept = old.split(KEEP_MARKER, 1)[1].lstrip("\n")
    write_atomic(path, text + ("\n" + kept if kept else ""))  # never a half-written report


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    interpreters = harness.Interpreters(dict(args.python_for))
    if args.time_to_accuracy:
        from benchmarks import time_to_accuracy

        return time_to_accuracy.main_from_harness(interpreters)
    start = time.perf_counter()
    machine = flops.machine_peak()
    print(f"benchmark: {machine['cpu_model']}, {machine['cores']} cores, load "
          f"{harness.load_average():.2f}; runners and interpreters:")  # fmt: skip
    settings = {"batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                "windows": args.windows, "seed": args.seed, "device": args.device}  # fmt: skip
    record = None
    if args.from_json:
        loaded = [load_results(path) for path in args.from_json]
        # Each file's rounds are its own: "x jaxcnn" pairs runs of one file's round only.
        results = [
            {**r, "round": f"{index}.{r.get('round')}"} if len(loaded) > 1 else r
            for index, (found, _) in enumerate(loaded)
            for r in found
        ]
        records = [rec for _, rec in loaded if rec is not None]
        record = merge_records(records) if records else None
        args.nets = list(dict.fromkeys(r["net"] for r in results))
    else:
        results = harness.run_all(
            args.runners, args.nets, args.dtypes, settings, args.rounds, interpreters,
            args.timeout,
        )  # fmt: skip
        if args.json_out:  # the measurements first: nothing after them can lose them
            write_atomic(args.json_out, json.dumps({"record": None, "results": results}))
    jax_python, _ = interpreters.resolve(harness.RUNNERS["flax_minimal"])
    flop_counts = {}
    if jax_python:
        try:
            counted = _run_json(jax_python, "benchmarks/flops.py")
            flop_counts = {net: counted[net] for net in args.nets}
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
            print(f"FLOPs not counted ({str(error).splitlines()[-1][:200]})", file=sys.stderr)
    if record is None and args.from_json:  # the older format: nothing recorded to reuse
        files = ", ".join(map(str, args.from_json))
        record = run_record(machine, {"SGEMM": f"not recorded in {files}"}, 0.0)
        record["machine"]["platform"] += f" (this machine: {files} kept no record)"
    if record is None:
        sgemm = {} if args.no_sgemm or args.quick else _sgemm(interpreters, args.device)
        kept = {key: getattr(args, key) for key in ("batch", "rounds", "warmup", "windows")}
        record = run_record(machine, sgemm, time.perf_counter() - start,
                            {**kept, "steps": args.steps})  # fmt: skip
    rows = report.summarize(results, flop_counts)
    print()
    peaks = record["machine"]["peak_gflops"], record["machine"].get("bf16_peak_gflops")
    print(report.markdown_table(rows, *peaks, gpu_used(results)))
    if args.json_out:
        write_atomic(args.json_out, json.dumps({"record": record, "results": results}, indent=1))
    if args.write_docs:
        text = render(args, results, rows, record, flop_counts)
        _write_docs(args.write_docs, text)
        print(f"\nwrote {args.write_docs}")
    if not any(r.get("status") == "ok" for r in results):
        print("no runner measured anything (see the table's reasons)", file=sys.stderr)
        return 1
    return 0
