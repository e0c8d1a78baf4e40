"""`python -m tests.lab up|down|status|inventory` (non-interactive; CI has no stdin)."""

import argparse
import sys

from . import control
from .state import Paths
from .system import LabError
from .topology import fleet_pairs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description="The pgdr test lab: real hosts in namespaces on this machine.")
    parser.add_argument("command", choices=["up", "down", "status", "inventory"])
    parser.add_argument("--project-dir", default=None, help="checkout root (default: the one holding this package)")
    parser.add_argument("--fleet-pairs", default=None, metavar="N",
                        help="up: small primary/replica pairs to run (default: $PGDR_LAB_FLEET_PAIRS, else 3; 0 to 32)")
    args = parser.parse_args(argv)
    paths = Paths(args.project_dir)
    if args.command == "up":
        try:
            pairs = fleet_pairs(given=args.fleet_pairs)
        except ValueError as exc:
            print("lab: error: %s" % exc, file=sys.stderr)
            return 2
    try:
        if args.command == "up":
            control.up(paths, pairs)
            return 0
        if args.command == "down":
            control.down(paths)
            return 0
        if args.command == "status":
            return control.status(paths)
        if not paths.inventory.exists():
            print("lab: no inventory (run `make lab-up`)", file=sys.stderr)
            return 1
        print(paths.inventory)
        return 0
    except LabError as exc:
        print("lab: error: %s" % exc, file=sys.stderr)
        if args.command == "up":
            print("lab: the partial lab is recorded; `make lab-up` retries, `make lab-down` removes it", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
