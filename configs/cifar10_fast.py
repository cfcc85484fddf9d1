"""CIFAR-10, fast: the ``fast_cifar`` net with airbench94's recipe, for time-to-94 % on a GPU.

Command (add ``--config.dataset=folder:/tmp/cifar10_jpg`` for the JPEG folders; on a CPU
without jaxcnn's oneDNN convolutions add ``--config.dtype=float32`` too)::

    python scripts/train.py --config configs/cifar10_fast.py --workdir runs/cifar_fast

Recipe (airbench94, Jordan 2024, translated to optax; each trick with why):
  * ``fast_cifar`` (a 2x2 whitening conv, three Conv-MaxPool-BN-GELU-Conv-BN-GELU groups
    of widths 64/256/256, global max pool): wide and shallow keeps an accelerator busy.
    Pooling before the norm (``pool_first``) also makes norm and GELU 4x cheaper.
    airbench's details: the exact GELU, batch-norm epsilon 1e-12, no classifier bias.
  * the whitening conv is set from the patch covariance of 5,000 training images and
    kept fixed (``whitening.layer``): the net starts from decorrelated inputs. Its
    bias trains for 3 epochs only (``optimizer.freeze_after``).
  * PyTorch's init with identity first filters (``torch_default_dirac``): each conv
    starts close to passing its input through, and under batch norm the weights' scale
    sets the effective learning rate, so the PyTorch-tuned rates need PyTorch's scale.
  * batch-norm scales fixed at 1 (``frozen``), biases at 64x the learning rate
    (``lr_multipliers``), running statistics keeping 0.6 of the old value (Flax's
    momentum; PyTorch's 0.4); logits scaled by 1/9.
  * batch 1024, SGD + Nesterov (momentum 0.85) at lr 1.5, L2 1.33e-3 on every
    parameter, a linear triangle 0.2 -> 1 (23 % of the run) -> 0.07 of the peak.
  * lookahead (``config.lookahead``): from epoch 3, every 5 steps the weights are
    pulled toward a slow average whose weight grows as (step/total)^3, and restart
    from it; at each epoch's end too, so the model evaluated is the average.
  * label smoothing 0.2; 2-pixel crops with reflected borders; alternating flips
    (``flip_mode = "alternate"``: each image is seen both ways in any two epochs).
  * test-time augmentation (``eval_tta = "flip_translate"``, 6 views, their shifted
    borders reflected like the crops').
  * bfloat16 compute, float32 parameters: twice the matmul rate on a GPU, AMX
    through oneDNN on an Intel CPU, and AVX-512 BF16 on AMD's Zen 4.

Measured on one NVIDIA H200 (session 16, jax 0.11.2, bfloat16): 90.59 / 90.49 / 90.39 %
(seeds 0-2; 89.60 / 89.32 / 89.45 % with one view), 90 % passed 12.4-27.3 s after the start,
the whole fit in 20-39 s (docs/benchmarks.md, "The first GPU run"). On 2 CPU cores
(Intel Xeon, family 6 model 167) on the JPEG CIFAR-10 of ``../shared/data`` (lossy:
quality 75, 4:2:0 chroma), seed 0, one run each. Test accuracy with the 6 views (one view):

* Session 42, the same in bfloat16 after session 41's two gradient fixes (the tiled max
  pool's, oneDNN's strided 1x1 one): **90.69 %** (89.87 %), 7.6 min for the whole fit
  (1,021-1,304 images/s), an hour in which every runner of the harness ran 10-16 %
  below session 27.
* Session 15, this recipe in bfloat16, with batch norm fused with its activation and
  the exact GELU in PyTorch's erf form: **90.55 %** (90.07 %), 10.6 min from start to
  the end of the test (774-871 images/s); seed 1: 90.65 % (89.83 %), 10.5 min.
* Session 14, the same in bfloat16 before those two changes: 90.65 % (89.48 %), 12.4 min
  (about 710 images/s); seed 1: 90.67 % (89.64 %), 13.7 min. The runs below are float32.

* Session 13, this recipe: **90.79 %** (90.02 %), 33.5 min for the 10 epochs (the
  exact GELU is slower on a CPU). airbench94 itself on this copy: 90.79 % (89.57 %).
  Validation per epoch, one view: 63.6, 75.1, 69.5, 72.4, 81.5, 84.2, 85.0, 87.9,
  89.3, 90.0 %. Seed 1, through ``benchmarks/time_to_accuracy.py``: 90.72 % (89.90 %),
  38 min on a slower hour of the CPU. Without airbench's net details (tanh GELU,
  epsilon 1e-5, classifier bias): 90.72 % (89.94 %), 28.7 min.
* Session 12, its recipe (no lookahead, random flips, batch-norm momentum 0.4, test
  views with black borders): **89.72 %** (88.76 %), 28 min for the 10 epochs. Validation
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
JPEG copy (re-run here, PyTorch, seed 0): 94 % is out of reach on this copy, and the
port now matches airbench94 on it (docs/benchmarks.md).
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
