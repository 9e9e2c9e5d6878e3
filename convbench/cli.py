"""Command line: ``python -m convbench run|list|report|compare``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convbench")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="algorithms by device")
    args = parser.parse_args(argv)
    if args.command == "list":
        from . import registry

        for a in registry.algorithms():
            print(f"{a.op:12s} {a.device:5s} {a.name:14s} {'peer' if a.is_peer else 'ours'}  {a.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
