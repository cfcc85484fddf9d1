"""The training config: every field with its default, and a check that names bad values.

Configs in ``configs/*.py`` start from :func:`base_config` and override what their
recipe needs; any field can then be overridden on the command line
(``--config.num_epochs=3``). :func:`validate_config` runs first thing in ``fit``
so a typo fails before any data is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from jaxcnn import models
from jaxcnn.data.augment import DEFAULTS as augment_defaults
from jaxcnn.data.augment import STRENGTHS as AUGMENT_STRENGTHS
from jaxcnn.data.augment import is_identity as augment_is_identity
from jaxcnn.data.augment import validate as validate_augment
from jaxcnn.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    WEIGHT_DECAY_ON,
    freeze_after_pairs,
    lr_multiplier_pairs,
)
from jaxcnn.train.tta import TTA_MODES

DTYPES = ("float32", "bfloat16")
EARLY_STOPPING_METRICS = ("val_loss", "val_accuracy", "val_top5", "train_loss", "train_accuracy")
# Augmentation spec keys with everything off.
AUGMENT_OFF = dict(augment_defaults)


def base_config() -> ml_collections.ConfigDict:
    """Every training field with a neutral default (a config file overrides what it needs).

    Returns:
      A ``ConfigDict``; see ``docs/training.md`` for the meaning of each field.

    Examples:
      >>> cfg = base_config()
      >>> cfg.optimizer.name, cfg.dtype
      ('sgd', 'float32')
    """
    return ml_collections.ConfigDict(
        {
            "dataset": "digits",  # a name jaxcnn.data.load accepts
            "data_dir": "",  # "" = jaxcnn.data's default search path
            "data_options": {},  # extra keyword arguments for jaxcnn.data.load
            "validation_split": 0.0,  # fraction of train held out; 0 = validate on test
            # depth > 0 turns each image into a twisted 3-D stack (jaxcnn.train.volumes).
            "volume": {"depth": 0, "twist_degrees": 20.0},
            "model": "digits_cnn",  # a jaxcnn.models zoo name (the one for digits)
            "model_kwargs": {},  # extra keyword arguments for jaxcnn.models.get
            "batch_size": 128,
            "eval_batch_size": 500,
            "num_epochs": 10,
            "seed": 0,
            "optimizer": {
                "name": "sgd",
                "learning_rate": 0.1,
                "momentum": 0.9,
                "nesterov": False,
                "weight_decay": 0.0,
                "grad_clip_norm": 0.0,
                "b1": 0.9,
                "b2": 0.999,
                "eps": 1e-8,
                # Parameters kept at their initial values: layer names, paths
                # ("conv1/kernel") or globs ("whiten/*kernel"); see jaxcnn.train.optim.
                # A tuple, so the command line can set it: --config.optimizer.frozen="('conv1',)"
                "frozen": (),
                # "kernels": biases and norm scales never decay; "all": every parameter.
                "weight_decay_on": "kernels",
                # (pattern, factor) pairs: these parameters take factor x the learning
                # rate, with the same weight decay per step (airbench: BN biases x64),
                # e.g. --config.optimizer.lr_multipliers="(('*/norm/bias', 64.0),)"
                "lr_multipliers": (),
                # (pattern, epochs) pairs: these parameters stop changing after that many
                # epochs (airbench: the whitening bias after 3),
                # e.g. --config.optimizer.freeze_after="(('whiten/*bias', 3),)"
                "freeze_after": (),
            },
            "schedule": {
                "name": "constant",
                "warmup_epochs": 1.0,
                "end_factor": 0.0,
                # Tuples, not lists: ml_collections overrides tuple fields from the command
                # line (--config.schedule.factors="(0.1, 0.1)") but refuses list ones.
                "boundaries_epochs": (),
                "factors": (),
                "pct_start": 0.25,
                "div_factor": 25.0,
                "final_div_factor": 1e4,
            },
            "label_smoothing": 0.0,
            # Set the first conv from the training images' patch covariance
            # (jaxcnn.train.whitening); layer "" = off.
            "whitening": {"layer": "", "num_images": 5000, "eps": 5e-4, "freeze": True},
            # Evaluate a moving average of the weights (jaxcnn.train.state); 0 = off.
            "ema_decay": 0.0,
            # airbench's lookahead (jaxcnn.train.lookahead): from start_epochs on, every
            # every_steps steps a slow copy moves toward the weights with weight
            # decay_base ** every_steps * progress ** decay_power on itself, and the
            # weights restart from it (also at each epoch's end). every_steps 0 = off.
            "lookahead": {
                "every_steps": 0,
                "start_epochs": 3.0,
                "decay_base": 0.95,
                "decay_power": 3.0,
            },
            # Test-time augmentation of the final test, `jaxcnn evaluate` and `predict`
            # (none, flip, translate, flip_translate); per-epoch validation sees each
            # image once.
            "eval_tta": "none",
            "augment": dict(AUGMENT_OFF),
            "dtype": "float32",  # computation dtype; parameters stay float32
            "checkpoint": {"keep": 3, "best_metric": "val_accuracy"},
            # patience 0 = off; the metric must improve by min_delta to count.
            "early_stopping": {"metric": "val_loss", "patience": 0, "min_delta": 0.0},
            "log_every_steps": 50,  # metrics are fetched from the device this often
            "num_devices": 0,  # 0 = all local devices
            # Gradient from this many slices of each batch, run concurrently; 0 = automatic
            # (4 on one CPU device without batch norm when XLA runs every convolution,
            # else 1): jaxcnn.train.auto_batch_splits.
            "batch_splits": 0,
            "progress_bar": True,
            "tensorboard": True,  # event files if tensorboardX is installed
        }
    )


class ConfigError(ValueError):
    """A config field has a value that cannot work; the message names field, value and fix."""


def _require(condition: bool, field: str, value: Any, valid: str) -> None:
    if not condition:
        raise ConfigError(f"config.{field} = {value!r} is invalid: {valid}")


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Raise :class:`ConfigError` naming the field, its value and what is valid; return ``config``.

    Missing fields are filled in from :func:`base_config` (a config file may be
    written from scratch), so the returned config always has every field.

    Examples:
      >>> cfg = base_config(); cfg.batch_size = 0
      >>> validate_config(cfg)  # doctest: +IGNORE_EXCEPTION_DETAIL
      Traceback (most recent call last):
      ...
      ConfigError: config.batch_size = 0 is invalid: a positive integer
    """
    if isinstance(config, Mapping):  # a plain dict is a config too
        config = ml_collections.ConfigDict(dict(config))
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"config must be an ml_collections.ConfigDict or a dict; got {type(config).__name__}"
        )
    full = base_config()
    flat = _flatten(config.to_dict())
    defaults = _flatten(full.to_dict())
    for name in flat:
        # A misspelt field would otherwise be ignored silently.
        _require(
            name in defaults, name, flat[name], f"not a config field; fields: {sorted(defaults)}"
        )
    for name, value in flat.items():
        try:
            full.update_from_flattened_dict({name: value})
        except (TypeError, ValueError):  # ml_collections refuses another type for a field
            default = defaults[name]
            valid = f"of type {type(default).__name__}, like {default!r}"
            if isinstance(default, tuple | list):
                valid = "a list, e.g. ['conv1'] (a single string is not one)"
            _require(False, name, value, valid)
    config = full
    for field in ("batch_size", "eval_batch_size", "num_epochs", "log_every_steps"):
        value = config[field]
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value > 0,
            field,
            value,
            "a positive integer",
        )
    _require(isinstance(config.seed, int), "seed", config.seed, "an integer")
    _require(
        0.0 <= config.validation_split < 1.0,
        "validation_split",
        config.validation_split,
        "a fraction in [0, 1)",
    )
    _require(
        0.0 <= config.label_smoothing < 1.0,
        "label_smoothing",
        config.label_smoothing,
        "a value in [0, 1)",
    )
    _require(config.dtype in DTYPES, "dtype", config.dtype, f"one of {DTYPES}")
    # Names, before any data is loaded (a typo must not wait for a download).
    _require(
        config.model == "spec" or config.model in models.names(),
        "model",
        config.model,
        f"'spec' or a zoo model: {', '.join(models.names())} (a model added with "
        "jaxcnn.models.register must be registered again in each process, before fit or "
        "restore)",
    )
    name = config.optimizer.name
    _require(name in OPTIMIZERS, "optimizer.name", name, f"one of {OPTIMIZERS}")
    name = config.schedule.name
    _require(name in SCHEDULES, "schedule.name", name, f"one of {SCHEDULES}")
    momentum = config.optimizer.momentum
    _require(
        momentum is None or 0.0 <= momentum < 1.0,
        "optimizer.momentum",
        momentum,
        "in [0, 1) (0.9 is usual); for adam-like optimisers it is b1",
    )
    _require(
        isinstance(config.num_devices, int) and config.num_devices >= 0,
        "num_devices",
        config.num_devices,
        "0 (all devices) or a positive count",
    )
    _require(
        isinstance(config.batch_splits, int) and 0 <= config.batch_splits <= config.batch_size,
        "batch_splits",
        config.batch_splits,
        f"0 (automatic) or an integer from 1 to batch_size ({config.batch_size})",
    )
    depth = config.volume.depth
    _require(isinstance(depth, int) and depth >= 0, "volume.depth", depth, "an integer >= 0")
    keep = config.checkpoint.keep
    _require(isinstance(keep, int) and keep >= 1, "checkpoint.keep", keep, "an integer >= 1")
    best = config.checkpoint.best_metric
    _require(
        best in (None, "") or best in EARLY_STOPPING_METRICS,
        "checkpoint.best_metric",
        best,
        f"one of {EARLY_STOPPING_METRICS}, or '' (best = latest)",
    )
    stopping = config.early_stopping
    _require(
        stopping.metric in EARLY_STOPPING_METRICS,
        "early_stopping.metric",
        stopping.metric,
        f"one of {EARLY_STOPPING_METRICS}",
    )
    _require(
        isinstance(stopping.patience, int) and stopping.patience >= 0,
        "early_stopping.patience",
        stopping.patience,
        "an integer >= 0 (0 = off)",
    )
    _require(stopping.min_delta >= 0, "early_stopping.min_delta", stopping.min_delta, ">= 0")
    _require(0.0 <= config.ema_decay < 1.0, "ema_decay", config.ema_decay, "in [0, 1); 0 = off")
    _require(config.eval_tta in TTA_MODES, "eval_tta", config.eval_tta, f"one of {TTA_MODES}")
    whitening = config.whitening
    _require(
        isinstance(whitening.layer, str), "whitening.layer", whitening.layer, "a layer name or ''"
    )
    _require(
        isinstance(whitening.num_images, int) and whitening.num_images > 0,
        "whitening.num_images",
        whitening.num_images,
        "a positive integer",
    )
    _require(whitening.eps > 0, "whitening.eps", whitening.eps, "a positive number")
    _require(
        config.optimizer.weight_decay_on in WEIGHT_DECAY_ON,
        "optimizer.weight_decay_on",
        config.optimizer.weight_decay_on,
        f"one of {WEIGHT_DECAY_ON}",
    )
    try:
        lr_multiplier_pairs(config.optimizer)
        freeze_after_pairs(config.optimizer)
    except ValueError as error:
        raise ConfigError(f"config.{error}") from None
    _check_lookahead(config)
    frozen = config.optimizer.frozen
    _require(
        isinstance(frozen, list | tuple) and all(isinstance(p, str) and p for p in frozen),
        "optimizer.frozen",
        frozen,
        "a list of parameter paths or globs, e.g. ['conv1'] or ['whiten/*kernel']",
    )
    unknown = set(config.augment) - set(AUGMENT_OFF)
    _require(not unknown, "augment", sorted(unknown), f"keys among {sorted(AUGMENT_OFF)}")
    try:
        # Values too, before any data is loaded (augment's message names key and range).
        validate_augment(config.augment)
    except ValueError as error:
        raise ConfigError(f"config.{error}") from None
    if depth and not augment_is_identity(config.augment):
        on = {k: v for k, v in config.augment.items() if k in AUGMENT_STRENGTHS and v}
        raise ConfigError(
            f"config.augment switches on {on}, but its ops are for 2-D images and "
            f"config.volume.depth = {depth} makes 3-D volumes; turn them off (0 / False)"
        )
    return config


