# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table restores: chosen tables of a logical-table set, or of a database dump (logical-db, or one database of a cluster set).

The order is what makes it safe:

1. ``plan()`` changes nothing: the tables are chosen from the manifest (each must have a fingerprint), the files
   they need are there with their manifest sizes, and the target is checked for tables that already exist
   (``conflict: error`` stops here, naming them).
2. The set is loaded into a scratch database created from template0 (a table set's ``schema.sql`` and
   ``COPY FROM`` of the chosen data files, or pg_restore of the source database's dump): only those files are
   read, once, each hashed as it streams and checked against the manifest's sha256 and size at its end (a
   file that differs fails the restore here). The chosen tables are then fingerprinted in the scratch database
   and compared with the manifest. Only then is the target database touched.
3. Tables that do not exist in the target (and, with ``rename``, renamed copies) move over with
   ``pg_dump -Fc -t`` of the scratch database piped into ``pg_restore --single-transaction``; with ``replace``
   the existing tables are truncated and reloaded in one transaction whose fingerprints are recomputed
   inside it, which commits only if they match the manifest.
4. The scratch database is always dropped.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import List, NamedTuple

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError, first_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.identifiers import display_ident, qualified, split_table
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import server_version
from ansible_collections.pgdr.backup.plugins.module_utils.logical.restore import (
    SetLoader,
    check_loadable,
    conninfo_dbname,
    create_database,
    database_exists,
    database_files,
    drop_database,
    input_stages,
)
from ansible_collections.pgdr.backup.plugins.module_utils.logical.table_copy import copy_options, pattern
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint

try:
    import psycopg
    from psycopg import sql
except ImportError:  # reported by the module
    psycopg = sql = None

CONFLICTS = ("error", "rename", "replace")
CHECK_MODE_ACTIONS = {"created": "would_create", "renamed": "would_rename", "replaced": "would_replace"}


class TablePlan(NamedTuple):
    """One table of the set and where it goes, in the same schema."""

    schema: str
    table: str  # its name in the set
    target_table: str  # its name in the target: the same, or <table>_restored_<backup_id>
    action: str  # created, renamed or replaced


class TableRestorePlan(NamedTuple):
    """What a table restore will do, decided before anything is changed."""

    source_database: str  # the database of the set whose tables are restored
    target_database: str
    target_exists: bool  # false: the target database is created
    tables: List[TablePlan]


# --- pure helpers (unit-tested) --------------------------------------------------------


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
    """[TablePlan] with action created, renamed or replaced; raises for conflict error.

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
            plans.append(TablePlan(schema, table, table, "created"))
        elif conflict == "rename":
            target = renamed(table, backup_id)
            if (schema, target) in existing:
                raise PgdrError("table %s already exists too; drop it or use conflict: replace; nothing was changed"
                                % qualified(schema, target))
            plans.append(TablePlan(schema, table, target, "renamed"))
        else:
            plans.append(TablePlan(schema, table, table, "replaced"))
    return plans


def verification_results(plans, expected_by_pair, actual_by_target):
    """Per-table results: what was done and whether rows and fingerprint match the manifest."""
    results = []
    for schema, table, target_table, action in plans:
        exp = expected_by_pair[(schema, table)]
        act = actual_by_target.get((schema, target_table))
        problem = fingerprint.mismatch(exp, act)
        results.append(dict(schema=schema, table=table, target_schema=schema, target_table=target_table, action=action,
                            rows=act["rows"] if act else None, expected_rows=exp["rows"], verified=problem is None, problem=problem))
    return results


def source_database(manifest, databases):
    """The database of the set whose tables are restored: the set's own, or for a cluster set the one ``databases`` names."""
    by_db, _globals = database_files(manifest)
    if manifest["kind"] != "logical-cluster":
        return manifest["source"]["database"] or (list(by_db) or [None])[0]
    if not databases or len(databases) != 1:
        raise PgdrError("restoring tables from a cluster set needs exactly one source database in databases; the set holds %s" % ", ".join(sorted(by_db)))
    if databases[0] not in by_db:
        raise PgdrError("set %s has no dump of database %s; it holds %s" % (manifest["backup_id"], databases[0], ", ".join(sorted(by_db))))
    return databases[0]


def verification_message(tables, target_database):
    """The failure message for restored tables that differ from the manifest, or None when all match (or were not verified)."""
    failed = [t for t in tables if t["verified"] is False]
    if not failed:
        return None
    return "verification failed for %d table(s): %s.%s in %s: %s; the restored data differs from the backup" % (
        len(failed),
        failed[0]["target_schema"],
        failed[0]["target_table"],
        target_database,
        failed[0]["problem"],
    )


# --- the target and scratch databases ---------------------------------------------------


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


