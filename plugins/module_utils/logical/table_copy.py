# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table backups (COPY per table) and table restores (from table sets or database sets).

Backup (``pg_logical_dump mode: table``): one REPEATABLE READ transaction
exports its snapshot; every worker opens its own connection, imports that
snapshot with ``SET TRANSACTION SNAPSHOT``, COPYs one table TO STDOUT through
the compression/encryption stages into the set and fingerprints the same table
in the same transaction. ``schema.sql`` (``pg_dump --schema-only`` of those
tables and their partition ancestors) is taken on the same snapshot.

Restore (``restore_cluster tables: / schemas:`` or a ``logical-table`` set):
the set is loaded into a scratch database created from template0 and the
selected tables are verified there against the manifest; only then is the
target touched. ``rename`` moves a renamed copy (``pg_dump -Fc -t`` piped into
``pg_restore --single-transaction``); ``replace`` truncates and reloads the
existing tables in one transaction, recomputes their fingerprints inside it and
rolls back unless they match. The scratch database is always dropped.
"""

from __future__ import annotations

import uuid

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
CONFLICTS = ("error", "rename", "replace")

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


def select_tables(manifest_tables, database, tables=None, schemas=None):
    """The manifest's (schema, table) pairs of ``database`` chosen by ``tables`` (schema.table) and ``schemas``.

    Nothing chosen means all. A name that is not in the set is an error that lists what is.
    """
    available = [(t["schema"], t["table"]) for t in manifest_tables if t["database"] == database]
    if not tables and not schemas:
        return available
    chosen = []
    for text in tables or []:
        pair = split_table(text)
        if pair not in available:
            raise PgdrError("table %s is not in the backup set (database %s holds %d tables%s); partitioned tables are "
                            "restored through their partitions, name those" % (
                                qualified(*pair), database, len(available),
                                ": " + ", ".join(qualified(*a) for a in available[:10]) if available else ""))
        if pair not in chosen:
            chosen.append(pair)
    for schema in schemas or []:
        found = [pair for pair in available if pair[0] == schema]
        if not found:
            raise PgdrError("schema %s has no tables in the backup set of database %s" % (display_ident(schema), database))
        chosen.extend(pair for pair in found if pair not in chosen)
    return chosen


def renamed(table, backup_id):
    """The name a rename restore gives a table (and its indexes and sequences)."""
    name = "%s_restored_%s" % (table, backup_id)
    if len(name.encode("utf-8")) > 63:
        raise PgdrError("the renamed table %s would be longer than 63 bytes and be truncated by PostgreSQL; "
                        "use conflict: replace or restore into another database" % qualified("", name)[1:])
    return name


def plan_conflicts(selected, existing, conflict, backup_id):
    """[(schema, table, target_table, action)] with action created/renamed/replaced; raises for conflict error.

    ``existing`` is the set of (schema, table) relations present in the target database.
    """
    clashes = [pair for pair in selected if pair in existing]
    if clashes and conflict == "error":
        raise PgdrError("table%s %s already exist%s in the target database; nothing was changed; set conflict: rename or "
                        "replace, or restore into another database" % (
                            "s" if len(clashes) > 1 else "", ", ".join(qualified(*c) for c in clashes),
                            "" if len(clashes) > 1 else "s"), tables=[qualified(*c) for c in clashes])
    plans = []
    for schema, table in selected:
        if (schema, table) not in existing:
            plans.append((schema, table, table, "created"))
        elif conflict == "rename":
            target = renamed(table, backup_id)
            if (schema, target) in existing:
                raise PgdrError("table %s already exists too; drop it or use conflict: replace; nothing was changed"
                                % qualified(schema, target))
            plans.append((schema, table, target, "renamed"))
        else:
            plans.append((schema, table, table, "replaced"))
    return plans


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



class TableJob:
    def __init__(self, schema=None, table=None, query=None, name=None):
        self.schema, self.table, self.query, self.name = schema, table, query, name


def copy_job(ctx, snapshot_id, database, job, copy_format, want_fingerprint):
    """One table or query: own connection, the shared snapshot, COPY out, then the fingerprint."""
    conn = ctx.params.connect(database, autocommit=True)
    stages = ctx.stages
    try:
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
    """schema.sql: pg_dump --schema-only of the tables and their partition ancestors, on the snapshot."""
    argv = [ctx.pg_dump, "--format=plain", "--schema-only", "--no-password", "--snapshot=%s" % snapshot_id]
    argv += ["--table=%s" % pattern(schema, table) for schema, table in objects]
    name = "schema.sql%s%s" % (compression.SUFFIX[ctx.stages.compression["method"]], encryption.SUFFIX[ctx.stages.encryption_method])
    with ctx.writer.open_file(name, role="schema", format="plain", compression=ctx.stages.manifest_compression(),
                              encryption=ctx.stages.manifest_encryption(), database=env["PGDATABASE"]) as handle:
        run_pipeline([argv] + ctx.stages.after(), env=env, sink=handle.write)
    return name


# --- restore --------------------------------------------------------------------------


def existing_relations(conn, schemas):
    rows = conn.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_class AS c "
                        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)",
                        [list(schemas)]).fetchall()
    return {tuple(r) for r in rows}


def scratch_name(backup_id):
    return ("pgdr_scratch_%s_%s" % (backup_id, uuid.uuid4().hex[:6]))[:63].lower()


def create_schemas(conn, schemas):
    for schema in schemas:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def copy_in(conn, schema, table, copy_format, reader_fn):
    """COPY FROM STDIN into one table; ``reader_fn(sink)`` streams the data into ``sink``; returns rows."""
    statement = sql.SQL("COPY {}.{} FROM STDIN {}").format(sql.Identifier(schema), sql.Identifier(table), copy_options(copy_format))
    with conn.cursor() as cur:
        with cur.copy(statement) as copy:
            reader_fn(copy.write)
        return cur.rowcount


def columns(conn, schema, table):
    """Names of the columns COPY can write (not dropped, not generated), in order."""
    return [r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
        "ORDER BY a.attnum", [schema, table]).fetchall()]


def rename_in_scratch(conn, schema, table, new_name, backup_id):
    """Make a standalone, renamed copy in the scratch database: detach it, rename its indexes and sequences."""
    suffix = "_restored_%s" % backup_id
    ident = sql.Identifier
    row = conn.execute("SELECT c.oid, c.relispartition FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
                       "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", [schema, table]).fetchone()
    oid, is_partition = row
    if is_partition:
        parent = conn.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_inherits AS i JOIN pg_catalog.pg_class AS c "
                              "ON c.oid = i.inhparent JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
                              "WHERE i.inhrelid = %s", [oid]).fetchone()
        detach = sql.SQL("ALTER TABLE {}.{} DETACH PARTITION {}.{}")
        conn.execute(detach.format(ident(parent[0]), ident(parent[1]), ident(schema), ident(table)))
    for (name, constraint) in conn.execute(
            "SELECT i.relname, con.conname FROM pg_catalog.pg_index AS x JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid "
            "LEFT JOIN pg_catalog.pg_constraint AS con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid "
            "WHERE x.indrelid = %s", [oid]).fetchall():
        target = (name + suffix)[:63]
        if constraint:
            conn.execute(sql.SQL("ALTER TABLE {}.{} RENAME CONSTRAINT {} TO {}").format(ident(schema), ident(table), ident(constraint), ident(target)))
        else:
            conn.execute(sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(ident(schema), ident(name), ident(target)))
    for (seq_schema, seq) in conn.execute(
            "SELECT n.nspname, s.relname FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_class AS s ON s.oid = d.objid "
            "JOIN pg_catalog.pg_namespace AS n ON n.oid = s.relnamespace "
            "WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = %s AND s.relkind = 'S' "
            "AND d.deptype IN ('a', 'i')", [oid]).fetchall():
        conn.execute(sql.SQL("ALTER SEQUENCE {}.{} RENAME TO {}").format(ident(seq_schema), ident(seq), ident((seq + suffix)[:63])))
    conn.execute(sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(ident(schema), ident(table), ident(new_name)))


def partition_ancestors(conn, schema, table):
    return [tuple(r) for r in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_ancestors("
        "(SELECT c2.oid FROM pg_catalog.pg_class AS c2 JOIN pg_catalog.pg_namespace AS n2 ON n2.oid = c2.relnamespace "
        " WHERE n2.nspname = %s AND c2.relname = %s)) AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.relid "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE a.relid <> "
        "(SELECT c3.oid FROM pg_catalog.pg_class AS c3 JOIN pg_catalog.pg_namespace AS n3 ON n3.oid = c3.relnamespace "
        " WHERE n3.nspname = %s AND c3.relname = %s)", [schema, table, schema, table]).fetchall()]


def missing_extensions(scratch, target):
    """Extensions of the scratch database the target lacks: [(name, schema)]."""
    have = {r[0] for r in target.execute("SELECT extname FROM pg_catalog.pg_extension").fetchall()}
    return [(name, schema) for name, schema in scratch.execute(
        "SELECT e.extname, n.nspname FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n "
        "ON n.oid = e.extnamespace ORDER BY e.extname").fetchall() if name not in have]


def add_extensions(target, extensions):
    for name, schema in extensions:
        target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        target.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(sql.Identifier(name), sql.Identifier(schema)))


def replace_tables(scratch, target, plans, expected_by_pair, source_database):
    """TRUNCATE ONLY + COPY from scratch of every table, verified inside the same transaction; ROLLBACK on mismatch.

    ``target`` is a non-autocommit connection. Returns the fingerprints found.
    """
    ident = sql.Identifier
    target.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        target.execute(sql.SQL("TRUNCATE ONLY {}").format(
            sql.SQL(", ").join(sql.SQL("{}.{}").format(ident(s), ident(t)) for s, t, _x, _a in plans)))
        for schema, table, _target_table, _action in plans:
            cols = columns(scratch, schema, table)
            col_list = sql.SQL(", ").join(ident(c) for c in cols)
            with scratch.cursor() as out_cur, target.cursor() as in_cur:
                with out_cur.copy(sql.SQL("COPY {}.{} ({}) TO STDOUT (FORMAT binary)").format(ident(schema), ident(table), col_list)) as out:
                    with in_cur.copy(sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT binary)").format(ident(schema), ident(table), col_list)) as into:
                        for chunk in out:
                            into.write(chunk)
        actual = fingerprint.table_fingerprints(target, source_database, [(s, t) for s, t, _x, _a in plans],
                                                method=fingerprint.recorded_method(expected_by_pair.values()))
        mismatches = fingerprint.compare([expected_by_pair[(s, t)] for s, t, _x, _a in plans], actual)
        if mismatches:
            target.rollback()
            first = mismatches[0]
            raise PgdrError("replacing %s did not reproduce the backup (%s: %s rows expected, %s found); rolled back, the existing "
                            "table%s unchanged" % (qualified(first["schema"], first["table"]), first["problem"], first["expected_rows"],
                                                   first["actual_rows"], "s are" if len(plans) > 1 else " is"),
                            mismatches=mismatches)
        target.commit()
        return actual
    except psycopg.Error as exc:
        target.rollback()
        raise PgdrError("replacing tables failed and was rolled back, the existing tables are unchanged: %s" % first_line(exc)) from None
    except BaseException:
        if target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            target.rollback()
        raise


def fingerprints_in(params, database, pairs, source_database, method):
    """Fingerprints of ``pairs`` in ``database`` in one REPEATABLE READ snapshot, by the manifest's ``method``."""
    conn = params.connect(database, autocommit=True)
    try:
        fingerprint.begin_snapshot(conn)
        return fingerprint.table_fingerprints(conn, source_database, pairs, method=method)
    finally:
        conn.close()


