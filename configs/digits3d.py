"""A 3-D CNN on volumes: sklearn's 8x8 digits twisted through depth into 8x8x8 stacks.

Each volume stacks 8 copies of one digit image, slice ``d`` rotated by
``start + 20 * d`` degrees (``start`` random in ±30 degrees per volume, seeded): a
corkscrew whose cross-section is the digit. The net must recognise the digit from
the 3-D shape whatever angle the stack starts at. Real images, made 3-D
reproducibly (``jaxcnn.train.volumes``); offline, no files.

Command::

    python scripts/train.py --config configs/digits3d.py --workdir runs/digits3d

Recipe: ``cnn3d`` (Conv3D 16-32-64 with batch norm, 2x2x2 max pooling, global average
pooling), AdamW with warm-up + cosine (peak 3e-3), batch 32, 12 epochs.

Measured on the 2-core CPU of the development machine (shared with other jobs):
12 epochs, 98.3 % test accuracy, 50 s for the whole run (about 800-1,500 volumes/s:
3-D convolutions are the slow kind on CPU). On the 2-core Intel Xeon of 2026-12-07
(session 47): 98.33 %, 27 s.
"""

from jaxcnn.train.config import base_config


def get_config():
    """Digits as twisted 8x8x8 volumes, 3-D CNN."""
    config = base_config()
    config.dataset = "digits"
    config.volume.depth = 8
    config.volume.twist_degrees = 20.0
    config.model = "cnn3d"
    config.batch_size = 32
    config.eval_batch_size = 360
    config.num_epochs = 12
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    config.log_every_steps = 20
    return config
