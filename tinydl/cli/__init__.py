"""The ``tinydl`` command.

Each sub-command lives in its own module ``tinydl/cli/<name>.py`` defining

* ``HELP``: a one-line summary,
* ``add_arguments(parser)``: its flags (``--json`` is added for every command here),
* ``run(args) -> int``: the work; it prints a human-readable result, or JSON with ``--json``.

Errors a user can fix (bad files, shapes, NaN, unknown profiles or backends, infeasible
budgets) are raised as :class:`CommandError` or a ``ValueError``/``TypeError``/``OSError`` and
printed as one line with exit status 2; nothing prints a traceback unless ``TINYDL_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import List, Optional

__all__ = ["main", "CommandError", "COMMANDS", "emit_json"]

#: sub-commands, in the order ``tinydl --help`` lists them
COMMANDS = ["demo", "devices", "calibrate", "plan", "fit", "evaluate", "predict", "compress",
            "reproduce", "export"]


class CommandError(Exception):
    """An error the user can act on; printed as one line, exit status 2."""


def emit_json(obj, dest: Optional[str]) -> None:
    """Write ``obj`` as JSON to ``dest`` (a path, or ``-`` for standard output)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    if dest in (None, "-"):
        print(text)
    else:
        from ..io import atomic_write_text
        atomic_write_text(dest, text + "\n")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``tinydl fit: error: ...``), exit status 2, like every
    other refusal; ``--help`` shows the usage."""

    def error(self, message):
        msg = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {msg} (see {self.prog} --help)\n")


def _build_parser(available: List[str]) -> argparse.ArgumentParser:
    from .. import __version__
    parser = _Parser(
        prog="tinydl",
        description="Deep learning on small devices: streaming sparse coding (TinyDL), "
                    "compression without retraining (SparseSep), and a hardware abstraction "
                    "layer with device profiles.")
    parser.add_argument("--version", action="version", version=f"tinydl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in available:
        mod = importlib.import_module(f"tinydl.cli.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        if not any("--json" in a.option_strings for a in p._actions):
            p.add_argument("--json", metavar="PATH", nargs="?", const="-", default=None,
                           help="write the result as JSON to PATH (or stdout with no PATH)")
        p.set_defaults(_run=mod.run)
    return parser


def _available_commands() -> List[str]:
    here = os.path.dirname(__file__)
    return [c for c in COMMANDS if os.path.exists(os.path.join(here, f"{c}.py"))]


def main(argv: Optional[List[str]] = None) -> int:
    parser = _build_parser(_available_commands())
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    import threading
    import warnings

    def one_line(message, category, filename, lineno, line=None):
        # a warning as one line of the command's own, not a source line of the entry script
        # (which also read that script into memory under --trace-memory)
        return f"tinydl {args.command}: warning: {message} [{category.__name__}]\n"
    before = warnings.formatwarning
    # process-wide: swapped by the main thread only (the command line's case), so that
    # commands run from threads of a host program cannot leave it behind
    if threading.current_thread() is threading.main_thread():
        warnings.formatwarning = one_line
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("tinydl: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, TypeError, OSError, LookupError, RuntimeError) as exc:
        if os.environ.get("TINYDL_DEBUG"):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"tinydl {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