def verification_results(plans, expected_by_pair, actual_by_target):
    """Per-table results: what was done and whether rows and fingerprint match the manifest."""
    results = []
    for schema, table, target_table, action in plans:
        exp = expected_by_pair[(schema, table)]
        act = actual_by_target.get((schema, target_table))
        problem = None
        if act is None:
            problem = "missing"
        elif act["rows"] != exp["rows"]:
            problem = "rows differ"
        elif act["fingerprint"] != exp["fingerprint"]:
            problem = "content differs"
        results.append(dict(schema=schema, table=table, target_schema=schema, target_table=target_table, action=action,
                            rows=act["rows"] if act else None, expected_rows=exp["rows"], verified=problem is None, problem=problem))
    return results


# --- restore orchestration ------------------------------------------------------------


def restore_plan(manifest, params, source_database, target_database, tables, schemas, conflict, database_exists):
    """The tables to restore and what happens to each, checked against the target before anything is changed."""
    selected = select_tables(manifest.get("tables", []), source_database, tables, schemas)
    if not selected:
        raise PgdrError("backup set %s holds no table fingerprints for database %s; table restores need a set taken "
                        "with fingerprint: true" % (manifest["backup_id"], source_database))
    existing = set()
    if database_exists:
        conn = params.connect(target_database, autocommit=True)
        try:
            existing = existing_relations(conn, {s for s, _t in selected})
        finally:
            conn.close()
    return plan_conflicts(selected, existing, conflict, manifest["backup_id"])


