"""The pieces ``fit``, ``restore`` and the commands build from a config: data and model."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcnn import data as data_lib
from jaxcnn import models
from jaxcnn.train.config import ConfigError
from jaxcnn.train.volumes import twisted_volumes


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """uint8 images ``(N, *spatial, C)`` and int32 labels ``(N,)`` on the host."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The splits a run uses, the normalisation stats and the class names.

    ``validation`` is the held-out part of train when ``config.validation_split > 0``
    and the test split otherwise (``validation_name`` says which).
    """

    train: ArraySplit
    validation: ArraySplit
    test: ArraySplit
    validation_name: str
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(28, 28, 1)`` or ``(8, 8, 8, 1)`` for volumes."""
        return tuple(self.train.images.shape[1:])


def load_training_data(config: Any) -> TrainingData:
    """Load ``config.dataset`` through ``jaxcnn.data`` (and make volumes if configured).

    Args:
      config: a validated training config.

    Returns:
      :class:`TrainingData`; mean/std come from the training split (of the 2-D
      images when volumes are made from them: rotation keeps the pixel statistics).
    """
    dataset = data_lib.load(
        config.dataset,
        config.data_dir or None,
        validation_split=float(config.validation_split),
        seed=int(config.seed),
        **config.data_options.to_dict(),
    )
    mean, std = data_lib.normalization_stats(dataset.train.images)
    validation = dataset.validation if dataset.validation is not None else dataset.test
    splits = {"train": dataset.train, "validation": validation, "test": dataset.test}
    arrays = {name: ArraySplit(split.images, split.labels) for name, split in splits.items()}
    depth = int(config.volume.depth)
    if depth:
        twist = float(config.volume.twist_degrees)
        # A different seed stream per split so no two splits share starting angles.
        arrays = {
            name: ArraySplit(
                twisted_volumes(split.images, depth, twist, seed=config.seed * 3 + index),
                split.labels,
            )
            for index, (name, split) in enumerate(arrays.items())
        }
        if dataset.validation is None:  # "validation (= test)": the very same volumes
            arrays["validation"] = arrays["test"]
    counts = ", ".join(f"{name} {len(split)}" for name, split in arrays.items())
    if dataset.validation is None:
        counts = counts.replace("validation", "validation (= test)", 1)
    return TrainingData(
        train=arrays["train"],
        validation=arrays["validation"],
        test=arrays["test"],
        validation_name="validation" if dataset.validation is not None else "test",
        class_names=tuple(dataset.class_names),
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        description=f"{dataset.name} ({dataset.info.source}): {counts}; "
        f"input {arrays['train'].images.shape[1:]}",
    )


def compute_dtype(config: Any) -> Any:
    """``config.dtype`` as a jnp dtype (parameters always stay float32)."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]


def build_model(config: Any, num_classes: int, in_channels: int) -> nn.Module:
    """The Linen module ``config.model`` names, for ``num_classes`` outputs.

    ``config.model`` is a zoo name (``jaxcnn.models.names()``) or ``"spec"``, in
    which case ``config.model_kwargs.spec`` describes the net (``jaxcnn.models.CNN``).
    """
    kwargs = config.model_kwargs.to_dict()
    common = {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "dtype": compute_dtype(config),
        "param_dtype": jnp.float32,
    }
    if config.model == "spec":
        if "spec" not in kwargs:
            raise ConfigError("config.model = 'spec' needs config.model_kwargs.spec (a CNN spec)")
        return models.from_spec(kwargs.pop("spec"), **common, **kwargs)
    if config.model not in models.names():
        raise ConfigError(
            f"config.model = {config.model!r} is not a zoo model; valid: 'spec' or one of "
            f"{', '.join(models.names())}"
        )
    try:
        return models.get(config.model, **common, **kwargs)
    except ValueError as error:
        if "got unknown arguments" not in str(error):
            raise
        raise ConfigError(
            f"config.model = {config.model!r}: fit builds it with num_classes, in_channels, "
            "dtype and param_dtype (plus config.model_kwargs), so its builder must accept "
            f"them (add **kwargs to ignore some): {error}"
        ) from None


def model_description(config: Any) -> str:
    """``"mnist_cnn {'dropout': 0.3} (bfloat16)"``: what a checkpoint was written by."""
    kwargs = config.model_kwargs.to_dict()
    return f"model {config.model!r} with model_kwargs {kwargs} ({config.dtype})"
