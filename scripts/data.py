"""Same as ``jaxcnn data``: see ``jaxcnn/commands/data.py`` and docs/data.md."""

import sys

from jaxcnn.commands import data

if __name__ == "__main__":
    sys.exit(data.main(sys.argv[1:]))
