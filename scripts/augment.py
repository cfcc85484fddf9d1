"""Same as ``jaxcnn augment``: see ``jaxcnn/commands/augment.py`` and docs/data.md."""

import sys

from jaxcnn.commands import augment

if __name__ == "__main__":
    sys.exit(augment.main(sys.argv[1:]))
