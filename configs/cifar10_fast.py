"""CIFAR-10, fast: the ``fast_cifar`` net with airbench94's recipe, for time-to-94 % on a GPU.

Command (add ``--config.dataset=folder:/tmp/cifar10_jpg --config.dtype=float32`` for the
JPEG folders on a CPU)::

    python scripts/train.py --config configs/cifar10_fast.py --workdir runs/cifar_fast

Recipe (airbench94, Jordan 2024, translated to optax; each trick with why):
  * ``fast_cifar`` (a 2x2 whitening conv, three Conv-MaxPool-BN-GELU-Conv-BN-GELU groups
    of widths 64/256/256, global max pool): wide and shallow keeps an accelerator busy.
    Pooling before the norm (``pool_first``) also makes norm and GELU 4x cheaper.
  * the whitening conv is set from the patch covariance of 5,000 training images and
    kept fixed (``whitening.layer``): the net starts from decorrelated inputs.
  * PyTorch's init with identity first filters (``torch_default_dirac``): each conv
    starts close to passing its input through, and under batch norm the weights' scale
    sets the effective learning rate, so the PyTorch-tuned rates need PyTorch's scale.
  * batch-norm scales fixed at 1 (``frozen``), biases at 64x the learning rate
    (``lr_multipliers``), running statistics with momentum 0.4; logits scaled by 1/9.
  * batch 1024, SGD + Nesterov (momentum 0.85) at lr 1.5, L2 1.33e-3 on every
    parameter, a linear triangle 0.2 -> 1 (23 % of the run) -> 0.07 of the peak.
  * label smoothing 0.2; flips and 2-pixel crops with reflected borders.
  * test-time augmentation (``eval_tta = "flip_translate"``, 6 views).
  * bfloat16 compute, float32 parameters: twice the matmul rate on a GPU.
  Not ported: lookahead (an average of the weights copied back every 5 steps),
  alternating flips, and training the whitening bias for 3 epochs only.

Measured: never on a GPU (none was lent). On 2 CPU cores (Intel Xeon, family 6 model
167) in float32 on the JPEG CIFAR-10 of ``../shared/data`` (lossy: quality 75, 4:2:0
chroma), seed 0, one run each. Test accuracy with the 6 views (one view):

* Session 12, this recipe: **89.72 %** (88.76 %), 28 min for the 10 epochs. Validation
  per epoch, one view: 64.2, 71.3, 74.7, 76.9, 80.2, 79.9, 84.0, 85.1, 87.1, 88.8 %.
  Seed 1, through ``benchmarks/time_to_accuracy.py``: **89.87 %** (89.25 %), 28 min.
* Session 12, the same without pool_first, identity filters and reflected crops
  (``kernel_init="torch_default"``, zero-padded crops): 89.39 % (88.22 %), 35 min.
  Validation: 53.1, 69.6, 67.6, 69.0, 78.8, 79.7, 83.3, 83.8, 86.6, 88.2 %.
* Session 11, the previous recipe (batch 512, lr 0.2, momentum 0.9, cosine one-cycle,
  weight decay 5e-4 on kernels only, learned BN scales, He init, 12 epochs): 87.66 %
  (86.20 %), 44 min; seed 1: 87.30 % (86.50 %). Session 7, before whitening and
  test-time views: 86.16 %.

airbench94 itself reaches 94.0 % on the original CIFAR-10 files, but 90.79 % on this
JPEG copy (re-run here, PyTorch, seed 0): 94 % is out of reach on this copy. The
remaining point and what is left to port are in docs/benchmarks.md.
"""

from jaxcnn.train.config import base_config


def get_config():
    """CIFAR-10, fast_cifar with airbench94's recipe, for accelerators."""
    config = base_config()
    config.dataset = "cifar10"
    config.model = "fast_cifar"
    config.model_kwargs = {
        # airbench's 0.6 (PyTorch's momentum=0.4): Flax's weight on the old running statistics.
        "norm_momentum": 0.6,
        "logit_scale": 1 / 9,
        "kernel_init": "torch_default_dirac",
        "pool_first": True,
        "activation": "gelu_exact",
        "norm_epsilon": 1e-12,
        "classifier_bias": False,
    }
    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 10
    config.dtype = "bfloat16"
    config.optimizer.name = "sgd"
    # airbench's lr 11.5 and weight decay 0.0153 "per 1024 examples" on a summed loss,
    # for optax on a mean loss: lr = 11.5 / (1 + 1 / (1 - 0.85)) = 1.5, and the L2
    # coefficient 0.0153 / 11.5 = 1.33e-3 (torch.optim.SGD and optax add it the same way).
    config.optimizer.learning_rate = 1.5
    config.optimizer.momentum = 0.85
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 1.33e-3
    config.optimizer.weight_decay_on = "all"
    config.optimizer.lr_multipliers = (("*/norm/bias", 64.0),)
    config.optimizer.frozen = ("*/norm/scale",)
    config.optimizer.freeze_after = (("whiten/*bias", 3),)
    config.schedule.name = "linear_onecycle"
    config.schedule.pct_start = 0.23
    config.schedule.div_factor = 5.0  # starts at 0.2 x the peak
    config.schedule.end_factor = 0.07
    config.label_smoothing = 0.2
    config.whitening.layer = "whiten"
    config.eval_tta = "flip_translate"
    config.augment.crop_padding = 2
    config.augment.crop_mode = "reflect"
    config.augment.flip = True
    config.augment.flip_mode = "alternate"
    config.lookahead.every_steps = 5
    config.lookahead.start_epochs = 3.0
    config.log_every_steps = 10
    return config
