# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-table row counts and content fingerprints, taken in the same snapshot as a dump.

Method ``hash64-sum-v2`` (the default): for every row, the text of a record
of the table's columns **in the byte order of their names** (``ROW(t.a, t.b,
...)::text``, e.g. ``(1,"a b",)``; dropped columns are not columns) is hashed
with ``hashtextextended(text COLLATE "C", 0)``, PostgreSQL's own 64-bit hash
of the text's bytes (the one hash partitioning relies on, so it does not change
between major versions); the fingerprint is the exact sum of those signed
64-bit integers over the table (``sum(bigint)``, a numeric), written in decimal, next to the row
count. Name order, because column positions do not survive a dump: pg_dump
recreates an inheritance child with its inherited columns first (docs/backup-sets.md).
``hash64-sum-v1`` (the whole row in column position
order, ``(t.*)::text``) and ``md5-sum64-v1`` (v1 with the first 64 bits of
each row's md5) are still computed when a manifest recorded them; md5 costs
about 2.5 times as much. So:

* row order does not matter (a sum), and identical duplicate rows do count
  (a sum, not xor, which would cancel them);
* NULL and the empty string differ: a composite prints NULL as nothing and ''
  as ``""`` (``(1,)`` vs ``(1,"")``);
* the text of every type is made the same on every server and version by
  SESSION_SETTINGS (time zone, date/interval style, float digits, bytea
  output, money locale, search_path for reg* types), so a backup taken on
  PostgreSQL 15 and restored on 18 compares equal;
* the hash covers the bytes in the database encoding: compare databases of the
  same encoding (pg_dump/pg_restore with --create keeps it), on servers of the
  same byte order (hashtextextended differs between little- and big-endian
  machines; every mainstream platform is little-endian);
* ``FROM ONLY``: an inheritance parent counts its own rows, as pg_dump dumps them;
  partitioned parents are skipped (their rows are in the leaf partitions).

Cost: a full sequential scan of every table, the text of each row and a hash
of it. It is CPU-bound on the server and costs about as much as COPYing the data
out (without sending it anywhere): 7 s for the 7 million rows of pgbench scale 70,
against 18 s with md5 (docs/performance.md); on a busy server run it with the dump, in the
dump's snapshot, on a replica if possible. ``fingerprint: false`` turns it off.
"""

from __future__ import annotations

import hashlib
import re

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.identifiers import qualified

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by the module through HAS_PSYCOPG
    psycopg = sql = None

# What new backups record (sets.backup_set.FINGERPRINT_METHODS lists every method a manifest may name).
METHOD = "hash64-sum-v2"
_HASH64 = "pg_catalog.hashtextextended({row} COLLATE \"C\", 0)"
_MD5_64 = "('x' || pg_catalog.substr(pg_catalog.md5({row}), 1, 16))::bit(64)::bigint"
# What each method sums over the rows; {row} is the row's text.
METHODS = {
    "hash64-sum-v2": _HASH64,
    "hash64-sum-v1": _HASH64,
    "md5-sum64-v1": _MD5_64,
}
# Methods whose row text is a record of the columns in name order; the others use (t.*)::text, position order.
BY_NAME = frozenset({"hash64-sum-v2"})

# Applied with set_config(..., is_local => true): they last until the end of the
# fingerprint transaction. Each one fixes the text output of some types.
SESSION_SETTINGS = (
    ("TimeZone", "UTC"),  # timestamptz
    ("DateStyle", "ISO, YMD"),  # date, timestamp, timestamptz
    ("IntervalStyle", "postgres"),  # interval
    ("extra_float_digits", "1"),  # float4/float8/geometric: shortest exact text (PostgreSQL 12+)
    ("bytea_output", "hex"),  # bytea
    ("lc_monetary", "C"),  # money (currency symbol, separators)
    ("search_path", ""),  # regclass/regtype/...: always schema-qualified; no shadowing of pg_catalog
    ("row_security", "off"),  # as pg_dump: fail rather than silently count only the rows a policy shows
    ("statement_timeout", "0"),  # as pg_dump: a big table must not time out half way
)

_SNAPSHOT_RE = re.compile(r"^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$")

_LIST_TABLES = """
SELECT n.nspname, c.relname, c.relpersistence
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence IN ('p', 'u')
  AND n.nspname !~ '^pg_'
  AND n.nspname <> 'information_schema'
  AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_depend AS d
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e'
  )
