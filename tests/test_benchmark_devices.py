"""The harness's device handling: --device, GPU rows in the report, GPU peaks.

No GPU is needed: a GPU request on a CPU-only machine must come back as an "unsupported"
row with the reason, and the report's GPU columns are checked on recorded-style results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import command, common, flops, harness, report  # noqa: E402


@pytest.mark.parametrize(
    "requested, gpu_name, expected",
    [
        ("auto", None, "cpu"),
        ("auto", "NVIDIA H200", "gpu"),
        ("cpu", "NVIDIA H200", "cpu"),
        ("gpu", "NVIDIA H200", "gpu"),
        ("cpu", None, "cpu"),
    ],
)
def test_pick_device_follows_the_request_and_what_the_framework_sees(requested, gpu_name, expected):
    assert common.pick_device(requested, gpu_name, "torch") == expected


def test_pick_device_refuses_a_gpu_that_is_not_there_and_a_bad_name():
    with pytest.raises(common.DeviceUnavailable, match="--device gpu, but torch sees no GPU"):
        common.pick_device("gpu", None, "torch")
    with pytest.raises(ValueError, match="--device must be one of"):
        common.pick_device("tpu", None, "torch")
    with pytest.raises(SystemExit):
        common.parse_args("x", ["--net", "mnist_cnn", "--device", "tpu"])


def test_a_gpu_request_without_a_gpu_is_an_unsupported_row_with_its_reason():
    settings = {"batch": 8, "steps": 1, "warmup": 0, "windows": 1, "seed": 0, "device": "gpu"}
    python = sys.executable
    result = harness.run_one(
        harness.RUNNERS["flax_minimal"], python, "mnist_cnn", "float32", settings, 120
    )
    try:
        import jax

        if jax.default_backend() != "cpu":  # a GPU machine: the request is honoured
            assert result["status"] == "ok" and result["device"] == "gpu"
            return
    except ImportError:
        pass
    assert result["status"] == "unsupported (--device gpu, but jax sees no GPU here)"


def _result(runner, device, rate, memory=None, round_index=0):
    return {
        "runner": runner, "net": "cifar_cnn", "dtype": "bfloat16", "round": round_index,
        "status": "ok", "images_per_sec": [rate], "first_step_s": 2.0, "peak_rss_mb": 900.0,
        "device": device, "device_name": "NVIDIA H200" if device == "gpu" else "cpu",
        "device_peak_mb": memory,
    }  # fmt: skip


def test_gpu_rows_show_their_device_memory_and_a_share_of_the_gpu_peak():
    results = [_result("jaxcnn", "gpu", 100_000.0, 1234.0), _result("torch", "gpu", 50_000.0)]
    rows = report.summarize(results, {"cifar_cnn": {"train_flops": 10**9}})
    gpu = command.gpu_used(results)
    assert gpu["name"] == "NVIDIA H200" and gpu["bf16_peak_gflops"] == 989_400.0
    table = report.markdown_table(rows, 100.0, 200.0, gpu)
    header, _, jax_row, torch_row = table.splitlines()
    assert header.endswith("| device | device peak MB |")
    # 100,000 img/s x 1 GFLOP = 100 TFLOP/s: 10 % of the bfloat16 peak, not the CPU's.
    assert "| 100,000.0 (10 %) |" in jax_row and jax_row.endswith("| gpu | 1,234 |")
    assert torch_row.endswith("| gpu |  |") and "| 0.50 (0.50-0.50) |" in torch_row


def test_cpu_only_tables_keep_their_columns():
    rows = report.summarize([_result("jaxcnn", "cpu", 1000.0)])
    assert "device" not in report.markdown_table(rows, 100.0).splitlines()[0]
    older = {k: v for k, v in _result("jaxcnn", "cpu", 1000.0).items() if "device" not in k}
    assert report.summarize([older])[0]["device"] == "cpu"  # results from before --device


def test_the_report_names_the_gpu_and_where_its_peak_comes_from():
    results = [_result("jaxcnn", "gpu", 100_000.0, 1234.0)]
    args = argparse.Namespace(batch=128, rounds=1, warmup=5, windows=3, steps=3)
    machine = {**flops.machine_peak(), "platform": "Linux"}
    record = command.run_record(machine, {"jax": "51234 GFLOP/s on NVIDIA H200 (8192^3, TF32)"}, 60)
    text = command.render(args, results, report.summarize(results), record, {})
    assert '- GPU: NVIDIA H200 (rows with device "gpu"); nominal peak: H200 datasheet' in text
    assert "above the nominal peak" not in text  # a GPU's SGEMM is not the CPU's


@pytest.mark.parametrize(
    "name, tf32",
    [("NVIDIA H100 80GB HBM3", 494.7), ("NVIDIA H100 PCIe", 378.0), ("NVIDIA H200", 494.7),
     ("NVIDIA H200 NVL", 417.5), ("NVIDIA A100-SXM4-80GB", 156.0)],
)  # fmt: skip
def test_gpu_peaks_pick_the_variant_before_the_family(name, tf32):
    assert flops.gpu_peak(name)["peak_gflops"] == pytest.approx(tf32 * 1000)
    assert flops.gpu_peak("Some Future GPU") is None


def test_runs_of_several_calls_render_as_one_report_with_their_own_settings(tmp_path):
    machine = {**flops.machine_peak(), "cpu_model": "Recorded CPU"}
    settings = {"batch": 256, "rounds": 1, "warmup": 2, "windows": 2, "steps": 50}
    paths = []
    for net, sgemm in (("mnist_cnn", {"jax": "51234 GFLOP/s on NVIDIA H200"}), ("cifar_cnn", {})):
        record = command.run_record(machine, sgemm, 30.0, settings)
        rows = [{**_result("jaxcnn", "gpu", 9000.0, 10.0), "net": net, "dtype": "float32"}]
        paths.append(tmp_path / f"{net}.json")
        paths[-1].write_text(command.json.dumps({"record": record, "results": rows}))
    out = tmp_path / "merged.md"
    argv = ["--from-json", str(paths[0]), "--from-json", str(paths[1]), "--write-docs", str(out)]
    assert command.main(argv) == 0
    text = out.read_text()
    assert "| mnist_cnn | float32 | jaxcnn | 9,000 |" in text
    assert "| cifar_cnn | float32 | jaxcnn | 9,000 |" in text
    assert "in 1.0 min" in text and "jax 51234 GFLOP/s on NVIDIA H200" in text
    assert "batch 256," in text and "2 timed windows of 50 steps" in text


@pytest.mark.parametrize("content", [None, "{}", "not json"])
def test_from_json_rejects_a_missing_or_foreign_file_by_name(content, tmp_path, capsys):
    path = tmp_path / "runs.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit):
        command.parse_args(["--from-json", str(path)])
    assert f"--from-json {path}: " in capsys.readouterr().err
