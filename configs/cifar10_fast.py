"""CIFAR-10, fast: the airbench-style ``fast_cifar`` net for time-to-94 % on a GPU.

Command (add ``--config.dataset=folder:/tmp/cifar10_jpg`` for the JPEG folders)::

    python scripts/train.py --config configs/cifar10_fast.py --workdir runs/cifar_fast

Recipe, each trick with why:
  * ``fast_cifar`` (2x2 patch stem, three Conv-BN-GELU groups of widths 64/256/256,
    global max pool): wide and shallow keeps an accelerator busy.
  * batch 512, SGD + Nesterov at a high peak rate with a short warm-up and a linear
    decay to zero (``onecycle``): large batches need a warm-up, and annealing to zero
    is worth a point at the end.
  * label smoothing 0.2: the net is over-confident after few epochs; smoothing
    regularises cheaply.
  * crops (2 px) and flips: the augmentations that help CIFAR most for the least time.
  * bfloat16 compute, float32 parameters: twice the matmul rate on a GPU.
  * weight decay 5e-4 on kernels only (BN scales and biases never decay).
  * a whitened first layer (``whitening.layer = "whiten"``): its 2x2 filters are set
    from the patch covariance of 5,000 training images and kept fixed, so the net
    starts from decorrelated, unit-variance inputs instead of learning them.
  * an exponential moving average of the weights (``ema_decay = 0.99``, about the last
    epoch) is what validation, the test and the checkpoints' model use.
  * test-time augmentation (``eval_tta = "flip_translate"``): the final test averages
    the logits of the image, its mirror and 1-pixel shifts of both (6 views).

Measured: never on a GPU (none was lent). On the 2-core Zen 5 CPU (AMD EPYC family 26,
2026-12-02, session 7), in float32 (``--config.dtype=float32
--config.dataset=folder:/tmp/cifar10_jpg``), one run, seed 0: **86.16 % test accuracy**
after the 12 epochs, 37 min at about 285 images/s. Validation accuracy per epoch: 46.5,
65.3, 70.5, 77.4, 77.4, 79.8, 82.1, 83.5, 83.8, 85.6, 86.1, 86.2 %; training accuracy
ended at 93.1 % (``fit``'s diagnosis: overfitting). So this recipe as it stands is about
8 points short of 94 %, and an earlier "92-94 % expected" was wrong; airbench's missing
tricks (whitened first layer, lookahead EMA, test-time flips, a larger head) are the
places to look on a GPU. On CPU, bfloat16 is slower than float32 (``docs/benchmarks.md``):
use ``--config.dtype=float32`` there.
"""

from jaxcnn.train.config import base_config


def get_config():
    """CIFAR-10, fast_cifar, for accelerators."""
    config = base_config()
    config.dataset = "cifar10"
    config.model = "fast_cifar"
    config.batch_size = 512
    config.eval_batch_size = 1000
    config.num_epochs = 12
    config.dtype = "bfloat16"
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.2
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "onecycle"
    config.schedule.pct_start = 0.2
    config.label_smoothing = 0.2
    config.whitening.layer = "whiten"
    config.ema_decay = 0.99
    config.eval_tta = "flip_translate"
    config.augment.crop_padding = 2
    config.augment.flip = True
    config.log_every_steps = 20
    return config
