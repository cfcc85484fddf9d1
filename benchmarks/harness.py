"""Runs the benchmark runners interleaved, each in its own process, and collects results.

The order is A B C A B C: every round runs every (net, dtype) case once per runner, so
load that drifts during a run hits all runners alike; the per-round ratio to jaxcnn is the
evidence to trust on a shared machine. Peak memory is the child's ``ru_maxrss`` from
``os.wait4``; the 1-minute load average is recorded before each run.

Each runner may need a different interpreter (the peers usually live in their own virtual
environment): ``--python-for torch=/path/to/python``, or auto-detection over this
interpreter, ``$JAXCNN_BENCH_PYTHON`` (``os.pathsep``-separated) and ``../venv-bench``
next to the repository. A runner no interpreter can serve is reported "missing (why)".
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import common

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Runner:
    """One competitor: a runner script, its variant, and the modules it needs."""

    name: str
    script: str
    variant: str
    modules: tuple[str, ...]
    group: str  # the --python-for key that also selects this runner's interpreter


RUNNERS: dict[str, Runner] = {
    r.name: r
    for r in (
        Runner("jaxcnn", "jaxcnn_bench.py", "", ("jax", "flax", "optax"), "jax"),
        Runner("flax_minimal", "flax_minimal.py", "", ("jax", "flax", "optax"), "jax"),
        Runner("torch", "torch_peer.py", "eager", ("torch",), "torch"),
        Runner("torch_compile", "torch_peer.py", "compile", ("torch",), "torch"),
        Runner("keras_tf", "keras_peer.py", "tensorflow", ("keras", "tensorflow"), "keras"),
        Runner("keras_jax", "keras_peer.py", "jax", ("keras", "jax"), "keras"),
    )
}


@dataclass
class Interpreters:
    """Finds, per runner, a Python that can import what the runner needs."""

    explicit: dict[str, str] = field(default_factory=dict)
    _cache: dict[tuple[str, tuple[str, ...]], str | None] = field(default_factory=dict)

    def candidates(self) -> list[str]:
        found = [sys.executable]
        found += [p for p in os.environ.get("JAXCNN_BENCH_PYTHON", "").split(os.pathsep) if p]
        sibling = REPO.parent / "venv-bench" / "bin" / "python"
        if sibling.exists():
            found.append(str(sibling))
        return list(dict.fromkeys(found))

    def _can_import(self, python: str, modules: tuple[str, ...]) -> str | None:
        """None if ``python`` finds all ``modules``, else the reason it does not."""
        key = (python, modules)
        if key not in self._cache:
            probe = (
                "import importlib.util, sys\n"
                f"missing = [m for m in {list(modules)!r} if importlib.util.find_spec(m) is None]\n"
                "print(','.join(missing))"
            )
            try:
                out = subprocess.run(
                    [python, "-c", probe], capture_output=True, text=True, timeout=60
                )
                missing = out.stdout.strip()
                self._cache[key] = (
                    f"{python} lacks {missing}" if missing or out.returncode else None
                )
                if out.returncode:
                    self._cache[key] = f"{python} failed: {out.stderr.strip()[-200:]}"
            except (OSError, subprocess.TimeoutExpired) as error:
                self._cache[key] = f"{python}: {error}"
        return self._cache[key]

    def resolve(self, runner: Runner) -> tuple[str | None, str]:
        """Returns ``(python, "")`` or ``(None, "missing (reason)")``."""
        chosen = self.explicit.get(runner.name) or self.explicit.get(runner.group)
        pythons = [chosen] if chosen else self.candidates()
        reasons = []
        for python in pythons:
            problem = self._can_import(python, runner.modules)
            if problem is None:
                return python, ""
            reasons.append(problem)
        if chosen:  # the user named this interpreter: it needs the modules, not a flag
            hint = f"install {', '.join(runner.modules)} into {chosen}"
        else:
            hint = f"pip install -e '.[bench]' or pass --python-for {runner.group}=PYTHON"
        return None, f"missing ({'; '.join(reasons)}; {hint})"


def load_average() -> float:
    """The 1-minute load average (NaN where /proc/loadavg is absent)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def run_one(
    runner: Runner, python: str, net: str, dtype: str, settings: dict, timeout: float
) -> dict:
    """Runs one runner process for one case and returns its parsed result.

    Args:
      runner: what to run.
      python: the interpreter.
      net, dtype: the case.
      settings: ``batch``, ``steps``, ``warmup``, ``windows``, ``seed`` and optionally
        ``device`` (``auto``, ``cpu`` or ``gpu``, passed on as ``--device``).
      timeout: seconds before the process is killed (reported as failed).

    Returns:
      The runner's JSON result, with ``status`` "ok" or "failed (...)", plus ``load_before``,
      ``wall_s`` and ``peak_rss_mb`` (from the kernel's accounting of the child).
    """
    cmd = [python, str(REPO / "benchmarks" / runner.script), "--net", net, "--dtype", dtype]
    for key in ("batch", "steps", "warmup", "windows", "seed", "device"):
        if key in settings:
            cmd += [f"--{key}", str(settings[key])]
    if runner.variant:
        cmd += ["--variant", runner.variant]
    base = {"runner": runner.name, "net": net, "dtype": dtype, "load_before": load_average()}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {**base, "status": f"failed (timeout after {timeout:.0f} s)"}
    # communicate() has reaped the child; its own ru_maxrss is in its JSON line.
    wall = time.perf_counter() - start
    lines = [ln for ln in stdout.splitlines() if ln.startswith(common.RESULT_PREFIX)]
    if proc.returncode or not lines:
        tail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {**base, "status": f"failed (exit {proc.returncode}: {tail})", "wall_s": wall}
    result = json.loads(lines[-1][len(common.RESULT_PREFIX) :])
    return {**result, **base, "wall_s": wall}


