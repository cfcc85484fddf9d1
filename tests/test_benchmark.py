"""The benchmark harness: its tiniest real run (JAX runners only) and its pure helpers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import command, common, flops, report  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One process per JAX runner, 1 step, batch 8; torch pointed at a Python without it
    (a stub whose module probe answers "torch is missing", whatever this machine has)."""
    out = tmp_path_factory.mktemp("bench")
    docs, raw = out / "benchmarks.md", out / "raw.json"
    stub = out / "python-without-torch"
    stub.write_text("#!/bin/sh\necho torch\n")
    stub.chmod(0o755)
    cmd = [
        sys.executable, str(REPO / "scripts" / "benchmark.py"),
        "--runners", "jaxcnn,flax_minimal,torch", "--nets", "mnist_cnn",
        "--dtypes", "float32", "--rounds", "1", "--steps", "1", "--warmup", "0",
        "--windows", "1", "--batch", "8", "--no-sgemm",
        "--python-for", f"torch={stub}",
        "--write-docs", str(docs), "--json-out", str(raw),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, command.load_results(raw)[0], docs.read_text()


def test_each_jax_runner_reports_throughput_compile_time_and_memory(tiny_run):
    _, results, _ = tiny_run
    by_runner = {r["runner"]: r for r in results}
    for name in ("jaxcnn", "flax_minimal"):
        r = by_runner[name]
        assert r["status"] == "ok", r["status"]
        assert r["net"] == "mnist_cnn" and r["batch"] == 8 and r["params"] == 34826
        assert len(r["images_per_sec"]) == 1 and r["images_per_sec"][0] > 0
        assert r["first_step_s"] > 0 and r["peak_rss_mb"] > 50
    assert by_runner["jaxcnn"]["flags_added"] or "xla_cpu" in by_runner["jaxcnn"]["xla_flags"]


def test_from_json_renders_the_runs_own_record_not_this_machines(tiny_run, tmp_path):
    _, results, docs = tiny_run
    saved = tmp_path / "raw.json"
    record = command.run_record(
        {**flops.machine_peak(), "cpu_model": "Recorded CPU"}, {"jax": "123 GFLOP/s"}, 60.0
    )
    record["date"] = "2001-02-03 04:05 UTC"
    saved.write_text(json.dumps({"record": record, "results": results}))
    out = tmp_path / "again.md"
    cmd = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--from-json", str(saved),
           "--write-docs", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = out.read_text()
    assert "- Machine: Recorded CPU (" in again and "jax 123 GFLOP/s" in again
    assert "on 2001-02-03 04:05 UTC in 1.0 min" in again
    table = docs.split("## Training throughput", 1)[1].split("## FLOPs", 1)[0]
    assert table == again.split("## Training throughput", 1)[1].split("## FLOPs", 1)[0]


def test_a_missing_peer_is_listed_with_its_reason_not_dropped(tiny_run):
    stdout, results, docs = tiny_run
    torch_rows = [r for r in results if r["runner"] == "torch"]
    assert len(torch_rows) == 1 and torch_rows[0]["status"].startswith("missing (")
    assert "python-without-torch lacks torch" in torch_rows[0]["status"]
    assert "install torch into" in torch_rows[0]["status"]  # not "pass --python-for"
    assert "| mnist_cnn | float32 | torch | missing (" in stdout
    assert "| mnist_cnn | float32 | torch | missing (" in docs


def test_the_report_has_the_table_machine_flops_and_keep_marker(tiny_run):
    stdout, _, docs = tiny_run
    header = "| net | dtype | runner | images/s median |"
    assert header in stdout and header in docs
    assert "| mnist_cnn | float32 | jaxcnn | " in docs
    assert "14.3 M" in docs  # training FLOPs per image of the MNIST net
    assert "nominal peak FP32" in docs and command.KEEP_MARKER in docs
    assert flops.machine_peak()["isa"] in docs  # two CPUs of one name differ there


ZEN3 = "model name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\ncpu MHz\t\t: 2445.404\n"
ZEN4 = "model name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\ncpu MHz\t\t: 2596.0\n"
XEON_AMX = "model name\t: Intel(R) Xeon(R) Processor\ncpu family\t: 6\nmodel\t\t: 167\n"
XEON_AMX += "cpu MHz\t\t: 2600.000\n"


@pytest.mark.parametrize(
    "cpuinfo, isa, per_cycle, bf16_factor, cpu_id",
    [
        (ZEN3 + "flags\t\t: fpu sse avx avx2 fma\n", "avx2 fma", 32, 1, "family 25, model 1"),
        (ZEN4 + "flags\t\t: avx2 fma avx512f avx512_bf16\n",
         "avx512_bf16 avx512f avx2 fma", 32, 2, "family 25, model 17"),  # 256-bit pipes
        (ZEN4.replace(": 25", ": 26").replace(": 17", ": 2") + "flags\t\t: avx512f fma\n",
         "avx512f fma", 64, 1, "family 26, model 2"),  # Zen 5: full 512-bit pipes
        (XEON_AMX + "flags\t\t: avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile\n",
         "amx_bf16 avx512_bf16 avx512f avx2 fma", 64, 16, "family 6, model 167"),
        ("flags : sse sse2\n", "no AVX2/FMA", 8, 1, "unknown"),
    ],
)  # fmt: skip
def test_the_machine_line_tells_two_cpus_of_one_name_apart(
    cpuinfo, isa, per_cycle, bf16_factor, cpu_id
):
    machine = flops.machine_peak(cpuinfo)
    assert (machine["isa"], machine["flops_per_cycle"], machine["cpu_id"]) == (
        isa, per_cycle, cpu_id,
    )  # fmt: skip
    if machine["mhz"] == machine["mhz"]:  # not NaN
        expected = machine["cores"] * per_cycle * machine["mhz"] / 1000
        assert machine["peak_gflops"] == pytest.approx(expected)
        assert machine["bf16_peak_gflops"] == pytest.approx(expected * bf16_factor)


def test_summary_ratios_are_paired_within_each_round():
    rows = report.summarize(
        [
            {
                "runner": "jaxcnn",
                "net": "n",
                "dtype": "f",
                "round": 0,
                "status": "ok",
                "images_per_sec": [100.0],
                "first_step_s": 1.0,
                "peak_rss_mb": 1.0,
            },
            {
                "runner": "peer",
                "net": "n",
                "dtype": "f",
                "round": 0,
                "status": "ok",
                "images_per_sec": [50.0],
                "first_step_s": 1.0,
                "peak_rss_mb": 1.0,
            },
            {
                "runner": "jaxcnn",
                "net": "n",
                "dtype": "f",
                "round": 1,
                "status": "ok",
                "images_per_sec": [10.0],
                "first_step_s": 1.0,
                "peak_rss_mb": 1.0,
            },
            {
                "runner": "peer",
                "net": "n",
                "dtype": "f",
                "round": 1,
                "status": "ok",
                "images_per_sec": [5.0],
                "first_step_s": 1.0,
                "peak_rss_mb": 1.0,
            },
            {
                "runner": "gone",
                "net": "n",
                "dtype": "f",
                "round": 0,
                "status": "failed (exit 1: boom)",
            },
        ]  # fmt: skip
    )
    peer = next(r for r in rows if r["runner"] == "peer")
    # Load changed 10x between rounds; the paired ratio is 0.5 in both.
    assert peer["vs_jaxcnn"] == peer["vs_low"] == peer["vs_high"] == 0.5
    assert (peer["low"], peer["high"]) == (5.0, 50.0)
    table = report.markdown_table(rows)
    assert "| n | f | gone | failed (exit 1: boom) |" in table


def test_regenerating_the_docs_keeps_the_hand_written_part(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(f"old table\n{command.KEEP_MARKER}\n## Experiments\nkept text\n")
    command._write_docs(path, f"new table\n\n{command.KEEP_MARKER}\n")
    text = path.read_text()
    assert "new table" in text and "old table" not in text
    assert text.count(command.KEEP_MARKER) == 1 and text.endswith("kept text\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nets", "vgg99"], "argument --nets"),
        (["--python-for", "torch"], "--python-for takes NAME=PYTHON"),
        (["--python-for", "nope=/x"], "--python-for takes NAME=PYTHON"),
        (["--python-for", "torch=/nonexistent/python"], "is not an executable Python"),
        (["--rounds", "0"], "argument --rounds: must be >= 1, got 0"),  # not the default
        (["--quick", "--windows", "0"], "argument --windows: must be >= 1, got 0"),
        (["--steps", "-1"], "argument --steps: must be >= 1, got -1"),
        (["--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
        (["--timeout", "0"], "argument --timeout: 0; valid: seconds > 0"),
        (["--json-out", "/proc/no-such-dir/x.json"], "the folder /proc/no-such-dir does not"),
    ],
)
def test_bad_arguments_are_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        command.parse_args(argv)
    assert message in capsys.readouterr().err


def test_merged_json_files_pair_each_runner_with_its_own_files_jaxcnn(tmp_path, capsys):
    def run(jaxcnn_rate, torch_rate):
        return [
            {"runner": runner, "net": "mnist_cnn", "dtype": "float32", "round": 0,
             "status": "ok", "images_per_sec": [rate], "first_step_s": 1.0,
             "peak_rss_mb": 100.0}
            for runner, rate in (("jaxcnn", jaxcnn_rate), ("torch", torch_rate))
        ]  # fmt: skip

    files = []
    for index, rates in enumerate([(1000.0, 500.0), (4000.0, 1000.0)]):
        files.append(tmp_path / f"run{index}.json")
        files[-1].write_text(json.dumps({"record": None, "results": run(*rates)}))
    argv = [f"--from-json={path}" for path in files]
    assert command.main([*argv, "--no-docs"]) == 0
    table = capsys.readouterr().out
    # Within each file: 0.5 and 0.25 (median 0.375); across files it would be 0.125 or 1.0.
    assert "| mnist_cnn | float32 | jaxcnn | 2,500 | 1,000-4,000 | 1.00 (1.00-1.00) |" in table
    assert "| 0.38 (0.25-0.50) |" in table


def test_runner_arguments_are_validated():
    assert common.parse_args("x", ["--net", "mnist_cnn"]).batch == 128
    with pytest.raises(SystemExit):
        common.parse_args("x", ["--net", "mnist_cnn", "--batch", "0"])


def test_time_to_accuracy_reports_the_seed_and_a_miss_plainly():
    from benchmarks import time_to_accuracy

    result = {
        "dataset": "mnist", "model": "mnist_cnn", "batch_size": 128, "epochs": 3,
        "config": "configs/mnist_fast.py", "seed": 1, "target": 0.99,
        "time_to_target_s": None, "epoch_reached": None, "final_test_accuracy": 0.9896,
        "fit_wall_s": 24.1, "decode_s": 0.2,
    }  # fmt: skip
    text = time_to_accuracy.format_result(result)
    assert "seed 1" in text and "did NOT reach 99.0 % in 3 epochs" in text
    assert "98.96 %" in text
    reached = dict(result, time_to_target_s=21.0, epoch_reached=3, reached_by="epoch 3 validation")
    assert "reached 99.0 % at the epoch 3 validation in 21.0 s" in time_to_accuracy.format_result(
        reached
    )


def test_time_to_accuracy_counts_the_first_epoch_else_the_final_augmented_test():
    from benchmarks.time_to_accuracy import when_reached

    history = [
        {"epoch": 1, "val_accuracy": 0.90, "elapsed_s": 10.0},
        {"epoch": 2, "val_accuracy": 0.95, "elapsed_s": 20.0},
        {"epoch": 3, "val_accuracy": 0.96, "elapsed_s": 30.0},
    ]
    assert when_reached(history, 0.97, 2.0, 0.95, "flip") == (20.0, 2, "epoch 2 validation")
    # No epoch reached 0.965, the final test with the views did: the loop plus the test.
    assert when_reached(history, 0.97, 2.0, 0.965, "flip") == (
        32.0, 3, "final test (test-time augmentation flip)")  # fmt: skip
    assert when_reached(history, 0.96, 2.0, 0.965, "flip") == (None, None, None)
    assert when_reached([], 0.99, 1.0, 0.9, "none") == (None, None, None)


def test_jaxcnn_runner_variants_rewrite_the_zoo_spec():
    from benchmarks import jaxcnn_bench
    from jaxcnn import models

    def conv_items(model):
        return [item for item in model.spec["stages"] if item["type"] == "conv"]

    model = models.get("cifar_cnn")
    same = jaxcnn_bench._switched(model, jaxcnn_bench.parse_variant(""))
    assert same.spec == model.spec
    off = jaxcnn_bench._switched(model, jaxcnn_bench.parse_variant("s2d=off"))
    assert [item.get("space_to_depth") for item in conv_items(off)] == [False, False, None]
    resnet = jaxcnn_bench._switched(models.get("resnet20"), {
        **jaxcnn_bench.VARIANT_DEFAULTS, "materialize": "off"})  # fmt: skip
    residual = [item for item in resnet.spec["stages"] if item["type"] == "residual"]
    assert residual and all(item["materialize"] is False for item in residual)


@pytest.mark.parametrize(
    "variant", ["s2d=maybe", "materialize=yes", "splits=0", "splits=x", "crop=maybe"]
)
def test_jaxcnn_runner_rejects_bad_variant_values(variant, monkeypatch):
    from benchmarks import jaxcnn_bench
    from jaxcnn import xla_flags

    configured = []  # a bad value must stop the runner before it sets flags or malloc
    monkeypatch.setattr(xla_flags, "configure_cpu", lambda *a, **k: configured.append(1))
    with pytest.raises(ValueError, match=variant.split("=")[0]):
        jaxcnn_bench.main(["--net", "mnist_cnn", "--variant", variant])
    assert configured == []


def test_jaxcnn_runner_docstring_examples():
    import doctest

    from benchmarks import jaxcnn_bench

    result = doctest.testmod(jaxcnn_bench, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


def test_the_layout_experiment_compares_the_same_net_in_both_layouts():
    # benchmarks/experiments/layout_nchw.py: NCHW must be the NHWC net with its data and
    # weights laid out differently, or its timing would compare different nets.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.experiments import layout_nchw

    nhwc = layout_nchw._init("mnist_cnn", "nhwc", jax.random.key(0))
    nchw = [(kernel.transpose(3, 2, 0, 1), bias) for kernel, bias in nhwc[:-2]]
    (w1, b1), last = nhwc[-2], nhwc[-1]
    size, channels = 5, 64  # 28 -> 26 -> 13 -> 11 -> 5, flattened (h, w, c) vs (c, h, w)
    rows = np.arange(size * size * channels).reshape(size, size, channels)
    nchw += [(w1[rows.transpose(2, 0, 1).reshape(-1)], b1), last]
    images = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    logits = layout_nchw._apply(nhwc, images, "mnist_cnn", "nhwc")
    same = layout_nchw._apply(nchw, images.transpose(0, 3, 1, 2), "mnist_cnn", "nchw")
    np.testing.assert_allclose(logits, same, rtol=1e-4, atol=1e-4)
    assert logits.shape == (2, 10) and not jnp.allclose(logits, 0)


def test_bf16_kernels_compare_one_convolution_in_three_precisions():
    # benchmarks/experiments/bf16_kernels.py: the three precisions must be the same
    # convolution, differing only in operand and result types, or its timings mean nothing.
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.experiments import bf16_kernels

    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    reference = bf16_kernels.conv_in("f32")(x, w)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    for precision, result in (("bf16", jnp.bfloat16), ("bf16>f32", jnp.float32)):
        y = bf16_kernels.conv_in(precision)(xb, wb)
        assert y.dtype == result and y.shape == (2, 5, 5, 4)
        np.testing.assert_allclose(np.asarray(y, np.float32), reference, rtol=0.05, atol=0.1)
    forward_ms, both_ms = bf16_kernels.time_conv(1, 4, 2, 2, "bf16>f32")
    assert forward_ms > 0 and both_ms > 0


def test_step_profile_timeline_splits_the_wall_time_between_binding_calls_and_xla():
    # benchmarks/experiments/step_profile.py --timeline (docs/perf_notes.md, item 64).
    import doctest

    from benchmarks.experiments import step_profile

    assert doctest.testmod(step_profile).failed == 0
    events = [
        {"ph": "X", "name": "ThunkExecutor::Execute", "ts": 0, "dur": 10_000},  # skipped
        {"ph": "X", "name": "ffi_call.1", "ts": 0, "dur": 4_000},
        {"ph": "X", "name": "ffi_call.2", "ts": 4_000, "dur": 2_000},
        {"ph": "X", "name": "select_fusion.3", "ts": 3_000, "dur": 5_000},
        {"ph": "i", "name": "marker", "ts": 9_000},  # not a complete event
    ]
    targets = {"ffi_call.1": "jaxcnn_conv", "ffi_call.2": "jaxcnn_conv"}
    lines = step_profile.timeline(events, targets, steps=2)
    assert lines[0] == "wall 4.0 ms/step: F- 1.5, FX 1.5, -X 1.0, -- 0.0"
    assert lines[1:3] == [
        "XLA ops while no binding call ran (ms/step):",
        "      1.00  select_fusion",
    ]
    assert lines[3:] == ["binding calls (ms/step):", "      3.00  jaxcnn_conv"]


def test_same_process_ab_restores_what_each_variant_set():
    # benchmarks/experiments/same_process_ab.py (docs/perf_notes.md, items 75-76): the
    # second variant must be traced without the first one's settings.
    import doctest

    from benchmarks.experiments import same_process_ab

    assert doctest.testmod(same_process_ab).failed == 0
    bad = same_process_ab.settings("JAXCNN_ONEDNN_FORWARD=direct")  # no env: / attr:
    with pytest.raises(ValueError, match="expected env:VAR=VALUE"), bad:
        pass
