"""The ``jaxcnn`` command line: one entry point, one sub-command per job.

Each sub-command lives in ``jaxcnn/commands/<name>.py`` and exposes
``main(argv: list[str]) -> int``. This file only dispatches, and imports a
sub-command lazily so that ``jaxcnn shapes`` (pure Python) never pays for
importing JAX.

Example::

    $ jaxcnn shapes --input 32x32x3 conv:32,3 pool:2
    $ jaxcnn train --config configs/mnist.py --config.num_epochs=3
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Kept static so `jaxcnn --help` is instant.
COMMANDS: dict[str, tuple[str, str]] = {
    "shapes": ("jaxcnn.commands.shapes", "output shape, receptive field and formula per layer"),
    "summary": ("jaxcnn.commands.summary", "layer table of a zoo model: shapes, params, FLOPs"),
    "train": ("jaxcnn.commands.train", "train a model from a config (the main job)"),
    "evaluate": ("jaxcnn.commands.evaluate", "test metrics and confusion matrix of a workdir"),
    "predict": ("jaxcnn.commands.predict", "top-k classes for image files"),
    "report": ("jaxcnn.commands.report", "write report.html for a training workdir"),
    "kernel": ("jaxcnn.commands.kernel", "apply a classic image kernel, write before/after PNG"),
    "augment": ("jaxcnn.commands.augment", "write a PNG grid of augmented samples"),
    "data": ("jaxcnn.commands.data", "load a dataset and print what was found and verified"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: jaxcnn <command> [options]", "", "commands:"]
    for name, (_, help_text) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_text}")
    lines.append("")
    lines.append("Run `jaxcnn <command> --help` for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to a sub-command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a command is required: bad usage, as an unknown one is
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"jaxcnn: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
