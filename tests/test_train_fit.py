"""End-to-end tests of ``jaxcnn.train.fit`` on the embedded digits data with a tiny CNN.

One uninterrupted reference run (module fixture) is compared bit for bit with runs
interrupted by SIGINT (in process) and SIGKILL (in a child process) and resumed; it
also serves the no-retrace, workdir-layout, restore, NaN, early-stopping and
changed-model tests, which copy its workdir instead of training again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, full_optimization_env

from jaxcnn.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    base_config,
    evaluation,
    fit,
    load_config_json,
    loop,
    restore,
)
from jaxcnn.train.checkpoint import CheckpointStore

TINY_SPEC = {
    "stages": [
        {
            "type": "conv",
            "features": 8,
            "kernel": 3,
            "padding": "SAME",
            "norm": "batch",
            "pool": "max",
            "name": "conv1",
        },
    ],
    "head": [{"type": "flatten"}, {"type": "dropout", "rate": 0.1}],
}
STEPS_PER_EPOCH = 1438 // 32  # digits train split / batch size


def tiny_config(**overrides):
    """2 epochs of a 1-conv CNN with batch norm, dropout and augmentation (every rng path),
    lookahead from mid-epoch 1, a bias frozen after epoch 1 and a warm-up cosine schedule
    (every piece of state that must survive a resume). No flips: digits are not
    mirror-symmetric."""
    config = base_config()
    config.dataset = "digits"
    config.model = "spec"
    config.model_kwargs = {"spec": TINY_SPEC}
    config.batch_size = 32
    config.eval_batch_size = 120  # 359 test images: the last batch is padded and masked
    config.num_epochs = 2
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.schedule = {"name": "warmup_cosine", "warmup_epochs": 0.5}
    config.augment.rotation = 5.0
    config.lookahead.every_steps = 5
    config.lookahead.start_epochs = 0.5
    config.optimizer.freeze_after = (("classifier/bias", 1),)
    config.log_every_steps = 10
    config.progress_bar = False
    config.tensorboard = False
    config.update_from_flattened_dict(overrides)
    return config


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(tree))]


def assert_trees_equal(a, b):
    leaves_a, leaves_b = _leaves(a), _leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)


class CompiledPrograms(logging.Handler):
    """The names of the programs JAX compiles while it is attached (``jax.log_compiles``)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        compiled = re.match(r"Compiling (\S+) with", record.getMessage())
        if compiled:
            self.names.append(compiled.group(1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run; its train and eval steps are counted as they are traced, and
    the names of the programs it compiled kept in ``traces["compiled"]``."""
    workdir = tmp_path_factory.mktemp("reference")
    traces = {"train": 0, "eval": 0}
    compiled = CompiledPrograms()
    make_train, make_eval = loop.make_train_step, evaluation.make_eval_step

    def counted(kind, step_fn):
        def traced(*args):
            traces[kind] += 1
            return step_fn(*args)

        return traced

    chex.clear_trace_counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            loop,
            "make_train_step",
            lambda *a, **k: chex.assert_max_traces(counted("train", make_train(*a, **k)), n=1),
        )
        patch.setattr(
            evaluation,
            "make_eval_step",
            lambda *a, **k: chex.assert_max_traces(counted("eval", make_eval(*a, **k)), n=1),
        )
        logging.getLogger("jax").addHandler(compiled)
        try:
            with jax.log_compiles(True):
                result = fit(tiny_config(), workdir)
        finally:
            logging.getLogger("jax").removeHandler(compiled)
    return result, {**traces, "compiled": compiled.names}


def test_steps_compile_once_across_epochs_and_the_masked_last_batch(reference):
    result, traces = reference
    # 2 epochs x 44 steps, 2 validation passes and the test pass, each ending in a
    # padded batch: one trace each.
    assert traces["train"] == traces["eval"] == 1
    assert int(result.state.step) == 2 * STEPS_PER_EPOCH


def test_fit_compiles_whole_programs_not_ops_one_by_one(reference):
    # Each program XLA compiles costs ~40 ms on a 2-core CPU even when it is one jnp op:
    # fit compiles its steps, its initialiser and the logged learning rate's schedule as
    # whole programs (the schedule's ~25 ops compiled one by one took 1.2 s), plus the
    # few ops that make the PRNG key.
    _, traces = reference
    names = traces["compiled"]
    assert len(names) <= 10, names
    assert names.count("jit(step)") == 2  # train and eval
    assert names.count("jit(learning_rate_at)") == 1


def test_workdir_layout(reference):
    result, _ = reference
    workdir = result.workdir
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [line for line in lines if "event" not in line]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["step"] for r in epochs] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for key in (
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "train_top5",
        "val_top5",
        "learning_rate",
        "images_per_sec",
        "elapsed_s",
    ):
        assert all(isinstance(r[key], float) for r in epochs), key
    diagnosis, test = lines[-2], lines[-1]
    assert diagnosis["event"] == "diagnosis" and diagnosis["verdict"] == result.diagnosis.verdict
    assert test["event"] == "test" and test["test_accuracy"] == result.test_metrics["test_accuracy"]
    results = json.loads((workdir / "results.json").read_text())
    assert results["test_accuracy"] == result.test_metrics["test_accuracy"] > 0.8
    assert results["latest_step"] == 2 * STEPS_PER_EPOCH
    assert load_config_json(workdir / "config.json").model_kwargs.spec.to_dict() == TINY_SPEC
    assert CheckpointStore(workdir / "checkpoints", read_only=True).steps() == [44, 88]


def test_restore_predicts_what_fit_measured(reference):
    from jaxcnn import data

    result, _ = reference
    latest = restore(result.workdir, "latest")
    assert_trees_equal(latest.variables["params"], result.state.params)
    test = data.load("digits").test
    correct = (latest.predict(test.images).argmax(-1) == test.labels).sum()
    assert correct == round(result.test_metrics["test_accuracy"] * len(test.labels))
    best = restore(result.workdir, "best")
    accuracies = {r["step"]: r["val_accuracy"] for r in result.history}
    assert accuracies[best.step] == max(accuracies.values())


def test_ctrl_c_saves_mid_epoch_and_resumes_exactly(reference, tmp_path, caplog):
    expected, _ = reference

    def press_ctrl_c(step):
        if step == STEPS_PER_EPOCH + 16:  # mid-way through epoch 2
            signal.raise_signal(signal.SIGINT)

    with caplog.at_level(logging.WARNING, logger="absl"):
        first = fit(tiny_config(), tmp_path, step_callback=press_ctrl_c)
    # A mid-epoch checkpoint has no metrics on purpose; orbax's warning is not shown.
    assert "did not provide metrics" not in caplog.text
    assert first.stopped == "interrupted" and first.latest_step == STEPS_PER_EPOCH + 16
    resumed = fit(tiny_config(), tmp_path)
    assert resumed.stopped == "completed"
    assert_trees_equal(resumed.state.params, expected.state.params)
    assert_trees_equal(resumed.state.opt_state, expected.state.opt_state)
    # The epoch's running metrics were checkpointed too, so the log is identical.
    for got, want in zip(resumed.history, expected.history, strict=True):
        assert got["train_loss"] == want["train_loss"] and got["val_loss"] == want["val_loss"]


def test_sigkill_mid_epoch_then_restart_ends_with_identical_params(reference, tmp_path):
    expected, _ = reference
    config_path = tmp_path / "tiny.json"
    config_path.write_text(tiny_config().to_json_best_effort())
    workdir = tmp_path / "run"
    child = textwrap.dedent(
        f"""
        import os, signal
        import jax
        jax.config.update("jax_numpy_rank_promotion", "raise")
        from jaxcnn.train import fit, load_config_json

        def kill_mid_epoch(step):
            if step == {STEPS_PER_EPOCH + 20}:
                os.kill(os.getpid(), signal.SIGKILL)

        fit(load_config_json({str(config_path)!r}), {str(workdir)!r},
            step_callback=kill_mid_epoch)
        """
    )
    # The child compiles with exactly this process's XLA flags, so its floats match ours.
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", ""), JAXCNN_NO_XLA_FLAGS="1")
    completed = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    store = CheckpointStore(workdir / "checkpoints", read_only=True)
    assert store.latest_step() == STEPS_PER_EPOCH  # the end of epoch 1, nothing later
    resumed = fit(tiny_config(), workdir)
    assert_trees_equal(resumed.state.params, expected.state.params)
    assert_trees_equal(resumed.state.batch_stats, expected.state.batch_stats)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(reference, tmp_path):
    expected, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(expected.workdir, workdir)
    exploding = tiny_config(num_epochs=3, **{"optimizer.learning_rate": 1e30})
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint, step 88 .* intact"):
        fit(exploding, workdir, allow_config_changes=True)  # the rate changes on purpose
    assert json.loads((workdir / "config.before-step-88.json").read_text())["optimizer"][
        "learning_rate"
    ] == pytest.approx(3e-3)
    assert CheckpointStore(workdir / "checkpoints", read_only=True).latest_step() == 88
    assert_trees_equal(restore(workdir, "latest").variables["params"], expected.state.params)
    events = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in events] == [None, None, "nonfinite_loss"]


def test_early_stopping_stops_when_patience_runs_out(reference, tmp_path):
    expected, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(expected.workdir, workdir)
    # No epoch can improve val_accuracy by a whole 1.0: epochs 2 and 3 count against it.
    patient = tiny_config(
        num_epochs=6,
        **{
            "early_stopping.metric": "val_accuracy",
            "early_stopping.patience": 2,
            "early_stopping.min_delta": 1.0,
        },
    )
    result = fit(patient, workdir)
    assert result.stopped == "early_stopping"
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert json.loads((workdir / "results.json").read_text())["stopped"] == "early_stopping"


def test_the_xla_scheduler_changes_the_order_not_the_result(
    reference, tmp_path, capsys, monkeypatch
):
    # Each choice resumes the reference for one more epoch: the step compiled with the
    # other scheduler computes the same parameters, bit for bit, and fit says which ran.
    expected, _ = reference
    params = {}
    for choice in ("memory", "concurrency"):
        workdir = tmp_path / choice
        shutil.copytree(expected.workdir, workdir)
        monkeypatch.setenv("JAXCNN_XLA_SCHEDULER", choice)
        params[choice] = fit(tiny_config(num_epochs=3), workdir).state.params
        assert f"XLA:CPU scheduler for the step: {choice}-optimised" in capsys.readouterr().out
    assert_trees_equal(params["memory"], params["concurrency"])


def test_fit_says_when_it_keeps_the_scratch_block_mapped(reference, tmp_path, capsys, monkeypatch):
    # The settings are made once per process, before its backend starts (jaxcnn.cpu_malloc);
    # here the process's record of them is swapped, which is all fit reads.
    from jaxcnn import cpu_malloc

    expected, _ = reference
    cases = {"reuse: mallopt M_ARENA_MAX=1 (auto; scratch ~51 MB)": True,
             "system: auto, the step's scratch (~1 MB) under 48 MB": False}  # fmt: skip
    for state, shown in cases.items():
        workdir = tmp_path / state.split(":")[0]
        shutil.copytree(expected.workdir, workdir)
        monkeypatch.setattr(cpu_malloc, "_state", state)
        fit(tiny_config(num_epochs=3), workdir)
        line = f"glibc malloc for the step's scratch: {state}"
        assert (line in capsys.readouterr().out) is shown


def test_resuming_with_a_changed_model_fails_clearly(reference, tmp_path):
    expected, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(expected.workdir, workdir)
    wider = {**TINY_SPEC, "stages": [{**TINY_SPEC["stages"][0], "features": 16}]}
    with pytest.raises(
        CheckpointMismatchError,
        match=r"(?s)the model and the optimizer changed.*"
        r"state/params/conv1/conv/kernel: checkpoint float32\[3,3,1,8\], now float32\[3,3,1,16\]",
    ):
        fit(tiny_config(model_kwargs={"spec": wider}), workdir)
    # The refusal advises restoring WORKDIR/config.json: it must still be the run's own.
    assert (workdir / "config.json").read_text() == (expected.workdir / "config.json").read_text()


def test_resuming_with_another_batch_size_is_refused_before_config_json(reference, tmp_path):
    expected, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(expected.workdir, workdir)
    with pytest.raises(CheckpointMismatchError, match=r"steps per epoch, the config now gives"):
        fit(tiny_config(batch_size=64), workdir)
    assert (workdir / "config.json").read_text() == (expected.workdir / "config.json").read_text()


def test_resuming_with_another_seed_is_refused_naming_the_field(reference, tmp_path):
    # Shapes alike, steps per epoch alike: only config.json tells the runs apart.
    expected, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(expected.workdir, workdir)
    with pytest.raises(
        CheckpointMismatchError, match=r"changes how the run trains \(seed: 0 -> 1\)"
    ):
        fit(tiny_config(seed=1, eval_batch_size=60), workdir)  # eval batch: may change
    assert (workdir / "config.json").read_text() == (expected.workdir / "config.json").read_text()


def test_a_finished_run_with_fewer_epochs_says_nothing_is_left(reference, tmp_path, capsys):
    expected, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(expected.workdir, workdir)
    capsys.readouterr()
    result = fit(tiny_config(num_epochs=1), workdir)
    out = capsys.readouterr().out
    assert "num_epochs changed from 2 to 1 since this run started" in out
    assert "the checkpoint has trained 2.00 epochs, num_epochs is 1: nothing left to train" in out
    assert result.test_metrics == expected.test_metrics  # the same checkpoint, evaluated


def test_a_volume_run_trains_and_validates_on_the_test_volumes(tmp_path):
    # configs/digits3d.py's path: digits as 3-D volumes, a 3-D net, augmentation off.
    config = tiny_config(
        num_epochs=1,
        batch_size=64,
        schedule={"name": "constant"},
        lookahead={"every_steps": 0},
        augment={"rotation": 0.0},
        volume={"depth": 4},
        model_kwargs={
            "spec": {
                "spatial_dims": 3,
                "stages": [{"type": "conv", "features": 4, "padding": "SAME", "pool": "max"}],
                "head": [{"type": "global_pool"}],
            }
        },
        optimizer={"name": "adam", "learning_rate": 3e-3},
    )
    result = fit(config, tmp_path)
    # "validation (= test)": the same twisted volumes, so the same numbers.
    assert result.history[-1]["val_loss"] == pytest.approx(result.test_metrics["test_loss"])
    assert result.history[-1]["val_accuracy"] == result.test_metrics["test_accuracy"]
    from jaxcnn.report import write_report

    page = write_report(tmp_path, num_feature_images=1, max_misclassified=4).read_text()
    assert "middle depth slice of each 3-D map" in page  # the feature maps of a volume


def test_four_devices_give_the_one_device_result(tmp_path):
    config_path = tmp_path / "tiny.json"
    # Plain SGD: Adam divides by sqrt(v) and would magnify round-off in near-zero gradients.
    sgd = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.05}
    config_path.write_text(tiny_config(num_epochs=1, **sgd).to_json_best_effort())
    child = textwrap.dedent(
        f"""
        import json
        import jax, numpy as np
        from jaxcnn.train import fit, load_config_json

        assert jax.device_count() == 4, jax.devices()
        results = {{}}
        for devices in (1, 4):
            config = load_config_json({str(config_path)!r})
            config.num_devices = devices
            results[devices] = fit(config, {str(tmp_path)!r} + f"/run{{devices}}")
        one, four = (jax.tree_util.tree_leaves(results[d].state.params) for d in (1, 4))
        print(json.dumps({{
            "max_abs_diff": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                for a, b in zip(one, four)),
            "accuracies": [results[d].test_metrics["test_accuracy"] for d in (1, 4)],
            "replicated_over": len(results[4].state.params["classifier"]["kernel"]
                                   .sharding.device_set),
            "fully_replicated": results[4].state.params["classifier"]["kernel"]
                                .sharding.is_fully_replicated,
        }}))
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    completed = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["max_abs_diff"] < 1e-5, report
    assert abs(report["accuracies"][0] - report["accuracies"][1]) <= 2 / 359, report
    assert report["replicated_over"] == 4 and report["fully_replicated"], report


def test_tensorboard_events_when_tensorboardx_is_installed(tmp_path):
    pytest.importorskip("tensorboardX")
    from jaxcnn.train.run_log import TensorBoardWriter

    writer = TensorBoardWriter(tmp_path, enabled=True)
    writer.scalars({"epoch": 1, "train_loss": 0.5}, step=10)
    writer.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.rglob("*"))