def _check_lookahead(config: ml_collections.ConfigDict) -> None:
    lookahead = config.lookahead
    every = lookahead.every_steps
    _require(
        isinstance(every, int) and not isinstance(every, bool) and every >= 0,
        "lookahead.every_steps",
        every,
        "an integer >= 0 (0 = off; airbench: 5)",
    )
    if not every:
        return
    start = lookahead.start_epochs
    _require(
        0 <= start < config.num_epochs,
        "lookahead.start_epochs",
        start,
        f"in [0, num_epochs={config.num_epochs}); lower it, or turn lookahead off with "
        "--config.lookahead.every_steps=0",
    )
    base = lookahead.decay_base
    _require(0 < base <= 1, "lookahead.decay_base", base, "in (0, 1]; airbench: 0.95")
    power = lookahead.decay_power
    _require(power >= 0, "lookahead.decay_power", power, ">= 0; airbench: 3")


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``, keeping free-form dicts (kwargs, options) whole."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and key not in ("model_kwargs", "data_options") and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# Fields a resumed run may change: how long it runs, how it reports and evaluates, where
# the data lives, how the work is spread. Any other change would make the run neither the
# one its checkpoints come from nor the one the config describes.
CHANGEABLE_ON_RESUME = (
    "num_epochs",
    "progress_bar",
    "tensorboard",
    "log_every_steps",
    "eval_batch_size",
    "eval_tta",
    "data_dir",
    "checkpoint.keep",
    "batch_splits",
    "num_devices",
    "early_stopping.metric",
    "early_stopping.patience",
    "early_stopping.min_delta",
)


def config_changes(
    before: ml_collections.ConfigDict, after: ml_collections.ConfigDict
) -> dict[str, tuple[Any, Any]]:
    """``{field: (before, after)}`` for every field whose value differs.

    Examples:
      >>> a, b = base_config(), base_config()
      >>> b.seed = 1
      >>> config_changes(a, b)
      {'seed': (0, 1)}
    """
    old = _flatten(json.loads(config_to_json(before)))
    new = _flatten(json.loads(config_to_json(after)))
    return {
        name: (old.get(name), new.get(name))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    }


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """The config as indented JSON (what ``WORKDIR/config.json`` holds)."""
    return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)


def load_config_json(path: str | Path) -> ml_collections.ConfigDict:
    """Read a ``config.json`` written by ``fit`` back into a ``ConfigDict``.

    Examples:
      >>> import tempfile, pathlib
      >>> p = pathlib.Path(tempfile.mkdtemp()) / "config.json"
      >>> _ = p.write_text(config_to_json(base_config()))
      >>> load_config_json(p).model
      'digits_cnn'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config.json at {path}: is this a jaxcnn training workdir?")
    return validate_config(ml_collections.ConfigDict(json.loads(path.read_text())))