def load_table_set(ctx, scratch_conn, scratch, plans):
    """A logical-table set into the scratch database: its schemas, schema.sql, then COPY FROM of the chosen tables."""
    from ansible_collections.pgdr.backup.plugins.module_utils.logical import restore as logical_restore
    from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import set_key

    manifest = ctx.manifest
    objects = [tuple(o) for o in manifest["options"].get("schema_objects") or []]
    infos = {info["name"]: info for info in manifest.get("databases", [])}
    # the extensions the source had (types such as citext that the tables may use)
    add_extensions(scratch_conn, [tuple(e) for e in (infos.get(ctx.source_database) or {}).get("extensions", [])])
    create_schemas(scratch_conn, sorted({s for s, _t in objects} | {s for s, _t, _x, _a in plans}))
    schema_file = [f for f in manifest["files"] if f["role"] == "schema"]
    if schema_file:
        entry = schema_file[0]
        key = set_key(ctx.cluster, manifest["backup_id"], entry["path"])
        argv = [ctx.tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
                "--dbname=" + logical_restore.conninfo_dbname(scratch), "-f", "-"]
        with ctx.params.child_env() as env:
            logical_restore.feed(ctx.repo, key, logical_restore.input_stages(entry, ctx.gpg) + [argv], env)
    files = {(f["schema"], f["table"]): f for f in manifest["files"] if f["role"] == "table"}
    for schema, table, _target, _action in plans:
        entry = files.get((schema, table))
        if entry is None:
            raise PgdrError("backup set %s has no data file for table %s" % (manifest["backup_id"], qualified(schema, table)))
        key = set_key(ctx.cluster, manifest["backup_id"], entry["path"])
        stages = logical_restore.input_stages(entry, ctx.gpg) or [["cat"]]
        try:
            copy_in(scratch_conn, schema, table, entry["format"],
                    lambda sink, key=key, stages=stages: logical_restore.feed(ctx.repo, key, stages, None, sink=sink))
        except psycopg.Error as exc:
            raise PgdrError("loading %s from %s failed: %s" % (qualified(schema, table), entry["path"], first_line(exc))) from None


