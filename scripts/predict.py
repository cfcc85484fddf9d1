"""Same as ``jaxcnn predict``: see ``jaxcnn/commands/predict.py`` and docs/training.md."""

import sys

from jaxcnn.commands import predict

if __name__ == "__main__":
    sys.exit(predict.main(sys.argv[1:]))
