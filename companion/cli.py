"""One command-line entry point: ``python -m companion <command>`` (also the ``companion`` script).

Each topic module that offers a command defines ``register_cli(subparsers)``, which adds its
sub-parser and sets ``func`` to the function that runs it. Add the module's name below.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "companion.generate",
    "companion.evaluate",
    "companion.scaling",
    "companion.refine",
    "companion.tiny",
    "companion.rl.cli",
    "companion.pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="companion",
        description="Reasoning models from scratch: generation, evaluation, inference-time scaling, RL.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_cli(subparsers)
    return parser


# Errors caused by the user's input (a wrong path, a bad file, an unsupported config): print the
# message, not a traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, KeyError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"companion {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"companion {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