def test_default_config_command_reaches_97_percent(tmp_path, capsys):
    from jaxcnn.commands import evaluate, predict
    from jaxcnn.commands import train as train_command

    workdir = tmp_path / "digits"
    assert train_command.main(["--workdir", str(workdir), "--config.progress_bar=False"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.97, out
    assert f"checkpoint: {workdir.absolute() / 'checkpoints'}" in out
    assert (workdir / "report.html").exists() == ("report: " in out)

    assert evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest"]) == 0
    out = capsys.readouterr().out
    assert f"test_accuracy: {accuracy:.4f}" in out and "confusion matrix" in out
    # No held-out split in this config: "validation" is the test split, and it says so.
    assert evaluate.main(["--workdir", str(workdir), "--split", "validation", "--json"]) == 0
    captured = capsys.readouterr()
    assert "held out no validation split" in captured.err
    assert json.loads(captured.out)["validation_accuracy"] == pytest.approx(accuracy, abs=1e-4)

    from PIL import Image

    from jaxcnn import data

    test = data.load("digits").test
    image_path = tmp_path / "seven.png"
    index = int(np.flatnonzero(test.labels == 7)[0])
    Image.fromarray(test.images[index, :, :, 0]).save(image_path)
    assert predict.main(["--workdir", str(workdir), str(image_path), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image_path}: 7 ")


@pytest.mark.realdata
def test_one_mnist_epoch_reaches_98_percent(shared_data, tmp_path):
    """README's MNIST command, one epoch, in a child that compiles as users do (60,000
    images train 20 s faster with LLVM's optimizations than under the suite's setting)."""
    command = [
        sys.executable, str(REPO_ROOT / "scripts" / "train.py"), "--config", "mnist",
        "--workdir", str(tmp_path / "mnist"), "--config.num_epochs=1",
        f"--config.data_dir={shared_data}", "--config.progress_bar=False", "--noreport",
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=full_optimization_env()
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    accuracy = float(proc.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy >= 0.98, proc.stdout
