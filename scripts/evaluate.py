"""Same as ``jaxcnn evaluate``: see ``jaxcnn/commands/evaluate.py`` and docs/training.md."""

import sys

from jaxcnn.commands import evaluate

if __name__ == "__main__":
    sys.exit(evaluate.main(sys.argv[1:]))
