"""Apply a classic image kernel and write a before/after PNG (same as ``jaxcnn kernel``)."""

import sys

from jaxcnn.commands import kernel

if __name__ == "__main__":
    sys.exit(kernel.main(sys.argv[1:]))
