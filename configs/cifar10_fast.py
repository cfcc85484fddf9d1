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
  * test-time augmentation (``eval_tta = "flip_translate"``): the final test averages
    the logits of the image, its mirror and 1-pixel shifts of both (6 views).

Measured: never on a GPU (none was lent). On 2 CPU cores in float32
(``--config.dtype=float32 --config.dataset=folder:/tmp/cifar10_jpg``), seed 0, one run each:

* Session 7, on the Zen 5 CPU with XLA's convolutions, before the whitened layer and the
  test-time augmentation: **86.16 %**, in 37 min at about 285 images/s. Validation per
  epoch: 46.5, 65.3, 70.5, 77.4, 77.4, 79.8, 82.1, 83.5, 83.8, 85.6, 86.1, 86.2 %.
* Session 11, on the Intel Xeon with oneDNN's convolutions, with the whitened first layer
  and, for this run only, a moving average of the weights (``ema_decay=0.99``): 44 min.
  Validation per epoch, average weights, one view: 59.5, 70.0, 77.0, 80.1, 81.5, 83.2,
  83.9, 84.7, 84.0, 85.6, 86.0, 86.1 %. That is 3-13 points ahead of session 7 in
  epochs 1-4 (whitening and the average together: this run cannot separate them) and
  level from epoch 9. The final test accuracy, in %:

  | weights | one view | flip | translate | flip_translate |
  | --- | --- | --- | --- | --- |
  | moving average | 86.09 | 87.24 | 86.50 | 87.50 |
  | last (this recipe) | 86.20 | 87.47 | 86.64 | **87.66** |

  What each trick gave:
  * Test-time augmentation: +1.5 points.
  * The moving average: nothing at the end, because the schedule already anneals the rate
    to zero. It is left out of the recipe. The average only changes evaluation, not
    training, so the "last" row is what this recipe gives.
  * The whitened start: the same final single-view accuracy as without it (86.20
    against 86.16 %, one run each, on different CPUs).

* Session 11, the recipe as it is here (seed 1, through ``benchmarks/time_to_accuracy.py``,
  which checked the path the GPU run will take): **87.30 %** (86.50 % one view), 44 min
  for the loop and 70 s for the two final tests. Validation per epoch, one view: 55.5,
  62.9, 72.2, 77.7, 79.9, 80.5, 82.9, 82.9, 85.2, 85.6, 86.2, 86.5 %. Without the average,
  epoch 1 is still 9 points ahead of session 7, then level.

So this recipe, at 87.3-87.7 % over two seeds, is about 6.5 points short of 94 %. The
next things to try, on a GPU where a run takes seconds rather than 40 minutes:

* airbench's optimiser settings: batch 1024, a much higher rate, 64 times that rate for
  the batch-norm biases, momentum 0.85, and logits scaled by 1/9;
* lookahead;
* fixed batch-norm scales.

On CPU, use ``--config.dtype=float32``: bfloat16 is no faster there
(``docs/benchmarks.md``).
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
    config.eval_tta = "flip_translate"
    config.augment.crop_padding = 2
    config.augment.flip = True
    config.log_every_steps = 20
    return config