def run_all(
    runners: list[str],
    nets: list[str],
    dtypes: list[str],
    settings: dict,
    rounds: int,
    interpreters: Interpreters,
    timeout: float,
    log=print,
) -> list[dict]:
    """Runs every runner on every case, interleaved, for ``rounds`` rounds.

    Args:
      runners: runner names (keys of ``RUNNERS``), in the order they alternate.
      nets, dtypes: the cases.
      settings: batch, steps (an int, or a dict net -> int), warmup, windows, seed and
        optionally device.
      rounds: how many times the whole A B C sequence repeats.
      interpreters: resolves each runner's Python.
      timeout: per-process limit in seconds.
      log: progress printer.

    Returns:
      One dict per process run (missing runners once per case, with their reason).
    """
    results = []
    resolved = {name: interpreters.resolve(RUNNERS[name]) for name in runners}
    for name, (python, why) in resolved.items():
        log(f"  {name:14s} {python or why}")
    for round_index in range(rounds):
        for net in nets:
            for dtype in dtypes:
                for name in runners:
                    python, why = resolved[name]
                    row = {"runner": name, "net": net, "dtype": dtype, "round": round_index}
                    if python is None:
                        if round_index == 0:
                            results.append({**row, "status": why})
                        continue
                    case = dict(settings)
                    if isinstance(case["steps"], dict):
                        case["steps"] = case["steps"][net]
                    result = run_one(RUNNERS[name], python, net, dtype, case, timeout)
                    result["round"] = round_index
                    results.append(result)
                    rates = result.get("images_per_sec") or []
                    median = statistics.median(rates) if rates else float("nan")
                    log(
                        f"  round {round_index + 1}/{rounds} {net:10s} {dtype:8s} {name:14s} "
                        f"{median:8.0f} img/s  load {result['load_before']:.2f}  "
                        f"{result['status'] if result['status'] != 'ok' else ''}"
                    )
    return results
