"""CIFAR-10 with ResNet-20 (He et al. 2016, 0.27 M parameters): the classic residual recipe.

Command (add ``--config.dataset=folder:/tmp/cifar10_jpg`` for the JPEG folders, see
configs/cifar10.py)::

    python scripts/train.py --config configs/cifar10_resnet.py --workdir runs/resnet20

Recipe: ``resnet20``, SGD with Nesterov momentum 0.9, peak learning rate 0.1 with one
warm-up epoch and a cosine decay, weight decay 5e-4 (kernels only), batch 128, 60
epochs, random crops (4 px) and flips, label smoothing 0.1; bfloat16 compute on
accelerators is a flag away (``--config.dtype=bfloat16``).

Measured: NOT MEASURED YET. Expected about 91-92 % (the paper's 91.25 % took 182
epochs with step decay). On the 2-core CPU one epoch takes several minutes; run it on
a GPU.
"""

from jaxcnn.train.config import base_config


def get_config():
    """CIFAR-10, ResNet-20, SGD + cosine."""
    config = base_config()
    config.dataset = "cifar10"
    config.model = "resnet20"
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.num_epochs = 60
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.label_smoothing = 0.1
    config.augment.crop_padding = 4
    config.augment.flip = True
    config.log_every_steps = 100
    return config
