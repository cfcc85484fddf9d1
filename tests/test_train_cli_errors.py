"""`jaxcnn train` refuses bad input with one readable line and leaves no files behind."""

from __future__ import annotations

import pytest

from jaxcnn.commands import train as train_command


def _refused_run(override, tmp_path, capsys):
    """Stderr of `jaxcnn train OVERRIDE`, which must exit 1 cleanly and write nothing."""
    workdir = tmp_path / "run"
    status = train_command.main([override, f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err
    assert not workdir.exists()
    return err


def test_unknown_model_fails_cleanly_and_leaves_no_workdir(tmp_path, capsys):
    err = _refused_run("--config.model=nosuchnet", tmp_path, capsys)
    assert "config.model = 'nosuchnet' is not a zoo model" in err
    assert "mnist_cnn" in err  # the valid names are listed


def test_misspelt_override_names_the_field_and_the_fix(capsys):
    status = train_command.main(["--config.num_epoch=3"])
    err = capsys.readouterr().err
    assert status == 2
    assert "unknown config field" in err
    assert 'Did you mean "num_epochs"' in err
    assert "\\n" not in err and "\\'" not in err  # no escaped repr leaking through


def test_a_schedule_longer_than_the_run_fails_cleanly(tmp_path, capsys):
    # configs/default.py warms up for one epoch: a one-epoch run has no steps left.
    err = _refused_run("--config.num_epochs=1", tmp_path, capsys)
    assert "config.schedule.warmup_epochs must give fewer warm-up steps" in err


@pytest.mark.parametrize(
    "variable, value, valid",
    [
        ("JAXCNN_MALLOC", "jemalloc", "auto, reuse, system"),
        ("JAXCNN_XLA_SCHEDULER", "bfs", "auto, memory, concurrency"),
    ],
)
def test_an_invalid_environment_switch_fails_cleanly(
    tmp_path, capsys, monkeypatch, variable, value, valid
):
    monkeypatch.setenv(variable, value)
    err = _refused_run("--config.num_epochs=2", tmp_path, capsys)
    assert f"{variable}='{value}'; valid: {valid}" in err
