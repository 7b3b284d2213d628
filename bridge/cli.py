"""`stembridge` command line: a thin layer over the command modules in `bridge.commands`.

Exit codes: 0 ok, 1 user-facing error (one line on stderr), 2 usage, 3 start-up failure,
130 interrupted. Tracebacks only with --verbose.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from bridge import __version__
from bridge.allocator import keep_freed_memory
from bridge.errors import StemBridgeError

# Each module under bridge/commands defines NAME, HELP, add_arguments(parser), run(args) -> int.
COMMANDS: tuple[str, ...] = (
    "separate",
    "models",
    "doctor",
    "serve",
    "status",
    "preview",
    "send",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stembridge",
        description="Split DAW bounces into sample-aligned stems and hand them back to the DAW.",
    )
    parser.add_argument("--version", action="version", version=f"stembridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"bridge.commands.{module_name}")
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="debug logging and tracebacks")
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before any thread starts: separation then reuses its memory instead of refaulting it.
    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "stembridge: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except StemBridgeError as exc:
        if verbose:
            logging.exception("failed")
        print(f"stembridge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stembridge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
