"""Load a trained model back from a workdir: ``restore(workdir, "best" | "latest")``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxcnn.train import sharding as sharding_lib
from jaxcnn.train.checkpoint import CheckpointStore, tree_shapes
from jaxcnn.train.components import build_model, model_description
from jaxcnn.train.config import load_config_json
from jaxcnn.train.losses import zeros_like_metrics
from jaxcnn.train.state import abstract_train_state
from jaxcnn.train.steps import eval_logits
from jaxcnn.train.tta import check_tta_mode


@dataclasses.dataclass
class Restored:
    """A trained model with everything needed to use it as it was trained.

    Attributes:
      model: the Linen module.
      variables: ``{'params': ..., 'batch_stats': ...}`` (no batch_stats key without BN);
        the params are the moving average when the run kept one (``config.ema_decay``).
      config: the training config (from ``WORKDIR/config.json``).
      norm_mean, norm_std: the training split's per-channel stats ([0, 1] units).
      class_names: class names in label order.
      example_shape: the shape of one input, e.g. ``(28, 28, 1)``.
      step, epoch: where the checkpoint was taken.
      history: the per-epoch records up to that checkpoint.
      checkpoint_path: its directory.
    """

    model: nn.Module
    variables: dict
    config: ml_collections.ConfigDict
    norm_mean: np.ndarray
    norm_std: np.ndarray
    class_names: tuple[str, ...]
    example_shape: tuple[int, ...]
    step: int
    epoch: int
    history: list[dict]
    checkpoint_path: Path

    def __post_init__(self):
        self._applies: dict[str, Any] = {}

    @property
    def tta_fill(self) -> str:
        """How shifted test-time views fill their border: as the run's training crops."""
        return self.config.augment.get("crop_mode", "zeros")

    def _apply_for(self, tta: str):
        """The jitted ``(variables, uint8 images) -> logits`` with test-time augmentation."""
        if tta not in self._applies:
            model, mean, std, fill = self.model, self.norm_mean, self.norm_std, self.tta_fill
            self._applies[tta] = jax.jit(
                lambda variables, images: eval_logits(
                    model, variables, images, mean, std, tta, fill
                )
            )
        return self._applies[tta]

    def predict(
        self, images: np.ndarray, batch_size: int = 256, tta: str | None = None
    ) -> np.ndarray:
        """Logits ``(N, num_classes)`` for uint8 images ``(N, *example_shape)``.

        The training preprocessing (scale to [0, 1], normalise with the training
        split's mean/std) is applied; batches are padded to ``batch_size`` so every
        call compiles at most once. ``tta`` (``jaxcnn.train.tta.TTA_MODES``) averages the
        logits over fixed views; ``None`` uses the run's ``config.eval_tta``, so the
        predictions are those its test accuracy measured.

        Examples:
          >>> # restored = restore("runs/digits")
          >>> # restored.predict(test_images).argmax(-1)
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.example_shape:
            raise ValueError(
                f"images must be uint8 (N, {', '.join(map(str, self.example_shape))}) like the "
                f"training data; got {images.dtype} {images.shape}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        tta = check_tta_mode(tta or str(self.config.get("eval_tta", "none")))
        apply = self._apply_for(tta)
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            padded = np.zeros((batch_size, *self.example_shape), np.uint8)
            padded[: len(chunk)] = chunk
            # float32 whatever the model computes in (a user's bfloat16 head included).
            logits = np.asarray(apply(self.variables, padded), dtype=np.float32)
            outputs.append(logits[: len(chunk)])
        if not outputs:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(outputs)


def restore(workdir: str | Path, which: str = "best") -> Restored:
    """The model of a training workdir at its best or latest checkpoint.

    Args:
      workdir: a directory ``fit`` wrote (``config.json`` + ``checkpoints/``).
      which: ``"best"`` (by ``config.checkpoint.best_metric``), ``"latest"``, or a step.

    Returns:
      A :class:`Restored`.

    Examples:
      >>> # r = restore("runs/digits", "best")
      >>> # r.predict(images_uint8).argmax(-1)
    """
    workdir = Path(workdir)
    config = load_config_json(workdir / "config.json")
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoints/ in {workdir}: has a run been trained there?")
    store = CheckpointStore(
        directory,
        keep=config.checkpoint.keep,
        best_metric=config.checkpoint.best_metric,
        best_mode="min" if config.checkpoint.best_metric.endswith("loss") else "max",
        read_only=True,
    )
    try:
        step = store.step_for(which)
        meta = store.read_meta(step)
        example_shape = tuple(meta["example_shape"])
        class_names = tuple(meta["class_names"])
        model = build_model(config, len(class_names), example_shape[-1])
        mesh = sharding_lib.make_mesh(1)
        abstract_state = abstract_train_state(
            model,
            config,
            (1, *example_shape),
            steps_per_epoch=meta["steps_per_epoch"],
            mesh=mesh,
        )
        replicated = sharding_lib.replicated(mesh)
        totals = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
            zeros_like_metrics(len(class_names) > 5),
        )
        abstract = {"state": abstract_state.checkpoint_tree(), "train_totals": totals}
        store.check_compatible(step, tree_shapes(abstract), model_description(config))
        tree, meta = store.restore(step, abstract)
    finally:
        store.close()
    # A run that kept a moving average of its weights was evaluated with it.
    variables: dict[str, Any] = {"params": tree["state"].get("ema_params", tree["state"]["params"])}
    if tree["state"]["batch_stats"]:
        variables["batch_stats"] = tree["state"]["batch_stats"]
    return Restored(
        model=model,
        variables=variables,
        config=config,
        norm_mean=np.asarray(meta["norm_mean"], np.float32),
        norm_std=np.asarray(meta["norm_std"], np.float32),
        class_names=class_names,
        example_shape=example_shape,
        step=int(step),
        epoch=int(meta["epoch"]),
        history=list(meta["history"]),
        checkpoint_path=directory / str(step),
    )
