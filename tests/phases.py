"""The three phases of `make integration`, and the marks that put a test in one.

1. Unmarked tests only touch objects of their own (a database with a random name, a repository folder, a
   throwaway cluster on another port): they run two at a time, whole files per worker.
2. ``exclusive`` tests change what other tests on the same PostgreSQL version rely on (restart its primary,
   replace its replica's cluster, scan every database of a cluster). They run after phase 1, two at a time
   again, but each worker takes one version: every exclusive test carries the group of the version whose hosts
   it uses (``ON_PG15``/``ON_PG18``, or parameters from ``one_per_version``), which conftest enforces.
3. ``alone`` tests change what every test relies on (stop the object store, use both versions' hosts at once):
   they run last, one by one.
"""

import pytest

ON_PG15 = pytest.mark.xdist_group("pg15")
ON_PG18 = pytest.mark.xdist_group("pg18")
_GROUPS = {"15": ON_PG15, "18": ON_PG18}


def one_per_version(values):
    """Parameters whose names end in a major version ("primary15", "18"), each in its version's group."""
    return [pytest.param(value, marks=_GROUPS[value[-2:]]) for value in values]
