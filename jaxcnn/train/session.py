"""One training session's setup and checkpoint bookkeeping (used by ``fit``).

A :class:`TrainingSession` holds what ``fit`` builds from a config (mesh, data,
model, state, schedule, checkpoint store, metrics log) and knows how to save and
resume the run: the checkpoint holds the train state, the running metric sums of
an unfinished epoch and, as JSON, the history and what ``restore`` needs.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import cpu_malloc
from jaxcnn.train import sharding as sharding_lib
from jaxcnn.train.checkpoint import CheckpointMismatchError, CheckpointStore, tree_shapes
from jaxcnn.train.components import (
    TrainingData,
    build_model,
    load_training_data,
    model_description,
)
from jaxcnn.train.config import ConfigError
from jaxcnn.train.early_stopping import metric_mode
from jaxcnn.train.losses import zeros_like_metrics
from jaxcnn.train.optim import freeze_after_pairs, lr_multiplier_pairs, unmatched_patterns
from jaxcnn.train.run_log import MetricsLog, is_primary_process
from jaxcnn.train.state import TrainState, build_tx, create_train_state, frozen_patterns
from jaxcnn.train.steps import preprocess
from jaxcnn.train.whitening import whitened_params


class InterruptFlag:
    """Turns the first Ctrl-C into a request to save and stop; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: saving a checkpoint after this step, then stopping "
            "(press Ctrl-C again to abort without saving)",
            flush=True,
        )

    def __enter__(self):
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class TrainingSession:
    """Everything one ``fit`` call builds from its config, plus saving and resuming."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.data: TrainingData = load_training_data(config)
        # glibc's malloc for this step's scratch, before make_mesh starts the backend.
        model = build_model(config, self.data.num_classes, self.data.example_shape[-1])
        cpu_malloc.configure(  # traces the model only where auto has that choice to make
            lambda: cpu_malloc.scratch_estimate(model, self.data.example_shape, config.batch_size)
        )
        try:
            self.mesh = sharding_lib.make_mesh(config.num_devices)
            sharding_lib.check_batch_size(config.batch_size, self.mesh)
        except ValueError as error:  # too many devices asked, or a batch they cannot split
            raise ConfigError(f"config.{error}") from None
        self.steps_per_epoch = len(self.data.train) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"config.batch_size = {config.batch_size} is larger than the training split "
                f"({len(self.data.train)} examples); use at most {len(self.data.train)}"
            )
        self.top5 = self.data.num_classes > 5
        self.model = model
        try:  # the schedule's lengths are only known now (steps per epoch): check them here
            _, self.schedule = build_tx(config, self.steps_per_epoch)
        except ValueError as error:
            raise ConfigError(f"config.{error}") from None
        self.learning_rate_at = _jitted(self.schedule)
        try:
            self.state = create_train_state(
                self.model,
                config,
                jax.random.PRNGKey(config.seed),
                (1, *self.data.example_shape),
                steps_per_epoch=self.steps_per_epoch,
                mesh=self.mesh,
            )
        except ValueError as error:  # the layers' own checks: the model does not fit the data
            raise ConfigError(
                f"config.model = {config.model!r} cannot take this data's examples of shape "
                f"{self.data.example_shape}: {error}"
            ) from error
        self._check_logits()
        self.replicated = sharding_lib.replicated(self.mesh)
        if config.whitening.layer:
            self.state = self._whitened(self.state)
        for field, patterns in (
            ("frozen", frozen_patterns(config)),
            ("lr_multipliers", [pattern for pattern, _ in lr_multiplier_pairs(config.optimizer)]),
            ("freeze_after", [pattern for pattern, _ in freeze_after_pairs(config.optimizer)]),
        ):
            unmatched = unmatched_patterns(self.state.params, patterns)
            if unmatched:
                raise ConfigError(
                    f"config.optimizer.{field}: {unmatched} match no parameter of this model; "
                    f"its layers: {sorted(self.state.params)}"
                )
        self.totals = sharding_lib.put_global(zeros_like_metrics(self.top5), self.replicated)
        self.history: list[dict] = []
        self.elapsed_before = 0.0
        self.store = CheckpointStore(
            workdir / "checkpoints",
            keep=config.checkpoint.keep,
            best_metric=config.checkpoint.best_metric,
            best_mode=metric_mode(config.checkpoint.best_metric or "val_accuracy"),
        )
        self.primary = is_primary_process()
        self.log = MetricsLog(workdir / "metrics.jsonl", writer=self.primary)

    def _check_logits(self) -> None:
        """The model must give (batch, num_classes) logits: with fewer, the labels past
        them would count as zero loss; with more, top-5 would read classes that are not."""
        variables = {"params": self.state.params, "batch_stats": self.state.batch_stats}
        example = jax.ShapeDtypeStruct((1, *self.data.example_shape), jnp.float32)
        logits = jax.eval_shape(
            lambda v, x: self.model.apply(v, x, train=False), variables, example
        )
        expected = (1, self.data.num_classes)
        if getattr(logits, "shape", None) != expected:
            got = getattr(logits, "shape", type(logits).__name__)
            raise ConfigError(
                f"config.model = {self.config.model!r} returns {got} for one example of "
                f"shape {self.data.example_shape}; training needs logits (batch, "
                f"num_classes) = {expected}: the data has {self.data.num_classes} classes"
            )

    def _whitened(self, state: TrainState) -> TrainState:
        """``state`` with the whitening layer set from a seeded sample of training images."""
        settings = self.config.whitening
        images = self.data.train.images
        count = min(int(settings.num_images), len(images))
        rows = np.sort(np.random.default_rng(self.config.seed).permutation(len(images))[:count])
        sample = np.asarray(preprocess(images[rows], self.data.mean, self.data.std))
        params = whitened_params(
            jax.device_get(state.params), settings.layer, sample, float(settings.eps)
        )
        return state.with_params(sharding_lib.put_global(params, self.replicated))

    # ----- checkpoints -------------------------------------------------------------
    def checkpoint_tree(self) -> dict:
        return {"state": self.state.checkpoint_tree(), "train_totals": self.totals}

    def meta(self, elapsed_s: float) -> dict:
        return {
            "epoch": int(self.history[-1]["epoch"]) if self.history else 0,
            "history": self.history,
            "elapsed_s": elapsed_s,
            "steps_per_epoch": self.steps_per_epoch,
            "norm_mean": self.data.mean.tolist(),
            "norm_std": self.data.std.tolist(),
            "class_names": list(self.data.class_names),
            "example_shape": list(self.data.example_shape),
            "model_description": model_description(self.config),
            "shapes": tree_shapes(self.checkpoint_tree()),
        }

    def save(self, step: int, elapsed_s: float, metrics: dict | None) -> None:
        self.store.save(step, self.checkpoint_tree(), self.meta(elapsed_s), metrics)

    def resume(self) -> int:
        """Restore the latest checkpoint if there is one; returns the global step."""
        step = self.store.latest_step()
        if step is None:
            self.log.rewrite([])
            return 0
        self.store.check_compatible(
            step, tree_shapes(self.checkpoint_tree()), model_description(self.config)
        )
        meta = self.store.read_meta(step)
        if meta["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointMismatchError(
                f"cannot resume from {self.store.directory / str(step)}: it was trained with "
                f"{meta['steps_per_epoch']} steps per epoch, the config now gives "
                f"{self.steps_per_epoch} (batch_size or dataset changed); the data order "
                "would not continue. Train into a fresh --workdir."
            )
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            self.checkpoint_tree(),
        )
        tree, meta = self.store.restore(step, abstract)
        self.state = self.state.from_checkpoint_tree(tree["state"])
        self.totals = tree["train_totals"]
        self.history = list(meta["history"])
        self.elapsed_before = float(meta["elapsed_s"])
        # The log may hold an epoch the checkpoint does not (crash between the two).
        self.log.rewrite(self.history)
        return int(step)


def _jitted(schedule):
    """``schedule`` as one compiled program, for the learning rate each epoch logs.

    Called eagerly, an optax schedule compiles each of its jnp ops on its own the first
    time: a one-cycle schedule's ~25 took 1.2 s of MNIST's first epoch on a 2-core CPU;
    jitted, they are one small program (0.17 s).

    Examples:
      >>> import numpy as np, optax
      >>> lr = _jitted(optax.linear_schedule(1.0, 0.0, transition_steps=4))
      >>> float(lr(np.int32(1)))
      0.75
    """

    def learning_rate_at(step):
        return schedule(step)

    return jax.jit(learning_rate_at)
