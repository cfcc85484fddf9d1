"""``jaxcnn shapes``: the table, its parsing and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jaxcnn.commands import shapes as command

REPO = Path(__file__).resolve().parents[1]

EXPECTED_TABLE = """\
#  layer                    output    rf size  jump  start
   input (2-D, 3 channels)  32x32x3   1x1      1x1   0x0
1  conv:32,k=3,s=2          15x15x32  3x3      2x2   1x1
     floor((32 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 15
2  pool:2                   7x7x32    5x5      4x4   2x2
     floor((15 + 2*0 - 2) / 2) + 1 = 7
3  conv:64,k=3,p=same       7x7x64    13x13    4x4   2x2
     SAME: total pad max((ceil(7/1) - 1)*1 + 3 - 7, 0) = 2, split (1, 1)
     floor((7 + 2*1 - 1*(3-1) - 1) / 1) + 1 = 7
"""


def _run(capsys, *argv):
    code = command.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_with_shapes_receptive_field_and_formulas(capsys):
    code, out, err = _run(
        capsys, "--input", "32x32x3", "conv:32,k=3,s=2", "pool:2", "conv:64,k=3,p=same"
    )
    assert (code, err) == (0, "")
    assert out == EXPECTED_TABLE


def test_teaching_case_one_filter(capsys):
    code, out, _ = _run(capsys, "--input", "32x32x3", "conv:1,3", "--no-formula")
    assert code == 0
    assert out.splitlines()[-1].split()[:3] == ["1", "conv:1,3", "30x30x1"]
    assert "floor" not in out


def test_per_axis_values_padding_pairs_and_1d_3d(capsys):
    code, out, _ = _run(capsys, "--input", "32x31x3", "conv:8,k=3x1,s=2,p=0:1x1")
    assert code == 0
    # axis 0: floor((32 + 0 + 1 - 2 - 1) / 2) + 1 = 16; axis 1: floor((31 + 2 - 0 - 1) / 2) + 1 = 17
    assert "16x17x8" in out and "axis 0: floor((32 + 0 + 1" in out and "axis 1:" in out
    code, out, _ = _run(capsys, "--input", "100x1", "conv:8,k=5,d=2,p=causal")
    assert code == 0 and "100x8" in out and "CAUSAL: 2*(5-1) = 8 zeros before" in out
    assert out.splitlines()[2].split()[-3:] == ["9", "1", "-4"]  # field ends on the pixel
    code, out, _ = _run(capsys, "--input", "16x32x32x1", "c:4,3,p=1", "maxpool:2", "avgpool:2,1")
    assert code == 0 and "16x32x32x4" in out and "8x16x16x4" in out and "7x15x15x4" in out


def test_transposed_conv_has_no_receptive_field(capsys):
    code, out, _ = _run(capsys, "--input", "8x8x16", "convt:8,k=3,s=2", "conv:4,k=3")
    assert code == 0
    rows = out.splitlines()
    assert rows[2].split()[:3] == ["1", "convt:8,k=3,s=2", "16x16x8"]
    assert rows[2].split()[-3:] == ["-", "-", "-"]
    assert "(8-1)*2 + 1 + 2 + 1 - 1*(3-1) = 16" in out
    assert "14x14x4" in out


def test_pool_stride_defaults_to_the_window_and_can_be_set(capsys):
    _, out, _ = _run(capsys, "--input", "15x15x1", "pool:2", "--no-formula")
    assert "7x7x1" in out
    _, out, _ = _run(capsys, "--input", "15x15x1", "pool:2,s=1", "--no-formula")
    assert "14x14x1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--input", "4x4x1", "conv:8,k=5,d=2"],
            "layer 1 (conv:8,k=5,d=2) on input 4x4: axis 0: output size below 1: kernel 5 with "
            "dilation 2 spans 9 pixels but the padded input has 4",
        ),
        (["--input", "32", "conv:8"], "--input='32' needs spatial sizes and channels"),
        (["--input", "32xax3", "conv:8"], "--input='32xax3' is not an integer or NxM"),
        (["--input", "8x8x1", "conv:k=3"], "give the output channels first, e.g. conv:32,k=3"),
        (["--input", "8x8x1", "conv:8,k=abc"], "layer 'conv:8,k=abc': kernel='abc' is not an"),
        (["--input", "8x8x1", "blob:3"], "unknown type 'blob'; valid: conv, c, pool"),
        (["--input", "8x8x1", "conv:8,q=3"], "unknown key in 'q=3'; valid: f=, k=, s=, p=, d="),
        (["--input", "8x8x1", "conv:8,3,4"], "too many values without a name ('4')"),
        (["--input", "8x8x1", "conv:8,p=full"], "p='full' is not a padding"),
        (["--input", "8x8x1", "pool"], "give the window, e.g. pool:2"),
        (["--input", "8x8x1", "pool:2,p=circular"], "'CIRCULAR' is not a padding mode of pool"),
        (["--input", "8x8x1", "conv:8,p=causal"], "'CAUSAL' is only implemented for 1-D"),
        (["--input", "8x8x1", "conv:8,s=0"], "stride must be an integer >= 1, got 0"),
        (["--input", "8x8x1", "conv:8,p=-1"], "padding must be an integer >= 0, got -1"),
        (["--input", "8x8x1", "conv:8,k=3x3x3"], "kernel=(3, 3, 3) has 3 values but the input"),
        (["--input", "8x8x1", "conv:0"], "layer 'conv:0': output channels 0; valid: one int >= 1"),
        (["--input", "8x8x1", "conv:3x5"], "output channels (3, 5); valid: one int >= 1"),
        (["--input", "8x8x0", "conv:8"], "--input='8x8x0': channels=0; valid: an int >= 1"),
        (["--input", "8x8x1", "conv:8,k=3,k=5"], "layer 'conv:8,k=3,k=5': kernel given twice"),
        (["--input", "8x8x1", "pool:2,3,s=2"], "stride given twice (in 's=2')"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("jaxcnn shapes: error: ") and err.count("\n") == 1
    assert message in err


def test_missing_arguments_exit_2_with_usage(capsys):
    code, _, err = _run(capsys, "--input", "8x8x1")
    assert code == 2 and "usage: jaxcnn shapes" in err and "LAYER" in err


def test_help_has_examples(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    assert "examples:" in out and "jaxcnn shapes --input 32x32x3 conv:32,3 pool:2" in out


def test_script_and_cli_entry_point_run_in_a_fresh_process():
    argv = ["--input", "32x32x3", "conv:32,k=3,s=2", "pool:2", "conv:64,k=3,p=same"]
    script = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "shapes.py"), *argv],
        capture_output=True,
        text=True,
    )
    assert script.returncode == 0, script.stderr
    assert script.stdout == EXPECTED_TABLE
    cli = subprocess.run(
        [sys.executable, "-m", "jaxcnn.cli", "shapes", *argv], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == EXPECTED_TABLE


def test_error_in_a_fresh_process_has_no_traceback():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "shapes.py"), "--input", "4x4x1", "conv:8,k=5"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "jaxcnn shapes: error: layer 1 (conv:8,k=5) on input 4x4: axis 0: output size below 1: "
        "kernel 5 spans 5 pixels but the padded input has 4 (size 4 + padding 0 + 0)"
    )
