"""Train a CNN from a config: ``python scripts/train.py [--config configs/X.py] [--workdir DIR]``.

Same as ``jaxcnn train``; the logic lives in ``jaxcnn.train`` (see docs/training.md).
"""

import sys

from jaxcnn.commands import train

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
