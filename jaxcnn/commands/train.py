"""``jaxcnn train``: train a config into a workdir, then write the report.

Examples::

    jaxcnn train                                   # configs/default.py: digits, ~15 s
    jaxcnn train --config configs/mnist.py --workdir runs/mnist --config.num_epochs=3
    jaxcnn train --config mnist                    # a name in the repo's configs/
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from absl import flags
from ml_collections import config_flags

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "default.py"
_PROG = "jaxcnn train"
_CONFIG_HELP = (
    "a configs/*.py file, or the name of one in the repo (e.g. mnist); override any field "
    "with --config.FIELD=VALUE"
)
_WORKDIR_HELP = "run directory; resumes if it has checkpoints (default: fresh runs/<config>-<time>)"
_REPORT_HELP = "write WORKDIR/report.html after training (--noreport to skip)"
_CHANGES_HELP = (
    "resume even when the config changes how the run trains (seed, learning rate, ...); "
    "the previous config is kept as WORKDIR/config.before-step-N.json"
)


def _resolve_config_argument(argv: list[str]) -> list[str]:
    """Let ``--config mnist`` / ``--config=mnist`` mean ``configs/mnist.py`` of the repo."""
    resolved = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        value = None
        if arg == "--config" and index + 1 < len(argv):
            value, index = argv[index + 1], index + 1
        elif arg.startswith("--config="):
            value = arg[len("--config=") :]
        if value is not None:
            path, _, option = value.partition(":")
            if not Path(path).exists() and (REPO_CONFIGS / f"{path}.py").exists():
                value = str(REPO_CONFIGS / f"{path}.py") + (f":{option}" if option else "")
            elif not Path(path).exists():
                names = ", ".join(sorted(p.stem for p in REPO_CONFIGS.glob("*.py")))
                raise ValueError(
                    f"--config={path!r} is neither a file nor a config of the repo; names: {names}"
                )
            arg = f"--config={value}"
        resolved.append(arg)
        index += 1
    return resolved


def _fresh_workdir(config_path: str) -> Path:
    stem = Path(config_path.partition(":")[0]).stem
    base = Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, suffix = base, 1
    while candidate.exists():
        candidate, suffix = Path(f"{base}-{suffix}"), suffix + 1
    return candidate


def _parse(argv: list[str]) -> flags.FlagValues:
    argv = _resolve_config_argument(argv)
    values = flags.FlagValues()
    with warnings.catch_warnings():
        # ml_collections loads config files with importlib's deprecated load_module(),
        # once for the default at definition time and again for --config.
        warnings.simplefilter("ignore", DeprecationWarning)
        config_flags.DEFINE_config_file(
            "config",
            default=str(DEFAULT_CONFIG),
            flag_values=values,
            sys_argv=[_PROG, *argv],
            help_string=_CONFIG_HELP,
        )
        flags.DEFINE_string(
            "workdir",
            None,
            _WORKDIR_HELP,
            flag_values=values,
        )
        flags.DEFINE_boolean("report", True, _REPORT_HELP, flag_values=values)
        flags.DEFINE_boolean("allow_config_changes", False, _CHANGES_HELP, flag_values=values)
        rest = values([_PROG, *argv])
    if len(rest) > 1:  # absl hands back what it did not parse: a typo must not train
        raise flags.Error(f"unexpected arguments {rest[1:]}; flags are --name=value")
    return values


def _valid_fields_of_unknown_override(argv: list[str]) -> str:
    """``; valid fields of config.optimizer: ...`` for the first override whose path the
    config lacks (ml_collections names only the missing key)."""
    try:
        node = _parse([arg for arg in argv if not arg.startswith("--config.")]).config
    except Exception:  # the config itself does not load: nothing to list
        return ""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        where = "config"
        for name in arg[len("--config.") :].partition("=")[0].split("."):
            if not hasattr(node, "keys") or name not in node:
                fields = sorted(node.keys()) if hasattr(node, "keys") else []
                return f"; valid fields of {where}: {', '.join(fields)}" if fields else ""
            node, where = node[name], f"{where}.{name}"
    return ""


def _one_line(error: BaseException) -> str:
    """The first and last lines of a message that carries a whole traceback (absl's
    "Error whilst parsing config file" does): what failed and why, not the stack."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    return f"{lines[0]} {lines[-1]}"


def _missing_field_message(error: BaseException) -> str:
    """ml_collections nests KeyError("'name'\\nDid you mean ...") in an AttributeError."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = str(error.args[0]) if error.args else str(error)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Run ``jaxcnn train``; returns the exit status (0 ok, 1 failed, 2 usage, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(__doc__)
        values = flags.FlagValues()
        flags.DEFINE_string("config", str(DEFAULT_CONFIG), _CONFIG_HELP, flag_values=values)
        flags.DEFINE_string("workdir", None, _WORKDIR_HELP, flag_values=values)
        flags.DEFINE_boolean("report", True, _REPORT_HELP, flag_values=values)
        flags.DEFINE_boolean("allow_config_changes", False, _CHANGES_HELP, flag_values=values)
        print(values.get_help())
        return 0
    try:
        values = _parse(argv)
        config = values.config
        config.keys()  # a config file that failed to load raises only when touched
    except (KeyError, AttributeError) as error:
        if not any(arg.startswith("--config.") for arg in argv):  # the file, not an override
            print(f"{_PROG}: the config file does not load: {error}", file=sys.stderr)
            return 2
        # ml_collections reports an override of a missing field as AttributeError(KeyError).
        print(
            f"{_PROG}: unknown config field in the overrides: {_missing_field_message(error)}"
            + (_valid_fields_of_unknown_override(argv) or "; see docs/training.md"),
            file=sys.stderr,
        )
        return 2
    except (flags.Error, OSError, TypeError, ValueError, SyntaxError) as error:
        print(f"{_PROG}: {_one_line(error)}", file=sys.stderr)
        return 2

    from jaxcnn.conv_backend import SwitchError
    from jaxcnn.data import DataError
    from jaxcnn.train import CheckpointMismatchError, ConfigError, NonFiniteLossError, fit

    config = values.config
    chosen = (
        Path(values.workdir) if values.workdir else _fresh_workdir(values["config"].config_filename)
    )
    workdir = chosen.absolute()
    print(f"workdir: {workdir}")
    try:
        result = fit(config, workdir, allow_config_changes=values.allow_config_changes)
    except ConfigError as error:  # a field's value: bad usage, as an unknown field is
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 2
    except (DataError, CheckpointMismatchError, NonFiniteLossError, SwitchError,
            OSError) as error:  # fmt: skip
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 1
    if result.interrupted:
        print(
            f"interrupted; checkpoint in {result.checkpoint_dir}; resume with the same command "
            f"and --workdir {workdir}"
        )
        return 130
    report_path = None
    if values.report:
        try:
            from jaxcnn import report
        except ImportError:
            report = None
        if report is not None:
            try:
                report_path = report.write_report(workdir)
            except (OSError, ValueError) as error:  # the run itself is done and saved
                print(f"{_PROG}: report not written ({error}); the run is complete")
    accuracy = result.test_metrics["test_accuracy"]
    single_view = result.test_metrics.get("test_accuracy_without_tta")
    if single_view is None:
        print(f"test accuracy: {accuracy:.4f}")
    else:
        print(
            f"test accuracy: {accuracy:.4f} (test-time augmentation {config.eval_tta}; "
            f"{single_view:.4f} without)"
        )
    print(f"checkpoint: {result.checkpoint_dir}")
    print(f"log: {result.metrics_path}")
    print(f"results: {result.results_path}")
    if report_path is not None:
        print(f"report: {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
