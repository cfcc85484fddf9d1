"""jaxcnn: build, check and train convolutional neural networks with JAX and Flax.

The rooms (see the README): ``jaxcnn.shapes`` (pure-Python output-size
calculator), ``jaxcnn.layers`` and ``jaxcnn.models`` (Flax Linen modules that
assert the calculator's shapes), ``jaxcnn.summary``, ``jaxcnn.kernels``,
``jaxcnn.data``, ``jaxcnn.train``, ``jaxcnn.viz`` and ``jaxcnn.testing``;
``jaxcnn.conv_backend`` and ``jaxcnn.onednn`` pick who runs the convolutions on CPU.

Sub-modules are imported lazily, so ``import jaxcnn`` (and the ``shapes``
calculator) does not import JAX.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "shapes",
    "layers",
    "models",
    "model_summary",
    "kernels",
    "data",
    "train",
    "viz",
    "report",
    "testing",
    "cli",
    "conv_backend",
    "onednn",
)


def __getattr__(name: str):
    # `jaxcnn.summary(model, input_shape)` is a function; its module is
    # `jaxcnn.model_summary` so that importing the module never shadows it.
    if name == "summary":
        return importlib.import_module("jaxcnn.model_summary").summary
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxcnn.{name}")
    raise AttributeError(f"module 'jaxcnn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + ["summary"])