class RestoreContext:
    """What a table restore needs: connection settings, the set, tools, decryption, options."""

    def __init__(self, params, admin, repo, cluster, manifest, tools, gpg, options):
        self.params, self.admin, self.repo, self.cluster = params, admin, repo, cluster
        self.manifest, self.tools, self.gpg, self.options = manifest, tools, gpg, options


def restore_tables(ctx, source_database, target_database, plans, load_database_dump, create_target):
    """Scratch load, verify, then move into the target as planned. Returns per-table results.

    ``load_database_dump(scratch)`` loads a logical-db/cluster dump into the scratch
    database; ``create_target()`` creates the target database when it is missing.
    """
    from ansible_collections.pgdr.backup.plugins.module_utils.logical import restore as logical_restore

    manifest = ctx.manifest
    expected = {(t["schema"], t["table"]): t for t in manifest["tables"] if t["database"] == source_database}
    infos = {info["name"]: info for info in manifest.get("databases", [])}
    scratch = scratch_name(manifest["backup_id"])
    ctx.source_database = source_database
    logical_restore.create_database(ctx.admin, scratch, infos.get(source_database), keep_owner=False)
    try:
        scratch_conn = ctx.params.connect(scratch, autocommit=True)
        try:
            if manifest["kind"] == "logical-table":
                load_table_set(ctx, scratch_conn, scratch, plans)
            else:
                load_database_dump(scratch)
            # 1. prove the copy in scratch before the target is touched
            pairs = [(s, t) for s, t, _x, _a in plans]
            method = fingerprint.recorded_method(expected.values())
            found = {(f["schema"], f["table"]): f for f in fingerprints_in(ctx.params, scratch, pairs, source_database, method)}
            # in scratch the tables still have their source names
            bad = [r for r in verification_results([(s, t, t, a) for s, t, _x, a in plans], expected, found) if not r["verified"]]
            if bad:
                raise PgdrError("the backup's copy of %s does not match its manifest (%s); the target was not touched"
                                % (qualified(bad[0]["schema"], bad[0]["table"]), bad[0]["problem"]), tables=bad)
            # 2. move into the target
            create_target()
            target = ctx.params.connect(target_database, autocommit=False)
            try:
                results = _move(ctx, scratch, scratch_conn, target, plans, expected, source_database)
            finally:
                target.close()
        finally:
            scratch_conn.close()
    finally:
        logical_restore.drop_database(ctx.admin, scratch)
    return results