def fingerprints_in(conn_params, database, pairs, source_database, method):
    """Fingerprints of ``pairs`` in ``database`` in one REPEATABLE READ snapshot, by the manifest's ``method``."""
    conn = conn_params.connect(database, autocommit=True)
    try:
        fingerprint.begin_snapshot(conn)
        return fingerprint.table_fingerprints(conn, source_database, pairs, method=method)
    finally:
        conn.close()


# --- the whole restore ----------------------------------------------------------------


class TableRestore(SetLoader):
    """Chosen tables of a set into one database of the target server, verified in a scratch database before the target is touched."""

    checks_while_reading = True  # loaded into a scratch database first: the files it reads are checked as they are read

    def check_files(self):
        """Whether this server can load the set; the files are checked as they are read (only those the restore needs)."""
        check_loadable(self.manifest, server_version(self.admin)["major"])

    def plan(self):
        """Every check that changes nothing; returns a TableRestorePlan."""
        self.check_files()
        options, manifest = self.options, self.manifest
        if options.if_exists != "fail" or options.keep_previous or options.terminate_sessions:
            raise PgdrError("table restores use conflict (error, rename, replace), not if_exists, keep_previous or terminate_sessions")
        source = source_database(manifest, options.databases)
        target = options.database or source
        exists = database_exists(self.admin, target)
        selected = select_tables(manifest.get("tables", []), source, options.tables, options.schemas)
        if not selected:
            raise PgdrError("backup set %s holds no table fingerprints for database %s; table restores need a set taken "
                            "with fingerprint: true" % (manifest["backup_id"], source))
        existing = set()
        if exists:
            conn = self.conn_params.connect(target, autocommit=True)
            try:
                existing = existing_relations(conn, {s for s, _t in selected})
            finally:
                conn.close()
        tables = plan_conflicts(selected, existing, options.conflict, manifest["backup_id"])
        self.check_present(self.files_read(source, tables))  # before anything touches the target
        return TableRestorePlan(source, target, exists, tables)

    def files_read(self, source, tables):
        """The manifest entries of the files this restore reads: the table set's schema.sql and the chosen tables' data files,
        or the source database's dump; raises for a chosen table without a data file."""
        manifest = self.manifest
        if manifest["kind"] != "logical-table":
            return list(self.files_by_database[source])
        files = {(f["schema"], f["table"]): f for f in manifest["files"] if f["role"] == "table"}
        needed = [f for f in manifest["files"] if f["role"] == "schema"][:1]
        for schema, table, _target, _action in tables:
            entry = files.get((schema, table))
            if entry is None:
                raise PgdrError("backup set %s has no data file for table %s" % (manifest["backup_id"], qualified(schema, table)))
            needed.append(entry)
        return needed

    def run(self, check_mode=False):
        """The result dict; a table whose rows differ from the manifest fails the whole restore with that result."""
        plan = self.plan()
        result = self.result(
            database=plan.target_database,
            database_created=not plan.target_exists,
            databases=[],
            tables=[dict(schema=t.schema, table=t.table, target_schema=t.schema, target_table=t.target_table, action=t.action) for t in plan.tables],
        )
        if check_mode:  # what would happen, not claimed as done
            for table in result["tables"]:
                table["action"] = CHECK_MODE_ACTIONS[table["action"]]
            result["changed"] = True
            return result
        result["checked_files"] = len(self.files_read(plan.source_database, plan.tables))
        started = time.monotonic()
        with self.session():
            result["tables"] = self._restore(plan)
        result.update(changed=True, seconds=round(time.monotonic() - started, 3))
        failure = verification_message(result["tables"], plan.target_database)
        if failure:
            raise PgdrError(failure, **result)
        return result

    def _restore(self, plan):
        """Scratch load, verify, then move into the target as planned. Returns per-table results."""
        manifest = self.manifest
        source = plan.source_database
        expected = {(t["schema"], t["table"]): t for t in manifest["tables"] if t["database"] == source}
        infos = {info["name"]: info for info in manifest.get("databases", [])}
        scratch = scratch_name(manifest["backup_id"])
        create_database(self.admin, scratch, infos.get(source), keep_owner=False)
        try:
            scratch_conn = self.conn_params.connect(scratch, autocommit=True)
            try:
                if manifest["kind"] == "logical-table":
                    self._load_table_set(scratch_conn, scratch, source, plan.tables)
                else:
                    self.load_database(self.files_by_database[source], scratch, fresh=True)
                # 1. prove the copy in scratch before the target is touched
                pairs = [(s, t) for s, t, _x, _a in plan.tables]
                method = fingerprint.recorded_method(expected.values())
                found = {(f["schema"], f["table"]): f for f in fingerprints_in(self.conn_params, scratch, pairs, source, method)}
                # in scratch the tables still have their source names
                in_scratch = [row._replace(target_table=row.table) for row in plan.tables]
                bad = [r for r in verification_results(in_scratch, expected, found) if not r["verified"]]
                if bad:
                    raise PgdrError("the backup's copy of %s does not match its manifest (%s); the target was not touched"
                                    % (qualified(bad[0]["schema"], bad[0]["table"]), bad[0]["problem"]), tables=bad)
                # 2. move into the target
                if not plan.target_exists:
                    create_database(self.admin, plan.target_database, infos.get(source), keep_owner=not self.options.no_owner)
                target = self.conn_params.connect(plan.target_database, autocommit=False)
                try:
                    results = self._move(scratch, scratch_conn, target, plan.tables, expected, source)
                finally:
                    target.close()
            finally:
                scratch_conn.close()
        finally:
            drop_database(self.admin, scratch)
        return results

    def _load_table_set(self, scratch_conn, scratch, source, tables):
        """A logical-table set into the scratch database: its schemas, schema.sql, then COPY FROM of the chosen tables."""
        manifest = self.manifest
        objects = [tuple(o) for o in manifest["options"].get("schema_objects") or []]
        infos = {info["name"]: info for info in manifest.get("databases", [])}
        # the extensions the source had (types such as citext that the tables may use)
        add_extensions(scratch_conn, [tuple(e) for e in (infos.get(source) or {}).get("extensions", [])])
        create_schemas(scratch_conn, sorted({s for s, _t in objects} | {s for s, _t, _x, _a in tables}))
        schema_file = [f for f in manifest["files"] if f["role"] == "schema"]
        if schema_file:
            entry = schema_file[0]
            argv = [self.tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
                    "--dbname=" + conninfo_dbname(scratch), "-f", "-"]
            with self.conn_params.child_env() as env:
                self.feed_file(entry, input_stages(entry, self.gpg) + [argv], env)
        files = {(f["schema"], f["table"]): f for f in manifest["files"] if f["role"] == "table"}
        for schema, table, _target, _action in tables:
            entry = files[(schema, table)]  # plan() made sure each has one
            stages = input_stages(entry, self.gpg) or [["cat"]]
            damaged = []
            try:
                copy_in(scratch_conn, schema, table, entry["format"], functools.partial(self._feed_copy, entry, stages, damaged))
            except psycopg.Error as exc:
                if damaged:
                    raise damaged[0] from None
                raise PgdrError("loading %s from %s failed: %s" % (qualified(schema, table), entry["path"], first_line(exc))) from None

    def _feed_copy(self, entry, stages, damaged, sink):
        """One data file into COPY's ``sink``; a damaged file's error is kept in ``damaged``, because leaving COPY early
        makes psycopg raise the server's error in its place."""
        try:
            self.feed_file(entry, stages, None, sink=sink)
        except PgdrError as exc:
            damaged.append(exc)
            raise

    def _move(self, scratch, scratch_conn, target, tables, expected, source):
        """The verified tables from scratch into the target as planned; returns per-table results."""
        replace = [row for row in tables if row.action == "replaced"]
        move = [row for row in tables if row.action != "replaced"]
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
                    rename_in_scratch(scratch_conn, schema, table, target_table, self.manifest["backup_id"])
                else:
                    for ancestor in ancestors[(schema, table)]:
                        if ancestor not in existing and ancestor not in dump_tables:
                            dump_tables.append(ancestor)
                dump_tables.append((schema, target_table))
            pg_dump_argv = [self.tools["pg_dump"], "--format=custom", "--no-password", "--dbname=" + conninfo_dbname(scratch)]
            pg_dump_argv += ["--table=%s" % pattern(s, t) for s, t in dump_tables]
            pg_restore_argv = [self.tools["pg_restore"], "--no-password", "--exit-on-error", "--single-transaction",
                               "--dbname=" + conninfo_dbname(target.info.dbname)]
            if self.options.no_owner:
                pg_restore_argv.append("--no-owner")
            if self.options.no_privileges:
                pg_restore_argv.append("--no-privileges")
            with self.conn_params.child_env() as env:
                run_pipeline([pg_dump_argv, pg_restore_argv], env=env)
            target.autocommit = False
        if replace:
            for fp in replace_tables(scratch_conn, target, replace, expected, source):
                actual[(fp["schema"], fp["table"])] = fp
        if move and self.options.verify:
            target_pairs = [(s, x) for s, _t, x, _a in move]
            for fp in fingerprints_in(self.conn_params, target.info.dbname, target_pairs, source,
                                      fingerprint.recorded_method(expected.values())):
                actual[(fp["schema"], fp["table"])] = fp
        if self.options.analyze:
            target.autocommit = True
            for schema, _table, target_table, _action in tables:
                target.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(target_table)))
        if not self.options.verify:
            return [dict(schema=s, table=t, target_schema=s, target_table=x, action=a, rows=None,
                         expected_rows=expected[(s, t)]["rows"], verified=None, problem=None) for s, t, x, a in move] + \
                verification_results(replace, expected, actual)
        return verification_results(tables, expected, actual)
