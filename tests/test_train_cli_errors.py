"""`jaxcnn train` refuses bad input with one readable line and leaves no files behind."""

from __future__ import annotations

import importlib
import subprocess
import sys

import flax.linen as nn
import pytest

from jaxcnn import models
from jaxcnn.commands import train as train_command


def _refused_run(override, tmp_path, capsys, status=2):
    """Stderr of `jaxcnn train OVERRIDE`, which must exit ``status`` cleanly (2: a config
    value, 1: anything else) and write nothing."""
    workdir = tmp_path / "run" / "nested"
    code = train_command.main([override, f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert code == status
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # nor the parent folder it would have made
    return err


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fails the test if a run gets as far as loading its data."""

    def refuse(config):
        raise AssertionError("the data was loaded before the config was checked")

    monkeypatch.setattr("jaxcnn.train.session.load_training_data", refuse)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model=nosuchnet", "config.model = 'nosuchnet' is invalid: 'spec' or a zoo"),
        ("--config.optimizer.name=adamx", "config.optimizer.name = 'adamx' is invalid: one of"),
        ("--config.schedule.name=cosin", "config.schedule.name = 'cosin' is invalid: one of"),
        ("--config.checkpoint.best_metric=foo", "config.checkpoint.best_metric = 'foo'"),
    ],
)
def test_misspelt_names_fail_before_any_data_is_loaded(
    tmp_path, capsys, no_data_loading, override, message
):
    assert message in _refused_run(override, tmp_path, capsys)


def test_unknown_model_lists_the_zoo(tmp_path, capsys, no_data_loading):
    assert "mnist_cnn" in _refused_run("--config.model=nosuchnet", tmp_path, capsys)


def test_a_batch_larger_than_the_training_split_fails_cleanly(tmp_path, capsys):
    err = _refused_run("--config.batch_size=100000", tmp_path, capsys)
    assert "config.batch_size = 100000 is larger than the training split" in err


def test_a_model_too_deep_for_the_images_names_model_and_shape(tmp_path, capsys):
    # mnist_cnn pools 28x28 images down twice; the embedded digits are 8x8.
    err = _refused_run("--config.model=mnist_cnn", tmp_path, capsys)
    assert "config.model = 'mnist_cnn' cannot take this data's examples of shape (8, 8, 1)" in err
    assert "output size below 1" in err


class FiveOutputs(nn.Module):
    """A registered user module with the wrong number of logits for digits' 10 classes."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(5)(x.reshape((x.shape[0], -1)))


@pytest.fixture
def registered():
    names = []

    def register(name, builder):
        models.register(name, builder)
        names.append(name)

    yield register
    for name in names:
        del models._REGISTRY[name]  # leave the zoo as it was


def test_a_model_with_the_wrong_number_of_logits_is_refused(tmp_path, capsys, registered):
    registered("five_outputs", lambda **kwargs: FiveOutputs())
    err = _refused_run("--config.model=five_outputs", tmp_path, capsys)
    assert "returns (1, 5) for one example of shape (8, 8, 1)" in err
    assert "(batch, num_classes) = (1, 10)" in err


def test_a_builder_without_fits_arguments_says_which_it_must_take(tmp_path, capsys, registered):
    registered("narrow", lambda num_classes: FiveOutputs())
    err = _refused_run("--config.model=narrow", tmp_path, capsys)
    assert "its builder must accept them (add **kwargs to ignore some)" in err


def test_a_workdir_that_is_a_file_fails_cleanly(tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("not a run")
    assert train_command.main([f"--workdir={path}"]) == 1
    err = capsys.readouterr().err
    assert "is a file; give a new directory or a run's workdir" in err and "Traceback" not in err
    assert path.read_text() == "not a run"


def test_unknown_config_name_lists_the_repo_configs(capsys):
    assert train_command.main(["--config", "nonexist"]) == 2
    err = capsys.readouterr().err
    assert "--config='nonexist' is neither a file nor a config of the repo" in err
    assert "mnist_fast" in err


def test_misspelt_override_names_the_field_and_the_fix(capsys):
    status = train_command.main(["--config.num_epoch=3"])
    err = capsys.readouterr().err
    assert status == 2
    assert "unknown config field" in err
    assert 'Did you mean "num_epochs"' in err
    assert "valid fields of config: augment, batch_size" in err  # the fields it could be
    assert "\\n" not in err and "\\'" not in err  # no escaped repr leaking through


def test_a_schedule_longer_than_the_run_fails_cleanly(tmp_path, capsys):
    # configs/default.py warms up for one epoch: a one-epoch run has no steps left.
    err = _refused_run("--config.num_epochs=1", tmp_path, capsys)
    assert "config.schedule.warmup_epochs = 1 gives 44 warm-up steps but the whole run" in err
    assert "e.g. --config.schedule.warmup_epochs=0.5 for a 1-epoch run" in err


def test_a_nested_misspelt_field_lists_its_siblings(capsys):
    assert train_command.main(["--config.optimizer.lernrate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "valid fields of config.optimizer: b1, b2, eps" in err


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
    err = _refused_run("--config.num_epochs=2", tmp_path, capsys, status=1)
    assert f"{variable}='{value}'; valid: {valid}" in err


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("predict", ["--workdir", "w", "a.png", "--top-k", "0"], "--top-k: 0; valid: an int >= 1"),
        ("predict", ["--workdir", "w", "a.png", "--checkpoint", "bestest"], "'bestest'; valid"),
        ("evaluate", ["--workdir", "w", "--batch-size", "-5"], "--batch-size: -5; valid: an int"),
        ("report", ["w", "--feature-images", "-1"], "--feature-images: -1; valid: an int >= 0"),
        ("augment", ["--rows", "0"], "argument --rows: 0; valid: an int >= 1"),
    ],
)
def test_other_commands_name_the_flag_and_the_valid_values(capsys, command, argv, message):
    module = importlib.import_module(f"jaxcnn.commands.{command}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_stray_arguments_and_broken_config_files_are_usage_errors(tmp_path, capsys):
    assert train_command.main(["extra_positional", f"--workdir={tmp_path / 'run'}"]) == 2
    assert "unexpected arguments ['extra_positional']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # it did not train the default config
    no_function = tmp_path / "no_get_config.py"
    no_function.write_text("x = 1\n")
    # A fresh process: ml_collections loads every config file as one module name, so in
    # this process the file would inherit an earlier config's get_config.
    run = subprocess.run(
        [sys.executable, "-m", "jaxcnn.cli", "train", "--config", str(no_function)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "the config file does not load" in run.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    assert train_command.main(["--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_too_many_devices_is_a_config_error(tmp_path, capsys):
    assert "config.num_devices must be 0 (all) or 1.." in _refused_run(
        "--config.num_devices=99", tmp_path, capsys
    )


def test_the_piecewise_schedule_is_set_from_the_command_line(capsys):
    from jaxcnn.commands.train import _parse

    argv = ["--config.schedule.boundaries_epochs=(1, 2)", "--config.schedule.factors=(0.1, 0.1)"]
    schedule = _parse(argv).config.schedule
    assert tuple(schedule.boundaries_epochs) == (1, 2) and tuple(schedule.factors) == (0.1, 0.1)


def test_jaxcnn_without_a_command_is_bad_usage(capsys):
    from jaxcnn import cli

    assert cli.main([]) == 2 and "Run `jaxcnn <command> --help`" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
