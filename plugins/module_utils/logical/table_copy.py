# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table backups (``pg_logical_dump mode: table``): COPY per table, on one exported snapshot.

One REPEATABLE READ transaction exports its snapshot; every worker opens its own
connection, imports that snapshot with ``SET TRANSACTION SNAPSHOT``, COPYs one
table TO STDOUT through the compression/encryption stages into the set and
fingerprints the same table in the same transaction. ``schema.sql``
(``pg_dump --schema-only`` of those tables and their partition ancestors) is
taken on the same snapshot.

Table restores (from table sets or database sets) are ``table_restore.TableRestore``.
"""

from __future__ import annotations

from ansible_collections.pgdr.backup.plugins.module_utils.core import compression, encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.identifiers import display_ident, qualified, split_table
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by the module
    psycopg = sql = None

COPY_FORMATS = {"csv": ".csv", "text": ".txt", "binary": ".bin"}

SKIP_REASONS = {
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
    "c": "composite type",
    "i": "index",
    "I": "partitioned index",
}

_RELATION = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition,
       EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS d
               WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
"""


# --- pure helpers (unit-tested) --------------------------------------------------------


def _safe(name):
    from urllib.parse import quote

    return quote(name, safe="").replace(".", "%2E")


def data_file_name(schema, table, copy_format, compression_method, encryption_method):
    """tables/<schema>/<table>.<ext>[.gz][.gpg]; every name percent-quoted (never a path, never '.')."""
    return "tables/%s/%s%s%s%s" % (_safe(schema), _safe(table), COPY_FORMATS[copy_format],
                                   compression.SUFFIX[compression_method], encryption.SUFFIX[encryption_method])


def query_file_name(name, copy_format, compression_method, encryption_method):
    return "queries/%s%s%s%s" % (_safe(name), COPY_FORMATS[copy_format],
                                 compression.SUFFIX[compression_method], encryption.SUFFIX[encryption_method])


def copy_options(copy_format):
    """The COPY option list for a format: csv and text in UTF8 whatever the client encoding."""
    if copy_format == "binary":
        return sql.SQL("(FORMAT binary)")
    return sql.SQL("(FORMAT {}, ENCODING 'UTF8')").format(sql.SQL(copy_format))


def pattern(schema, table):
    """An exact schema.table as a pg_dump --table pattern (wildcards are literal inside double quotes)."""
    return "%s.%s" % tuple('"%s"' % part.replace('"', '""') for part in (schema, table))


# --- backup ---------------------------------------------------------------------------


