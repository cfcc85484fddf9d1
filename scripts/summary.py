"""Print the layer table of a zoo model (same as ``jaxcnn summary``).

Example: ``python scripts/summary.py resnet18 --input 224x224x3 --num-classes 10``
"""

import sys

from jaxcnn.commands import summary

if __name__ == "__main__":
    sys.exit(summary.main(sys.argv[1:]))
