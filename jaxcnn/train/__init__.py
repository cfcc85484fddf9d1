"""Training: pure jitted steps, the fit loop, checkpoints, resume, multi-device.

Public API (see ``docs/training.md``)::

    fit(config, workdir) -> FitResult         train, evaluate, checkpoint, resume
    restore(workdir, which="best") -> Restored  the trained model and its preprocessing
    diagnose(history) -> Diagnosis            over/underfitting verdict with evidence
    create_train_state, make_train_step, make_eval_step, TrainState, Lookahead
    build_optimizer, build_schedule, weight_decay_mask, cross_entropy
    CheckpointStore, CheckpointMismatchError, NonFiniteLossError
    base_config, validate_config, ConfigError
"""

from jaxcnn.train.checkpoint import CheckpointMismatchError, CheckpointStore
from jaxcnn.train.config import ConfigError, base_config, load_config_json, validate_config
from jaxcnn.train.diagnosis import Diagnosis, diagnose
from jaxcnn.train.eval_slices import auto_eval_splits
from jaxcnn.train.evaluation import Evaluator
from jaxcnn.train.lookahead import Lookahead
from jaxcnn.train.loop import FitResult, NonFiniteLossError, fit
from jaxcnn.train.losses import batch_metrics, cross_entropy, finalize_metrics
from jaxcnn.train.optim import build_optimizer, build_schedule, weight_decay_mask
from jaxcnn.train.restore import Restored, restore
from jaxcnn.train.state import TrainState, abstract_train_state, create_train_state
from jaxcnn.train.steps import (
    auto_batch_splits,
    make_eval_step,
    make_train_step,
    preprocess,
)

__all__ = [
    "CheckpointMismatchError",
    "CheckpointStore",
    "ConfigError",
    "Diagnosis",
    "Evaluator",
    "FitResult",
    "Lookahead",
    "NonFiniteLossError",
    "Restored",
    "TrainState",
    "abstract_train_state",
    "auto_batch_splits",
    "auto_eval_splits",
    "base_config",
    "batch_metrics",
    "build_optimizer",
    "build_schedule",
    "create_train_state",
    "cross_entropy",
    "diagnose",
    "finalize_metrics",
    "fit",
    "load_config_json",
    "make_eval_step",
    "make_train_step",
    "preprocess",
    "restore",
    "validate_config",
    "weight_decay_mask",
]