ORDER BY n.nspname, c.relname
"""


_COLUMNS = """
SELECT a.attname
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attname COLLATE "C"
"""


def _check_method(method):
    if method not in METHODS:
        raise PgdrError("fingerprint method %r is not known to this pgdr.backup (known: %s); upgrade the collection"
                        % (method, ", ".join(sorted(METHODS))))


def fingerprint_query(schema, table, method=METHOD, columns=None):
    """The statement that returns (row count, fingerprint text) of one table.

    Functions are schema-qualified and the table is read with ONLY (its own
    rows, not those of inheritance children). A by-name method (BY_NAME)
    needs ``columns``, the table's column names in name order (table_columns);
    its row is ``ROW(t.col, ...)``, column references qualified by the alias,
    so a column named t is still that column. A position method reads
    ``(t.*)`` rather than ``t``: a bare ``t`` would mean a column if the table
    had one named t.
    """
    _check_method(method)
    if method in BY_NAME:
        if columns is None:
            raise PgdrError("fingerprint method %s needs the table's column names (table_columns)" % method)
        row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns))
    else:
        row = sql.SQL("(t.*)::text")
    per_row = sql.SQL(METHODS[method]).format(row=row)
    # sum(bigint) is already exact (a numeric result, accumulated in 128 bits): the same text as summing the values
    # cast to numeric, at about three quarters of the server's time
    return sql.SQL(
        "SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum({per_row}), 0)::text FROM ONLY {schema}.{table} AS t"
    ).format(per_row=per_row, schema=sql.Identifier(schema), table=sql.Identifier(table))


def table_columns(conn, schema, table):
    """The names of a table's live columns (not dropped ones), in byte order of the name: the order by-name methods hash in.

    Byte order (COLLATE "C") of the name in the database's encoding, the same after any restore into a database of
    that encoding, whatever positions the columns have there.
    """
    return [row[0] for row in conn.execute(_COLUMNS, (schema, table)).fetchall()]


def fingerprint_of_row_texts(row_texts):
    """The md5-sum64-v1 (rows, fingerprint) of rows given as their composite text (UTF-8).

    The same arithmetic the server does for that method; used by tests and for documentation.
    """
    total = 0
    rows = 0
    for text in row_texts:
        prefix = int(hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:16], 16)
        total += prefix - (1 << 64) if prefix >= (1 << 63) else prefix
        rows += 1
    return rows, str(total)


def apply_session_settings(conn):
    """Set SESSION_SETTINGS for the rest of the current transaction."""
    calls = ", ".join(["pg_catalog.set_config(%s, %s, true)"] * len(SESSION_SETTINGS))
    params = [item for pair in SESSION_SETTINGS for item in pair]
    conn.execute("SELECT " + calls, params)


def _transaction_status(conn):
    return conn.info.transaction_status


def begin_snapshot(conn, snapshot=None):
    """Start a REPEATABLE READ, READ ONLY transaction on ``conn``, importing ``snapshot`` if given.

    Without ``snapshot`` the transaction's own snapshot is taken by its first
    query; export it with export_snapshot() for pg_dump --snapshot.
    """
    if _transaction_status(conn) != psycopg.pq.TransactionStatus.IDLE:
        raise PgdrError("cannot start the snapshot transaction: the connection is already in a transaction; commit or roll it back first")
    if snapshot is not None and not (isinstance(snapshot, str) and _SNAPSHOT_RE.match(snapshot)):
        raise PgdrError("%r is not a snapshot id such as 00000003-0000001B-1 (from pg_export_snapshot())" % (snapshot,))
    if conn.autocommit:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    else:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
    if snapshot is not None:
        try:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        except psycopg.Error as exc:
            raise PgdrError(
                "cannot import snapshot %s: %s; the exporting transaction must still be open on the same server and database"
                % (snapshot, first_line(exc))
            ) from None
    else:
        conn.execute("SELECT 1")  # take the snapshot now


def export_snapshot(conn):
    """pg_export_snapshot() of the current transaction (for pg_dump --snapshot)."""
    return conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]


def require_snapshot_transaction(conn):
    """Raise unless ``conn`` is inside a REPEATABLE READ or SERIALIZABLE transaction."""
    isolation = conn.execute("SELECT pg_catalog.current_setting('transaction_isolation')").fetchone()[0]
    if isolation not in ("repeatable read", "serializable") or _transaction_status(conn) != psycopg.pq.TransactionStatus.INTRANS:
        raise PgdrError(
            "table fingerprints must be taken inside one REPEATABLE READ transaction (the dump's snapshot), "
            "but the connection is in %s%s; start it with begin_snapshot()"
            % (isolation, "" if _transaction_status(conn) == psycopg.pq.TransactionStatus.INTRANS else " autocommit")
        )


def list_tables(conn, schemas=None, tables=None, include_unlogged=None):
    """[(schema, table)] whose rows a dump holds, sorted.

    Ordinary tables and leaf partitions (relkind 'r'); not partitioned parents
    (their rows are in the partitions), views, materialized views, foreign
    tables, temporary tables, system schemas or tables that belong to an
    extension. Unlogged tables are included unless the server is a standby
    (they cannot be read there, and pg_dump skips their data there too);
    ``include_unlogged`` forces the choice. ``schemas`` keeps only those
    schemas; ``tables`` keeps only those (schema, table) pairs.
    """
    if include_unlogged is None:
        include_unlogged = not conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]
    wanted = None if tables is None else {tuple(pair) for pair in tables}
    schema_set = None if schemas is None else set(schemas)
    found = []
    for schema, table, persistence in conn.execute(_LIST_TABLES).fetchall():
        if persistence == "u" and not include_unlogged:
            continue
        if schema_set is not None and schema not in schema_set:
            continue
        if wanted is not None and (schema, table) not in wanted:
            continue
        found.append((schema, table))
    return found


def table_fingerprints(conn, database, tables, method=METHOD):
    """[{database, schema, table, rows, fingerprint, fingerprint_method}] of ``tables`` in the current transaction.

    ``method`` is METHOD for a backup; a verification passes the method its manifest recorded.

    The caller has opened a REPEATABLE READ transaction in the dump's snapshot
    (begin_snapshot, then export_snapshot for pg_dump, or begin_snapshot with
    the snapshot pg_dump exported). ``database`` is the name recorded in the
    entries (the source database; defaults to the connection's).
    """
    require_snapshot_transaction(conn)
    apply_session_settings(conn)
    database = database or conn.info.dbname
    _check_method(method)
    results = []
    for schema, table in tables:
        try:
            columns = table_columns(conn, schema, table) if method in BY_NAME else None
            rows, fingerprint = conn.execute(fingerprint_query(schema, table, method, columns)).fetchone()
        except psycopg.Error as exc:
            advice = "turn fingerprints off (fingerprint: false) or leave the table out"
            if "row-level security" in str(exc):
                advice = "give the backup role BYPASSRLS (pgdr.backup.role_grants bypassrls: true) so every row is read, or " + advice
            elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
                advice = "grant the backup role read access (pgdr.backup.role_grants profile logical), or " + advice
            raise PgdrError(
                "cannot fingerprint table %s in database %s: %s; %s" % (qualified(schema, table), database, first_line(exc), advice),
                table=qualified(schema, table),
                database=database,
            ) from None
        results.append({
            "database": database,
            "schema": schema,
            "table": table,
            "rows": int(rows),
            "fingerprint": fingerprint,
            "fingerprint_method": method,
        })
    return results


def recorded_method(entries):
    """The one fingerprint method ``entries`` (a manifest's tables) were taken with; a verification must use it."""
    methods = {entry["fingerprint_method"] for entry in entries}
    if len(methods) > 1:
        raise PgdrError("the manifest mixes fingerprint methods (%s); it was not written by pgdr.backup" % ", ".join(sorted(methods)))
    return methods.pop() if methods else METHOD


# --- comparing ------------------------------------------------------------------------


def _index(entries, what, database_map=None):
    indexed = {}
    for entry in entries:
        database = entry["database"]
        if database_map:
            database = database_map.get(database, database)
        key = (database, entry["schema"], entry["table"])
        if key in indexed:
            raise PgdrError("table %s of database %s is listed twice in the %s fingerprints" % (qualified(key[1], key[2]), key[0], what))
        indexed[key] = entry
    return indexed


def mismatch(expected, actual):
    """What is wrong with one restored table against its manifest entry: 'missing', 'rows differ',
    'content differs', or None when rows and fingerprint match."""
    if actual is None:
        return "missing"
    if actual["rows"] != expected["rows"]:
        return "rows differ"
    if actual["fingerprint"] != expected["fingerprint"]:
        return "content differs"
    return None


def compare(expected, actual, database_map=None):
    """Mismatches between two fingerprint lists (e.g. a manifest's tables and a restored database's).

    ``database_map`` maps an expected (source) database name to the actual one
    (a restore into a scratch database). Returns a list sorted by table of
    {database, schema, table, expected_rows, actual_rows, expected_fingerprint,
    actual_fingerprint, problem} where problem is 'missing' (expected, not
    found), 'extra' (found, not expected), 'method differs', 'rows differ' or
    'content differs'; ``database`` is the expected (source) name. Empty: all match.
    """
    database_map = dict(database_map or {})
    reverse = {target: source for source, target in database_map.items()}
    wanted = _index(expected, "expected", database_map)
    found = _index(actual, "actual")
    mismatches = []
    for key in sorted(set(wanted) | set(found)):
        exp, act = wanted.get(key), found.get(key)
        if exp is None:
            problem = "extra"
        elif act is not None and exp["fingerprint_method"] != act["fingerprint_method"]:
            problem = "method differs"
        else:
            problem = mismatch(exp, act)
        if problem is None:
            continue
        mismatches.append({
            "database": exp["database"] if exp else reverse.get(key[0], key[0]),
            "schema": key[1],
            "table": key[2],
            "expected_rows": exp["rows"] if exp else None,
            "actual_rows": act["rows"] if act else None,
            "expected_fingerprint": exp["fingerprint"] if exp else None,
            "actual_fingerprint": act["fingerprint"] if act else None,
            "problem": problem,
        })
    return mismatches


def summary(expected, actual, mismatches):
    """Counts and a one-line text for a comparison's result (for module results and drill reports)."""
    counts = {}
    for item in mismatches:
        counts[item["problem"]] = counts.get(item["problem"], 0) + 1
    matched = len(expected) - sum(n for problem, n in counts.items() if problem != "extra")
    result = {
        "ok": not mismatches,
        "tables_expected": len(expected),
        "tables_actual": len(actual),
        "matched": matched,
        "missing": counts.get("missing", 0),
        "extra": counts.get("extra", 0),
        "method_differs": counts.get("method differs", 0),
        "rows_differ": counts.get("rows differ", 0),
        "content_differs": counts.get("content differs", 0),
        "rows_expected": sum(entry["rows"] for entry in expected),
        "rows_actual": sum(entry["rows"] for entry in actual),
    }
    if not mismatches:
        result["text"] = "all %d tables match (%d rows)" % (len(expected), result["rows_expected"])
    else:
        parts = ["%d %s" % (n, problem) for problem, n in sorted(counts.items())]
        result["text"] = "%d of %d expected tables match; %s; %s" % (matched, len(expected), ", ".join(parts), describe_mismatches(mismatches))
    return result


def describe_mismatches(mismatches, limit=3):
    """One line naming how many tables do not match and the first ``limit`` of them, e.g.
    '8 tables do not match: public.a (content differs), public.b (rows differ), public.c (missing) and 5 more'.

    The database is named with each table only when the mismatches span several databases.
    """
    if not mismatches:
        return "all tables match"
    several = len({item["database"] for item in mismatches}) > 1
    named = ["%s%s (%s)" % (qualified(item["schema"], item["table"]), " in database %s" % item["database"] if several else "", item["problem"])
             for item in mismatches[:limit]]
    more = " and %d more" % (len(mismatches) - limit) if len(mismatches) > limit else ""
    return "%d table%s %s not match: %s%s" % (
        len(mismatches), "" if len(mismatches) == 1 else "s", "does" if len(mismatches) == 1 else "do", ", ".join(named), more)
