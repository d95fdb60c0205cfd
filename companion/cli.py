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
    "companion.tiny",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
