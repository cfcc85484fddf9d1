"""Summaries and Markdown tables of benchmark results (pure Python, no JAX).

Per (net, dtype, runner): the median over rounds of each run's median window throughput,
the same per CPU-second of the process (all its threads: robust to other jobs, but
inflated for frameworks whose idle threads spin),
its min-max over rounds, the median time to first step, the largest peak RSS, and the ratio
to jaxcnn: the median over rounds of (runner / jaxcnn) within the same round, which cancels
load that changes between rounds. Runners that were missing, unsupported or failed keep
their row with the reason.

Examples:
    >>> rows = summarize([
    ...     {"runner": "jaxcnn", "net": "n", "dtype": "float32", "round": 0, "status": "ok",
    ...      "images_per_sec": [100.0], "first_step_s": 1.0, "peak_rss_mb": 10.0},
    ...     {"runner": "torch", "net": "n", "dtype": "float32", "round": 0, "status": "ok",
    ...      "images_per_sec": [50.0], "first_step_s": 0.1, "peak_rss_mb": 20.0}])
    >>> [(r["runner"], r["median"], r["vs_jaxcnn"]) for r in rows]
    [('jaxcnn', 100.0, 1.0), ('torch', 50.0, 0.5)]
"""

from __future__ import annotations

import statistics
from collections import defaultdict


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(results: list[dict], flops: dict | None = None) -> list[dict]:
    """Folds per-process results into one row per (net, dtype, runner).

    Args:
      results: dicts from ``harness.run_all``.
      flops: optional ``{net: {"train_flops": int, ...}}`` to add achieved GFLOP/s.

    Returns:
      Rows with ``net, dtype, runner, status, rounds, median, low, high, vs_jaxcnn,
      vs_low, vs_high, first_step_s, peak_rss_mb, device, device_name, device_peak_mb,
      gflops``; the order of first appearance. ``device`` is ``"cpu"`` or ``"gpu"`` (results
      from before runners named it ran on the CPU); ``device_peak_mb`` is the largest
      device memory a run reported, None where none did.
    """
    per_case: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        per_case[(r["net"], r["dtype"], r["runner"])].append(r)
    jax_by_round = {
        (r["net"], r["dtype"], r.get("round")): _median(r["images_per_sec"])
        for r in results
        if r["runner"] == "jaxcnn" and r.get("status") == "ok"
    }
    rows = []
    for (net, dtype, runner), runs in per_case.items():
        ok = [r for r in runs if r.get("status") == "ok"]
        row = {"net": net, "dtype": dtype, "runner": runner, "rounds": len(ok)}
        if not ok:
            row["status"] = runs[0].get("status", "failed")
            rows.append(row)
            continue
        per_round = [_median(r["images_per_sec"]) for r in ok]
        ratios = [
            _median(r["images_per_sec"]) / jax_by_round[(net, dtype, r.get("round"))]
            for r in ok
            if (net, dtype, r.get("round")) in jax_by_round
        ]
        row.update(
            status="ok" if len(ok) == len(runs) else f"ok in {len(ok)}/{len(runs)} rounds",
            median=_median(per_round),
            low=min(per_round),
            high=max(per_round),
            vs_jaxcnn=_median(ratios) if ratios else None,
            vs_low=min(ratios) if ratios else None,
            vs_high=max(ratios) if ratios else None,
            first_step_s=_median([r["first_step_s"] for r in ok]),
            peak_rss_mb=max(r.get("peak_rss_mb", float("nan")) for r in ok),
            load=_median([r.get("load_before", float("nan")) for r in ok]),
            per_cpu_s=_median([_median(r.get("images_per_cpu_sec") or []) for r in ok]),
            impl=ok[0].get("impl", ""),
            device="/".join(sorted({r.get("device", "cpu") for r in ok})),
            device_name=ok[0].get("device_name", "cpu"),
            device_peak_mb=max(
                (r["device_peak_mb"] for r in ok if r.get("device_peak_mb") is not None),
                default=None,
            ),
        )
        if flops and net in flops:
            row["gflops"] = row["median"] * flops[net]["train_flops"] / 1e9
        rows.append(row)
    return rows


def markdown_table(
    rows: list[dict],
    peak_gflops: float | None = None,
    bf16_peak_gflops: float | None = None,
    gpu_peak: dict | None = None,
) -> str:
    """Renders summary rows as a Markdown table.

    When any row ran on a GPU, two columns follow: the device and its peak memory (the
    framework's own count; "peak RSS" stays the host process's).

    Args:
      rows: from ``summarize``.
      peak_gflops: the CPU's nominal FP32 peak, for the "% peak" column of CPU rows.
      bf16_peak_gflops: the bfloat16 peak used for bfloat16 rows (default: the FP32 one).
      gpu_peak: ``flops.gpu_peak`` of the GPU, for the "% peak" of GPU rows (None: no
        "% peak" for them).

    Returns:
      The table text (header, separator, one line per row).

    Examples:
      >>> print(markdown_table([{"net": "n", "dtype": "f", "runner": "r", "status":
      ...     "missing (no torch)", "rounds": 0}]).splitlines()[-1])
      | n | f | r | missing (no torch) | | | | | | | |
    """
    on_gpu = any(r.get("device", "cpu") != "cpu" for r in rows if "median" in r)
    head = (
        "| net | dtype | runner | images/s median | min-max over rounds | x jaxcnn (min-max) "
        "| first step s | peak RSS MB | GFLOP/s (% peak) | img per CPU-s | load |"
        + (" device | device peak MB |" if on_gpu else "")
        + "\n|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
        + ("---|--:|" if on_gpu else "")
    )
    lines = [head]
    for r in rows:
        if "median" not in r:
            lines.append(f"| {r['net']} | {r['dtype']} | {r['runner']} | {r['status']} "
                         "| | | | | | | |" + (" | |" if on_gpu else ""))  # fmt: skip
            continue
        ratio = (
            f"{r['vs_jaxcnn']:.2f} ({r['vs_low']:.2f}-{r['vs_high']:.2f})"
            if r.get("vs_jaxcnn") is not None
            else "n/a"
        )
        gflops = ""
        if r.get("gflops") is not None:
            fp32, bf16 = peak_gflops, bf16_peak_gflops
            if r.get("device", "cpu") != "cpu":
                fp32 = (gpu_peak or {}).get("peak_gflops")
                bf16 = (gpu_peak or {}).get("bf16_peak_gflops")
            peak = bf16 if r["dtype"] == "bfloat16" and bf16 else fp32
            share = f" ({100 * r['gflops'] / peak:.0f} %)" if peak else ""
            gflops = f"{r['gflops']:,.1f}{share}"
        note = "" if r["status"] == "ok" else f" [{r['status']}]"
        device = ""
        if on_gpu:
            memory = r.get("device_peak_mb")
            device = f" {r['device']} | {'' if memory is None else f'{memory:,.0f}'} |"
        lines.append(
            f"| {r['net']} | {r['dtype']} | {r['runner']}{note} | {r['median']:,.0f} "
            f"| {r['low']:,.0f}-{r['high']:,.0f} | {ratio} | {r['first_step_s']:.2f} "
            f"| {r['peak_rss_mb']:,.0f} | {gflops} | {r.get('per_cpu_s', float('nan')):,.0f} "
            f"| {r['load']:.2f} |{device}"
        )
    return "\n".join(lines)
