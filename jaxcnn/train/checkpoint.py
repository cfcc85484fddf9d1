"""Orbax checkpoints of a training run: every epoch, the last N and the best kept.

Each checkpoint step directory holds two items:

* ``state`` – the train-state arrays (params, batch_stats, opt_state, step, rng) and
  the running training-metric sums of an unfinished epoch;
* ``meta`` – JSON: epoch, history so far, early-stopping counters, normalisation
  stats, class names, the model's identity and every array's shape.

Orbax writes a step into a temporary directory and renames it when complete, so a
crash mid-save leaves only a ``*.orbax-checkpoint-tmp-*`` directory that is never
listed as a step (and is removed the next time a store opens the directory).

Before restoring, :meth:`CheckpointStore.check_compatible` compares the stored
shapes with the ones the current config builds and raises
:class:`CheckpointMismatchError` naming the differences, instead of letting orbax
fail deep inside with a shape error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a different model or optimiser than the config builds."""


def tree_shapes(tree: Any) -> dict[str, str]:
    """``{"params/Conv_0/kernel": "float32[3,3,1,32]", ...}`` for every array in ``tree``.

    Examples:
      >>> import jax.numpy as jnp
      >>> tree_shapes({"params": {"bias": jnp.zeros(3)}})
      {'params/bias': 'float32[3]'}
    """
    shapes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(_key_name(key) for key in path)
        shapes[name] = f"{jax.numpy.dtype(leaf.dtype).name}[{','.join(map(str, leaf.shape))}]"
    return shapes


# Which part of the setup a differing array belongs to, in the order worth reading.
_CAUSES = {
    "params": "the model",
    "batch_stats": "the model",
    "opt_state": "the optimizer",
    "train_totals": "the metrics (number of classes)",
}


def _cause(name: str) -> str:
    for part in name.split("/"):
        if part in _CAUSES:
            return _CAUSES[part]
    return "the saved state"


_CAUSE_ORDER = list(dict.fromkeys([*_CAUSES.values(), "the saved state"]))


def _part_order(name: str) -> int:
    return _CAUSE_ORDER.index(_cause(name))


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