def _move(ctx, scratch, scratch_conn, target, plans, expected, source_database):
    from ansible_collections.pgdr.backup.plugins.module_utils.logical import restore as logical_restore

    replace = [plan for plan in plans if plan[3] == "replaced"]
    move = [plan for plan in plans if plan[3] != "replaced"]
    actual = {}
    if move:
        target.autocommit = True
        for name, schema in missing_extensions(scratch_conn, target):
            add_extensions(target, [(name, schema)])
        create_schemas(target, sorted({s for s, _t, _x, _a in move}))
        ancestors = {(s, t): partition_ancestors(scratch_conn, s, t) for s, t, _x, a in move if a != "renamed"}
        existing = existing_relations(target, {a[0] for found in ancestors.values() for a in found})
        dump_tables = []
        for schema, table, target_table, action in move:
            if action == "renamed":
                rename_in_scratch(scratch_conn, schema, table, target_table, ctx.manifest["backup_id"])
            else:
                for ancestor in ancestors[(schema, table)]:
                    if ancestor not in existing and ancestor not in dump_tables:
                        dump_tables.append(ancestor)
            dump_tables.append((schema, target_table))
        pg_dump = ctx.tools["pg_dump"]
        argv = [pg_dump, "--format=custom", "--no-password", "--dbname=" + logical_restore.conninfo_dbname(scratch)]
        argv += ["--table=%s" % pattern(s, t) for s, t in dump_tables]
        restore = [ctx.tools["pg_restore"], "--no-password", "--exit-on-error", "--single-transaction",
                   "--dbname=" + logical_restore.conninfo_dbname(target.info.dbname)]
        if ctx.options.get("no_owner"):
            restore.append("--no-owner")
        if ctx.options.get("no_privileges"):
            restore.append("--no-privileges")
        with ctx.params.child_env() as env:
            run_pipeline([argv, restore], env=env)
        target.autocommit = False
    if replace:
        for fp in replace_tables(scratch_conn, target, replace, expected, source_database):
            actual[(fp["schema"], fp["table"])] = fp
    if move and ctx.options.get("verify", True):
        target_pairs = [(s, x) for s, _t, x, _a in move]
        for fp in fingerprints_in(ctx.params, target.info.dbname, target_pairs, source_database,
                                  fingerprint.recorded_method(expected.values())):
            actual[(fp["schema"], fp["table"])] = fp
    if ctx.options.get("analyze"):
        target.autocommit = True
        for schema, _table, target_table, _action in plans:
            target.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(target_table)))
    if not ctx.options.get("verify", True):
        return [dict(schema=s, table=t, target_schema=s, target_table=x, action=a, rows=None,
                     expected_rows=expected[(s, t)]["rows"], verified=None, problem=None) for s, t, x, a in move] + \
            verification_results(replace, expected, actual)
    return verification_results(plans, expected, actual)
