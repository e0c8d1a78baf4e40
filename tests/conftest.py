"""Make `ansible_collections.pgdr.backup` importable from this checkout."""

import os
import sys

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_DIR = os.path.join(PROJECT_DIR, ".collections")

if not os.path.isdir(os.path.join(COLLECTIONS_DIR, "ansible_collections", "pgdr", "backup")):
    raise RuntimeError("run `make collection` first: %s is missing" % COLLECTIONS_DIR)
if COLLECTIONS_DIR not in sys.path:
    sys.path.insert(0, COLLECTIONS_DIR)