def resolve(conn, tables=None, schemas=None):
    """What a table backup holds: (leaves [(schema, table)], schema objects [(schema, table)], skipped [{name, reason}]).

    Named partitioned tables become their leaf partitions; views, materialized views,
    foreign and temporary tables are skipped with a reason; a name that does not exist fails.
    ``schema objects`` are the tables plus their partition ancestors (for schema.sql).
    """
    leaves, objects, skipped = [], [], []

    def add(pair, into):
        if pair not in into:
            into.append(pair)

    def take(row, named):
        oid, schema, table, kind, persistence, is_partition, in_extension = row
        name = qualified(schema, table)
        if persistence == "t":
            skipped.append({"name": name, "reason": "temporary table"})
        elif in_extension:
            skipped.append({"name": name, "reason": "belongs to an extension"})
        elif kind == "p":
            for leaf in conn.execute(_RELATION + " JOIN pg_catalog.pg_partition_tree(%s) AS p ON p.relid = c.oid "
                                                 "WHERE p.isleaf AND c.relkind = 'r' ORDER BY 2, 3", [oid]).fetchall():
                take_leaf(leaf)
            if not named:
                skipped.append({"name": name, "reason": "partitioned table: its partitions are exported"})
        elif kind == "r":
            take_leaf(row)
        else:
            skipped.append({"name": name, "reason": SKIP_REASONS.get(kind, "relation kind %s" % kind)})

    def take_leaf(row):
        oid, schema, table = row[0], row[1], row[2]
        add((schema, table), leaves)
        if row[5]:  # a partition: schema.sql needs its ancestors
            for anc in conn.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_ancestors(%s) AS a "
                                    "JOIN pg_catalog.pg_class AS c ON c.oid = a.relid "
                                    "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE a.relid <> %s",
                                    [oid, oid]).fetchall():
                add(tuple(anc), objects)
        add((schema, table), objects)

    for text in tables or []:
        schema, table = split_table(text)
        row = conn.execute(_RELATION + " WHERE n.nspname = %s AND c.relname = %s", [schema, table]).fetchone()
        if row is None:
            raise PgdrError("table %s does not exist in database %s; check the name (schema.table, exact case)"
                            % (qualified(schema, table), conn.info.dbname))
        take(row, named=True)
    for schema in schemas or []:
        if conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]).fetchone() is None:
            raise PgdrError("schema %s does not exist in database %s" % (display_ident(schema), conn.info.dbname))
        rows = conn.execute(_RELATION + " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                                        "ORDER BY c.relname", [schema]).fetchall()
        for row in rows:
            if row[3] == "r" and row[5]:
                # a partition: exported with its parent when the parent is in this schema too
                parent_here = conn.execute("SELECT n.nspname = %s FROM pg_catalog.pg_inherits AS i "
                                           "JOIN pg_catalog.pg_class AS c ON c.oid = i.inhparent "
                                           "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE i.inhrelid = %s",
                                           [schema, row[0]]).fetchone()
                if parent_here and parent_here[0]:
                    continue
            take(row, named=False)
    return leaves, objects, skipped


def estimate_bytes(conn, tables):
    total = 0
    for schema, table in tables:
        total += conn.execute("SELECT pg_catalog.pg_table_size(c.oid) FROM pg_catalog.pg_class AS c "
                              "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = %s AND c.relname = %s", [schema, table]).fetchone()[0] or 0
    return int(total)


class _CopyReader:
    """A file-like ``read()`` over a psycopg COPY TO STDOUT, for a pipeline's stdin feeder."""

    def __init__(self, copy):
        self.copy = copy
        self.error = None

    def read(self, _size=-1):
        try:
            return bytes(self.copy.read())
        except Exception as exc:
            self.error = exc
            raise


def copy_out(conn, statement, writer, relpath, stages, entry):
    """COPY ... TO STDOUT streamed through ``stages`` into one file of the set; returns the rows copied."""
    with conn.cursor() as cur:
        with cur.copy(statement) as copy:
            argvs = stages.after()
            if not argvs:
                with writer.open_file(relpath, **entry) as handle:
                    for chunk in copy:
                        handle.write(chunk)
            else:
                reader = _CopyReader(copy)
                try:
                    with writer.open_file(relpath, **entry) as handle:
                        run_pipeline(argvs, stdin_reader=reader, sink=handle.write)
                except PgdrError:
                    if reader.error is not None:
                        raise PgdrError("COPY of %s failed: %s" % (relpath, first_line(reader.error))) from None
                    raise
                if reader.error is not None:
                    raise PgdrError("COPY of %s failed: %s" % (relpath, first_line(reader.error)))
        return cur.rowcount


def set_role(conn, role):
    """SET ROLE on a session the module reads with (session_role), as pg_dump --role does for its own."""
    if role:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


class TableJob:
    def __init__(self, schema=None, table=None, query=None, name=None):
        self.schema, self.table, self.query, self.name = schema, table, query, name


def copy_job(ctx, snapshot_id, database, job, copy_format, want_fingerprint):
    """One table or query: own connection, the shared snapshot, COPY out, then the fingerprint."""
    conn = ctx.conn_params.connect(database, autocommit=True)
    stages = ctx.stages
    try:
        set_role(conn, ctx.options.session_role)  # as the exporting session did, and pg_dump --role
        fingerprint.begin_snapshot(conn, snapshot_id)
        entry = dict(role="table" if job.query is None else "query", format=copy_format,
                     compression=stages.manifest_compression(), encryption=stages.manifest_encryption(), database=database)
        if job.query is None:
            fingerprint.apply_session_settings(conn)  # fixed text output (UTC, ISO dates, exact floats)
            statement = sql.SQL("COPY {}.{} TO STDOUT {}").format(sql.Identifier(job.schema), sql.Identifier(job.table),
                                                                  copy_options(copy_format))
            relpath = data_file_name(job.schema, job.table, copy_format, stages.compression["method"], stages.encryption_method)
            entry.update(schema=job.schema, table=job.table)
        else:
            # the query is the playbook author's own SQL: it is the one thing taken as text
            statement = sql.SQL("COPY ({}) TO STDOUT {}").format(sql.SQL(job.query), copy_options(copy_format))
            relpath = query_file_name(job.name, copy_format, stages.compression["method"], stages.encryption_method)
            entry.update(table=job.name)
        try:
            rows = copy_out(conn, statement, ctx.writer, relpath, stages, entry)
        except psycopg.Error as exc:
            what = "query %s" % job.name if job.query is not None else "table %s" % qualified(job.schema, job.table)
            raise PgdrError("COPY of %s failed: %s" % (what, first_line(exc))) from None
        fp = None
        if job.query is None and want_fingerprint:
            (fp,) = fingerprint.table_fingerprints(conn, database, [(job.schema, job.table)])
            if fp["rows"] != rows:
                raise PgdrError("table %s: COPY wrote %d rows but the snapshot holds %d; this is a bug"
                                % (qualified(job.schema, job.table), rows, fp["rows"]))
        return dict(path=relpath, rows=rows, fingerprint=fp)
    finally:
        conn.close()


def dump_schema(ctx, env, snapshot_id, objects):
    """schema.sql: pg_dump --schema-only of the tables and their partition ancestors, on the snapshot; returns (name, argv run)."""
    argv = [ctx.pg_dump, "--format=plain", "--schema-only", "--no-password", "--snapshot=%s" % snapshot_id]
    if ctx.options.session_role:
        argv.append("--role=%s" % ctx.options.session_role)
    argv += ["--table=%s" % pattern(schema, table) for schema, table in objects]
    name = "schema.sql%s%s" % (compression.SUFFIX[ctx.stages.compression["method"]], encryption.SUFFIX[ctx.stages.encryption_method])
    with ctx.writer.open_file(name, role="schema", format="plain", compression=ctx.stages.manifest_compression(),
                              encryption=ctx.stages.manifest_encryption(), database=env["PGDATABASE"]) as handle:
        run_pipeline([argv] + ctx.stages.after(), env=env, sink=handle.write)
    return name, argv