@contextlib.contextmanager
def _without_log_records(logger_name: str, fragment: str, active: bool = True):
    """Within: ``logger_name``'s records containing ``fragment`` are dropped."""

    def keep(record: logging.LogRecord) -> bool:
        return fragment not in record.getMessage()

    logger = logging.getLogger(logger_name)
    if active:
        logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class CheckpointStore:
    """The ``checkpoints/`` directory of a workdir.

    Args:
      directory: where the step directories live (created if missing).
      keep: how many of the most recent checkpoints to keep (>= 1).
      best_metric: metric name in the per-epoch record used to keep the best
        checkpoint as well (e.g. ``"val_accuracy"``); empty: keep only the latest.
      best_mode: ``"max"`` or ``"min"`` for ``best_metric``.
      read_only: open for restoring only (no directory created, no temp dirs removed;
        :meth:`save` refuses).

    Examples:
      >>> # store = CheckpointStore(workdir / "checkpoints", keep=3, best_metric="val_accuracy")
      >>> # store.save(step, state.checkpoint_tree(), meta, metrics={"val_accuracy": 0.98})
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 3,
        best_metric: str = "val_accuracy",
        best_mode: str = "max",
        read_only: bool = False,
    ):
        if keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1; got {keep!r}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"checkpoint best_mode must be 'max' or 'min'; got {best_mode!r}")
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        self.read_only = read_only
        policies = [checkpoint_managers.LatestN(n=keep)]
        if best_metric:
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    # Mid-epoch (Ctrl-C) checkpoints have no metrics; LatestN keeps them.
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
            best_mode=best_mode,
            # Synchronous: when save() returns the step is on disk, so a SIGKILL right
            # after an epoch never loses that epoch.
            enable_async_checkpointing=False,
            # Reading must not touch the directory (a run may be writing it); orbax's own
            # read_only mode would only add warnings, since nothing here saves then.
            cleanup_tmp_directories=not read_only,
            create=not read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"), options=options
        )

    def steps(self) -> list[int]:
        """All complete checkpoint steps, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete step, or ``None``."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best ``best_metric`` (the latest if none has metrics)."""
        best = self._manager.best_step() if self.best_metric else None
        return best if best is not None else self.latest_step()

    def step_for(self, which: str) -> int:
        """Resolve ``"best"``, ``"latest"`` or a step number to an existing step."""
        if which not in ("best", "latest") and not str(which).isdigit():
            raise ValueError(f"which must be 'best', 'latest' or a step number; got {which!r}")
        step = {"best": self.best_step, "latest": self.latest_step}.get(which, lambda: int(which))()
        if step is None or step not in self.steps():
            raise FileNotFoundError(
                f"no checkpoint {which!r} in {self.directory} (steps found: {self.steps()})"
            )
        return step

    def save(
        self, step: int, tree: Any, meta: Mapping, metrics: Mapping[str, float] | None = None
    ) -> Path:
        """Write ``tree`` (arrays) and ``meta`` (JSON) as checkpoint ``step``; returns its path."""
        if self.read_only:
            raise PermissionError(f"checkpoint store {self.directory} was opened read-only")
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        # A mid-epoch (Ctrl-C) checkpoint has no metrics by design: orbax's warning about
        # it would only confuse (the best step is chosen among the ones that have them).
        with _without_log_records("absl", "did not provide metrics", active=not metrics):
            self._manager.save(
                step, args=args, metrics=dict(metrics) if metrics else None, force=True
            )
        self._manager.wait_until_finished()
        return self.directory / str(step)

    def read_meta(self, step: int) -> dict:
        """The JSON metadata of ``step`` (cheap: no arrays are read)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def check_compatible(self, step: int, expected_shapes: Mapping[str, str], what: str) -> None:
        """Raise :class:`CheckpointMismatchError` if ``step`` stores other arrays than expected.

        Args:
          step: checkpoint step.
          expected_shapes: :func:`tree_shapes` of the tree about to be restored.
          what: a description of the current setup for the message (model name, kwargs).
        """
        meta = self.read_meta(step)
        stored = meta.get("shapes", {})
        if stored == dict(expected_shapes):
            return
        missing = set(stored) - set(expected_shapes)
        extra = set(expected_shapes) - set(stored)
        changed = {n for n in set(stored) & set(expected_shapes) if stored[n] != expected_shapes[n]}
        differing = sorted(changed | missing | extra, key=lambda n: (_part_order(n), n))
        lines = []
        for name in differing:
            if name in changed:
                lines.append(f"  {name}: checkpoint {stored[name]}, now {expected_shapes[name]}")
            elif name in missing:
                lines.append(f"  {name}: only in the checkpoint ({stored[name]})")
            else:
                lines.append(f"  {name}: not in the checkpoint (now {expected_shapes[name]})")
        causes = sorted({_cause(name) for name in differing}, key=_CAUSE_ORDER.index)
        cause = " and ".join(causes)
        shown = "\n".join(lines[:12]) + (
            f"\n  ... {len(lines) - 12} more" if len(lines) > 12 else ""
        )
        raise CheckpointMismatchError(
            f"cannot resume from {self.directory / str(step)}: it was written by "
            f"{meta.get('model_description', 'another setup')}, but the config now builds "
            f"{what}; {cause} changed ({len(lines)} arrays differ):\n{shown}\n"
            "Train into a fresh --workdir, or restore the config the checkpoint was written "
            "with (WORKDIR/config.json)."
        )

    def restore(self, step: int, abstract_tree: Any) -> tuple[Any, dict]:
        """Arrays of ``step`` laid out like ``abstract_tree`` (shapes, dtypes, shardings) + meta."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_tree), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["meta"])

    def close(self) -> None:
        """Release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
