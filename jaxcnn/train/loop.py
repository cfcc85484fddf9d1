"""``fit(config, workdir)``: train, evaluate, checkpoint, resume.

One epoch is ``steps_per_epoch`` calls of one jitted, state-donating step that
gathers its batch on the device; the host only counts. Metric sums are fetched
every ``config.log_every_steps`` steps (progress bar, NaN check) and at the end of
the epoch. After each epoch: evaluation, a checkpoint, a line in ``metrics.jsonl``.

Resuming: ``fit`` on a workdir with checkpoints restores the latest one (state,
the running sums of an unfinished epoch, the history) and continues with the same
data order, because the batch of global step ``s`` is always row
``s % steps_per_epoch`` of ``jaxcnn.data.epoch_indices(..., seed, epoch)`` and the
step's random key is ``fold_in(rng, s)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxcnn import cpu_malloc, xla_flags, xla_scheduler
from jaxcnn import data as data_lib
from jaxcnn.files import outermost_missing_folder, write_atomic
from jaxcnn.train import sharding as sharding_lib
from jaxcnn.train.checkpoint import CheckpointMismatchError
from jaxcnn.train.config import (
    CHANGEABLE_ON_RESUME,
    config_changes,
    config_to_json,
    load_config_json,
    validate_config,
)
from jaxcnn.train.diagnosis import Diagnosis, diagnose
from jaxcnn.train.early_stopping import should_stop
from jaxcnn.train.evaluation import Evaluator
from jaxcnn.train.losses import finalize_metrics, zeros_like_metrics
from jaxcnn.train.run_log import ProgressBar, TensorBoardWriter, is_primary_process
from jaxcnn.train.session import InterruptFlag, TrainingSession
from jaxcnn.train.state import TrainState, frozen_patterns
from jaxcnn.train.steps import gathering_train_step, make_train_step


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the last good checkpoint is left as it was."""


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
      state: the final train state (on the device).
      history: one record per finished epoch (as in ``metrics.jsonl``).
      test_metrics: ``{"test_loss", "test_accuracy", ...}`` of the final state
        (empty when interrupted).
      diagnosis: the over/underfitting verdict.
      stopped: ``"completed"``, ``"early_stopping"`` or ``"interrupted"`` (Ctrl-C).
      test_seconds: wall time of the final test evaluation (its compilation and any
        test-time augmentation included; 0 when interrupted).
      workdir, checkpoint_dir, metrics_path, config_path, results_path: where things are.
      best_step, latest_step: checkpoint steps.
    """

    state: TrainState
    history: list[dict]
    test_metrics: dict[str, float]
    diagnosis: Diagnosis
    stopped: str
    test_seconds: float
    workdir: Path
    checkpoint_dir: Path
    metrics_path: Path
    config_path: Path
    results_path: Path
    best_step: int | None
    latest_step: int | None

    @property
    def interrupted(self) -> bool:
        return self.stopped == "interrupted"


def _finite(sums: dict) -> bool:
    return bool(np.isfinite(np.asarray(sums["loss_sum"])))


def _format_postfix(metrics: dict, images_per_sec: float, eta_s: float) -> dict[str, str]:
    postfix = {
        "loss": f"{metrics['train_loss']:.4f}",
        "acc": f"{metrics['train_accuracy']:.4f}",
        "img/s": f"{images_per_sec:,.0f}",
    }
    if math.isfinite(eta_s):
        postfix["eta"] = time.strftime("%H:%M:%S", time.gmtime(max(eta_s, 0.0)))
    return postfix


def _print(message: str) -> None:
    print(message, flush=True)


def fit(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    step_callback: Callable[[int], None] | None = None,
    allow_config_changes: bool = False,
) -> FitResult:
    """Train ``config`` into ``workdir``, resuming from its latest checkpoint if any.

    Args:
      config: a training config (``configs/*.py``); validated first.
      workdir: the run's directory: ``config.json``, ``metrics.jsonl``,
        ``checkpoints/``, ``results.json`` (and TensorBoard events) go there.
      step_callback: called on the host with the global step number after each
        train step is dispatched (no device sync); for instrumentation and tests.
      allow_config_changes: resume even when the config changes how the run trains
        (the seed, the learning rate, ...; by default refused): the changes are
        printed and the run's previous config is kept as
        ``config.before-step-N.json``.

    Returns:
      A :class:`FitResult`.

    Raises:
      NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).
      CheckpointMismatchError: the workdir's checkpoint belongs to another model.

    Examples:
      >>> # from configs.default import get_config
      >>> # result = fit(get_config(), "runs/digits")
      >>> # result.test_metrics["test_accuracy"]  # about 0.98
    """
    # Before the first computation: XLA reads its flags when the backend starts. Its malloc
    # choice has no estimate yet; TrainingSession makes it again once the model exists.
    xla_flags.configure_cpu()
    config = validate_config(config)
    xla_scheduler.chosen(config.dtype)  # a bad JAXCNN_XLA_SCHEDULER fails before any work
    workdir = Path(workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(
            f"workdir {str(workdir)!r} is a file; give a new directory or a run's workdir"
        )
    # The outermost folder this call creates (runs/ for a first run): removed on failure.
    created = outermost_missing_folder(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = None
    try:
        run = TrainingSession(config, workdir)  # loads data, builds the model: fails early
        # A checkpoint of another setup is refused before config.json is rewritten: the
        # message's advice (restore WORKDIR/config.json) must still find the old one.
        global_step = run.resume()
        if global_step:
            _check_resumable(workdir / "config.json", config, global_step, allow_config_changes)
    except BaseException:
        if run is not None:
            run.store.close()
        # A run that could not start leaves nothing behind (not even an empty workdir).
        if created is not None and created.is_dir():
            shutil.rmtree(created)
        raise
    if is_primary_process():
        write_atomic(workdir / "config.json", config_to_json(config) + "\n")
    try:
        with InterruptFlag() as interrupt:
            return _train(run, global_step, interrupt, step_callback)
    finally:
        run.store.close()


def _check_resumable(
    previous_config: Path, config: ml_collections.ConfigDict, step: int, allow: bool
) -> None:
    """Refuses to resume under a config that changes the training itself (the seed, the
    optimiser, the data, the augmentation, ...) unless ``allow``: the result would match
    neither run. Says so when ``num_epochs`` changed: schedules span the whole run."""
    try:
        previous = load_config_json(previous_config)
    except (OSError, ValueError):  # no readable config.json: nothing to compare with
        return
    changes = config_changes(previous, config)
    fixed = {name: pair for name, pair in changes.items() if name not in CHANGEABLE_ON_RESUME}
    listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in fixed.items())
    if fixed and not allow:
        raise CheckpointMismatchError(
            f"cannot resume {previous_config.parent}: the config changes how the run trains "
            f"({listed}). Train into a fresh --workdir, give the run's values "
            f"({previous_config}), or continue on purpose with --allow_config_changes "
            f"(fit(..., allow_config_changes=True)). Fields that may change on resume: "
            f"{', '.join(CHANGEABLE_ON_RESUME)}."
        )
    if fixed and is_primary_process():
        kept = previous_config.with_name(f"config.before-step-{step}.json")
        write_atomic(kept, previous_config.read_text())
        _print(f"resuming with a changed config ({listed}); the run's previous one: {kept}")
    if "num_epochs" in changes:
        before, after = changes["num_epochs"]
        _print(
            f"num_epochs changed from {before} to {after} since this run started: the "
            f"learning-rate schedule now spans {after} epochs and resumes on that curve"
        )


def _train(
    run: TrainingSession, global_step: int, interrupt: InterruptFlag, step_callback
) -> FitResult:
    config, data, mesh = run.config, run.data, run.mesh
    if global_step:
        epochs_done = global_step / run.steps_per_epoch
        _print(f"resuming from checkpoint step {global_step} (epoch {epochs_done:.2f})")
        if global_step >= config.num_epochs * run.steps_per_epoch:
            _print(
                f"the checkpoint has trained {epochs_done:.2f} epochs, num_epochs is "
                f"{config.num_epochs}: nothing left to train; evaluating it"
            )
    _print(f"data: {data.description}; {mesh.size} device(s): {mesh.devices.flat[0].platform}")

    augment = None
    if not data_lib.augment.is_identity(config.augment.to_dict()):
        augment = data_lib.augment.build(config.augment.to_dict(), seed=config.seed)
    train_step = make_train_step(
        run.model,
        mean=data.mean,
        std=data.std,
        augment=augment,
        label_smoothing=config.label_smoothing,
        top5=run.top5,
        batch_splits=config.batch_splits,
        frozen=frozen_patterns(config),  # the optimiser's: their gradients are not computed
    )
    # XLA:CPU's scheduler for this step only (bfloat16 without batch norm: depth-first;
    # jaxcnn/xla_scheduler.py).
    batch_norm = run.state.has_batch_norm
    platform = mesh.devices.flat[0].platform
    step_options = xla_scheduler.train_step_options(config.dtype, platform, batch_norm)
    if step_options:
        _print(f"XLA:CPU scheduler for the step: {xla_scheduler.describe(step_options)}")
    if cpu_malloc.state().startswith("reuse"):  # set by the session, where it pays (item 93)
        _print(f"glibc malloc for the step's scratch: {cpu_malloc.state()}")
    step_fn = jax.jit(
        gathering_train_step(train_step, run.steps_per_epoch, sharding_lib.batch_sharded(mesh)),
        out_shardings=(run.replicated, run.replicated),
        donate_argnums=(0, 1),
        compiler_options=step_options,
    )
    evaluator = Evaluator(
        run.model,
        data.mean,
        data.std,
        mesh=mesh,
        batch_size=config.eval_batch_size,
        top5=run.top5,
    )
    images, labels = sharding_lib.put_global((data.train.images, data.train.labels), run.replicated)
    validation = evaluator.place(data.validation.images, data.validation.labels)
    rows = sharding_lib.batch_sharded(mesh, batch_axis=1)
    tensorboard = TensorBoardWriter(
        run.workdir / "tensorboard", enabled=config.tensorboard and run.primary
    )
    progress = ProgressBar(enabled=config.progress_bar and run.primary)

    stopped = "completed"
    start_time = time.perf_counter()
    first_step_done = False
    total_steps = config.num_epochs * run.steps_per_epoch
    try:
        while global_step < total_steps:
            stop_message = should_stop(run.history, config.early_stopping)
            if stop_message:
                _print(stop_message)
                stopped = "early_stopping"
                break
            epoch = global_step // run.steps_per_epoch  # 0-based
            epoch_order = data_lib.epoch_indices(
                len(data.train), config.batch_size, config.seed, epoch
            )
            epoch_indices = sharding_lib.put_global(np.asarray(epoch_order, np.int32), rows)
            first_row = global_step - epoch * run.steps_per_epoch
            progress.start_epoch(epoch + 1, config.num_epochs, run.steps_per_epoch, first_row)
            epoch_start, timed_steps, last_logged = time.perf_counter(), 0, first_row
            for row in range(first_row, run.steps_per_epoch):
                run.state, run.totals = step_fn(
                    run.state, run.totals, images, labels, epoch_indices
                )
                global_step += 1
                if not first_step_done:
                    # Time the compilation once, and keep it out of images/s.
                    jax.block_until_ready(run.totals)
                    first_step_done = True
                    epoch_start, timed_steps = time.perf_counter(), -1
                timed_steps += 1
                if step_callback is not None:
                    step_callback(global_step)
                if interrupt.requested:
                    break
                if (row + 1) % config.log_every_steps == 0 and row + 1 < run.steps_per_epoch:
                    sums = jax.device_get(run.totals)
                    _check_finite(run, sums, global_step, epoch)
                    rate = (
                        timed_steps
                        * config.batch_size
                        / max(time.perf_counter() - epoch_start, 1e-9)
                    )
                    eta = (total_steps - global_step) * config.batch_size / max(rate, 1e-9)
                    progress.update(
                        row + 1 - last_logged,
                        _format_postfix(finalize_metrics(sums, "train_"), rate, eta),
                    )
                    last_logged = row + 1
            sums = jax.device_get(run.totals)
            _check_finite(run, sums, global_step, epoch)
            elapsed = run.elapsed_before + time.perf_counter() - start_time
            if interrupt.requested and global_step % run.steps_per_epoch:
                progress.end_epoch({})
                run.save(global_step, elapsed, metrics=None)
                _print(
                    f"interrupted at step {global_step} (epoch {epoch + 1}, "
                    f"{global_step - epoch * run.steps_per_epoch}/{run.steps_per_epoch} steps); "
                    f"checkpoint saved in {run.store.directory}. Run the same command again "
                    "to resume."
                )
                stopped = "interrupted"
                break
            progress.update(run.steps_per_epoch - last_logged)
            train_seconds = max(time.perf_counter() - epoch_start, 1e-9)
            images_per_sec = max(timed_steps, 0) * config.batch_size / train_seconds
            record = {"epoch": epoch + 1, "step": global_step}
            record.update(finalize_metrics(sums, "train_"))
            record.update(finalize_metrics(evaluator.evaluate_sums(run.state, validation), "val_"))
            record["learning_rate"] = float(run.learning_rate_at(np.int32(global_step - 1)))
            record["images_per_sec"] = images_per_sec
            record["elapsed_s"] = run.elapsed_before + time.perf_counter() - start_time
            progress.end_epoch(
                {
                    "loss": f"{record['train_loss']:.4f}",
                    "acc": f"{record['train_accuracy']:.4f}",
                    "val_acc": f"{record['val_accuracy']:.4f}",
                    "img/s": f"{images_per_sec:,.0f}",
                }
            )
            run.history.append(record)
            run.totals = sharding_lib.put_global(zeros_like_metrics(run.top5), run.replicated)
            best_metric = config.checkpoint.best_metric
            metrics = {best_metric: record[best_metric]} if best_metric in record else None
            run.save(global_step, record["elapsed_s"], metrics)
            run.log.append(record)
            tensorboard.scalars(record, global_step)
            if not config.progress_bar:
                _print(_epoch_line(record, config.num_epochs))
            if interrupt.requested:
                _print(
                    f"interrupted after epoch {epoch + 1}; checkpoint saved. Run again to resume."
                )
                stopped = "interrupted"
                break
    finally:
        tensorboard.close()
    return _finish(run, evaluator, stopped)


def _epoch_line(record: dict, num_epochs: int) -> str:
    return (
        f"epoch {record['epoch']}/{num_epochs}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f} | val loss {record['val_loss']:.4f} "
        f"acc {record['val_accuracy']:.4f} | {record['images_per_sec']:,.0f} img/s"
    )


def _check_finite(run: TrainingSession, sums: dict, global_step: int, epoch: int) -> None:
    if _finite(sums):
        return
    last_good = run.store.latest_step()
    where = (
        f"the last good checkpoint, step {last_good} in {run.store.directory}, was left intact"
        if last_good is not None
        else "no checkpoint had been written yet"
    )
    message = (
        f"training loss became {float(np.asarray(sums['loss_sum'])):g} in epoch {epoch + 1} "
        f"(by global step {global_step}); training stopped and {where}. Lower "
        f"optimizer.learning_rate (now {run.config.optimizer.learning_rate}), set "
        "optimizer.grad_clip_norm, or check the data."
    )
    run.log.append(
        {"event": "nonfinite_loss", "epoch": epoch + 1, "step": global_step, "message": message}
    )
    raise NonFiniteLossError(message)


def _finish(run: TrainingSession, evaluator: Evaluator, stopped: str) -> FitResult:
    workdir = run.workdir
    diagnosis = diagnose(run.history)
    test_metrics: dict[str, float] = {}
    test_start = time.perf_counter()
    if stopped != "interrupted":
        test = evaluator.place(run.data.test.images, run.data.test.labels)
        test_metrics = finalize_metrics(evaluator.evaluate_sums(run.state, test), "test_")
        tta = run.config.eval_tta
        if tta != "none":
            # Per-epoch validation sees each image once (the views would cost every epoch);
            # the final test uses the views, and keeps the single-view figure beside it.
            single_view = test_metrics["test_accuracy"]
            augmented = Evaluator(
                run.model,
                run.data.mean,
                run.data.std,
                mesh=run.mesh,
                batch_size=run.config.eval_batch_size,
                top5=run.top5,
                tta=tta,
                tta_fill=run.config.augment.crop_mode,
            )
            test_metrics = finalize_metrics(augmented.evaluate_sums(run.state, test), "test_")
            test_metrics["test_accuracy_without_tta"] = single_view
        run.log.rewrite(
            run.history
            + [
                {
                    "event": "diagnosis",
                    "verdict": diagnosis.verdict,
                    "evidence": diagnosis.evidence,
                },
                {"event": "test", **test_metrics, "stopped": stopped},
            ]
        )
        _print(f"diagnosis: {diagnosis}")
    test_seconds = time.perf_counter() - test_start if test_metrics else 0.0
    results = {
        "stopped": stopped,
        "epochs": len(run.history),
        "step": int(jax.device_get(run.state.step)),
        **test_metrics,
        "diagnosis": {"verdict": diagnosis.verdict, "evidence": diagnosis.evidence},
        "best_step": run.store.best_step(),
        "latest_step": run.store.latest_step(),
        "workdir": str(workdir),
        "checkpoint_dir": str(run.store.directory),
        "metrics": str(run.log.path),
        "config": str(workdir / "config.json"),
        "elapsed_s": run.history[-1]["elapsed_s"] if run.history else 0.0,
        "test_eval_s": test_seconds,
    }
    if run.primary:
        write_atomic(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    return FitResult(
        state=run.state,
        history=list(run.history),
        test_metrics=test_metrics,
        diagnosis=diagnosis,
        stopped=stopped,
        workdir=workdir,
        checkpoint_dir=run.store.directory,
        metrics_path=run.log.path,
        config_path=workdir / "config.json",
        results_path=workdir / "results.json",
        test_seconds=test_seconds,
        best_step=results["best_step"],
        latest_step=results["latest_step"],
    )
