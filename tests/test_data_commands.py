"""The ``jaxcnn data`` and ``jaxcnn augment`` commands."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from jaxcnn.commands import augment as augment_command
from jaxcnn.commands import data as data_command


def test_data_command_prints_counts_and_classes(capsys):
    assert data_command.main(["digits", "--validation-split", "0.1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\ntrain\s+1,294 examples", out) and re.search(r"\ntest\s+359 ex", out)
    assert re.search(r"\nvalidation\s+144 examples", out) and "0:0 1:1" in out


@pytest.mark.realdata
def test_data_command_shows_verified_checksums(capsys, shared_data):
    assert data_command.main(["mnist", "--data-dir", str(shared_data), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "checksums verified" in out
    assert "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in out


def test_data_command_reports_errors(capsys, tmp_path):
    assert data_command.main(["cifar10", "--data-dir", str(tmp_path), "--no-download"]) == 1
    assert "cifar-10-binary.tar.gz not found and download=False" in capsys.readouterr().err
    # A bad option is bad usage (2); a dataset that is not there is a failure (1).
    assert data_command.main(["digits", "--option", "image_size=3"]) == 2
    assert data_command.main(["digits", "--validation-split", "1.5"]) == 2


def test_augment_command_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    argv = [
        "--dataset",
        "digits",
        "--out",
        str(out),
        "--rotation",
        "30",
        "--rows",
        "3",
        "--columns",
        "4",
        "--crop-padding",
        "1",
    ]
    assert augment_command.main(argv) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert "3 images x (4 augmented copies + original)" in capsys.readouterr().out
    assert augment_command.main(["--out", str(out), "--rotation", "400"]) == 2
    capsys.readouterr()
    # More rows than the 10 classes: the rows asked for, not one per class only.
    assert augment_command.main(["--out", str(out), "--rows", "12", "--columns", "1"]) == 0
    assert "12 images x (1 augmented copies + original)" in capsys.readouterr().out


def test_augment_command_mode_choices_are_the_modules_modes():
    from jaxcnn.data import augment

    actions = {a.dest: a for a in augment_command.build_parser()._actions}
    assert tuple(actions["crop_mode"].choices) == augment.CROP_MODES
    assert tuple(actions["flip_mode"].choices) == augment.FLIP_MODES
