# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table names as users write them, and as messages show them.

Nothing here builds SQL: statements quote with psycopg's ``sql.Identifier``. These helpers only split a
user's ``schema.table`` and print an identifier the way psql would, so messages name tables unambiguously.
"""

from __future__ import annotations

import re

_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")


def split_table(text):
    """'schema.table' -> (schema, table); a bare name is in public. The first dot separates."""
    schema, dot, table = text.partition(".")
    return (schema, table) if dot else ("public", schema)


def display_ident(name):
    """An identifier as psql shows it: bare when it needs no quotes. For messages only, never for SQL."""
    if _PLAIN.match(name):
        return name
    return '"%s"' % name.replace('"', '""')


def qualified(schema, table):
    """schema.table for messages only (never for SQL)."""
    return "%s.%s" % (display_ident(schema), display_ident(table))
