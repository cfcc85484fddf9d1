"""Output shape, receptive field and formula per layer: ``python scripts/shapes.py --help``."""

import sys

from jaxcnn.commands.shapes import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
