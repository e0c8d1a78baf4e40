# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What proves a restored cluster, and the marker rows that pin a drill's before and after on the source.

Each proof returns a check ``{"check", "ok", "detail"}`` (the report's ``verified`` entries) and never raises for
a failed proof: the drill records every check and fails on the first one that is not ok. Markers live in one
dedicated schema on the source (``pgdr_drill.markers``): the only thing a drill ever writes on a primary.
"""

from __future__ import annotations

import os

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run, telling_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line

MARKER_SCHEMA = "pgdr_drill"
MARKER_TABLE = "markers"


def plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def check(name, ok, detail, **more):
    return dict(more, check=name, ok=bool(ok), detail=detail)


# --- markers on the source -------------------------------------------------------------------------------


def ensure_markers(conn):
    """The marker table on the source (autocommit connection); the drill's one write there besides its rows."""
    from psycopg import sql  # pylint: disable=import-outside-toplevel  # psycopg is imported where a server is used

    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(MARKER_SCHEMA)))
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} (drill_id text NOT NULL, label text NOT NULL, "
                         "at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (drill_id, label))")
                 .format(sql.Identifier(MARKER_SCHEMA), sql.Identifier(MARKER_TABLE)))


def write_marker(conn, drill_id, label):
    """Insert a marker row (committed at once) and return (commit time as epoch seconds, the LSN after it)."""
    from psycopg import sql  # pylint: disable=import-outside-toplevel

    row = conn.execute(sql.SQL("INSERT INTO {}.{} (drill_id, label) VALUES (%s, %s) RETURNING extract(epoch FROM at)::float8")
                       .format(sql.Identifier(MARKER_SCHEMA), sql.Identifier(MARKER_TABLE)), (drill_id, label)).fetchone()
    lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    return float(row[0]), lsn


def remove_markers(conn, prefix):
    """Delete the marker rows whose drill id starts with ``prefix`` (this drill's, and an interrupted earlier one's)."""
    from psycopg import sql  # pylint: disable=import-outside-toplevel

    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", ("%s.%s" % (MARKER_SCHEMA, MARKER_TABLE),)).fetchone()[0]
    if not exists:
        return 0
    return conn.execute(sql.SQL("DELETE FROM {}.{} WHERE starts_with(drill_id, %s)").format(sql.Identifier(MARKER_SCHEMA), sql.Identifier(MARKER_TABLE)),
                        (prefix,)).rowcount


def markers_present(conn, drill_id):
    """{label: epoch} of the drill's markers the restored cluster holds; {} when the table is not there at all."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", ("%s.%s" % (MARKER_SCHEMA, MARKER_TABLE),)).fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute('SELECT label, extract(epoch FROM at)::float8 FROM "%s"."%s" WHERE drill_id = %%s' % (MARKER_SCHEMA, MARKER_TABLE),
                        (drill_id,)).fetchall()
    return {label: float(epoch) for label, epoch in rows}


def marker_check(present, expected, absent):
    """The check that the markers ``expected`` are there and ``absent`` are not."""
    missing = [label for label in expected if label not in present]
    extra = [label for label in absent if label in present]
    if missing or extra:
        parts = (["missing %s" % ", ".join(missing)] if missing else []) + (["present but written after the target: %s" % ", ".join(extra)] if extra else [])
        return check("markers", False, "marker rows: " + "; ".join(parts))
    return check("markers", True, "marker rows %s present, %s absent" % (", ".join(expected), ", ".join(absent) or "none"))


# --- the restored cluster -----------------------------------------------------------------------------------


def databases(conn):
    return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")]


def system_identifier(conn):
    return str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])


def identity_check(restored, expected, what):
    ok = expected is not None and restored == str(expected)
    detail = "system identifier %s %s %s%s" % (restored, "equals" if ok else "differs from", what, "" if ok else " (%s)" % expected)
    return check("system_identifier", ok, detail)


def tables_readable(connect, names):
    """Every ordinary table of every database read end to end: each row turned into text, which reads every heap page
    and every TOAST value (an index or a visibility map cannot answer it). ``connect(dbname)``: a connection."""
    tables, rows = 0, 0
    for name in names:
        conn = connect(name)
        try:
            listed = conn.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                  "WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                                  "AND n.nspname NOT LIKE 'pg_toast%' AND c.relpersistence <> 't' ORDER BY 1").fetchall()
            conn.execute("SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off")
            for (table,) in listed:
                try:
                    counted = conn.execute("SELECT count(*), coalesce(sum(length(t::text)), 0) FROM ONLY %s AS t" % table).fetchone()
                except Exception as exc:  # pylint: disable=broad-exception-caught  # the failure is the proof's answer
                    return check("tables_readable", False, "table %s in database %s cannot be read: %s" % (table, name, first_line(exc)))
                tables += 1
                rows += int(counted[0])
        finally:
            conn.close()
    detail = "%s in %s read end to end (%s)" % (plural(tables, "table"), plural(len(names), "database"), plural(rows, "row"))
    return check("tables_readable", True, detail, tables=tables, rows=rows)


def amcheck(bin_dir, connection, heapallindexed, as_owner):
    """pg_amcheck over every database (installing amcheck where it is missing: the copy is thrown away afterwards)."""
    argv = [os.path.join(bin_dir, "pg_amcheck"), "--all", "--install-missing", "--no-password",
            "-h", connection["host"], "-p", connection["port"], "-U", connection["user"]]
    if heapallindexed:
        argv.append("--heapallindexed")
    try:
        result = run(as_owner(argv), check=False, timeout=3600)
    except PgdrError as exc:
        return check("amcheck", False, "pg_amcheck could not run: %s" % exc.msg)
    if result.returncodes[0] != 0:
        return check("amcheck", False, "pg_amcheck found corruption or failed: %s" % telling_line(result.stdout + result.stderr))
    return check("amcheck", True, "pg_amcheck --all%s: no corruption" % (" --heapallindexed" if heapallindexed else ""))
