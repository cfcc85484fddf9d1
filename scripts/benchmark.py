"""Benchmark jaxcnn against the minimal Flax loop, PyTorch and Keras (see benchmarks/command.py).

python scripts/benchmark.py --quick
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.command import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
