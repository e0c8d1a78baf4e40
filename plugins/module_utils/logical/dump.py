# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical backups into a backup set: pg_dump per database, pg_dumpall globals, COPY per table.

Every dump runs on a snapshot exported by a REPEATABLE READ transaction that
stays open for the whole dump; the same transaction counts and fingerprints
every table, so the manifest describes exactly the data in the files.
Output streams through optional compression and encryption stages into the
repository while its size and sha256 are computed; nothing is staged on
local disk except directory-format dumps (pg_dump writes those itself).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional
from urllib.parse import quote

from ansible_collections.pgdr.backup.plugins.module_utils.core import cli_options, compression, encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import find_binary
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.identifiers import split_table
from ansible_collections.pgdr.backup.plugins.module_utils.logical import table_copy
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint

FORMATS = {"plain": ".sql", "custom": ".dump", "directory": ".dir", "tar": ".tar"}
# pg_dump options the module owns (long name -> what to use instead): extra_args may not hold them in any spelling
OWNED_OPTIONS = {
    "file": "the module writes the dump into the repository itself",
    "format": "use the module option format",
    "snapshot": "the module dumps on the snapshot its fingerprints read",
    "compress": "use the module option compression",
    "jobs": "use the module option jobs",
    "dbname": "use the module option database",
    "host": "use the module option login_host",
    "port": "use the module option login_port",
    "username": "use the module option login_user",
    "password": "use the module option login_password",
    "schema": "use the module option schemas",
    "exclude-schema": "use the module option exclude_schemas",
    "table": "use the module option tables",
    "exclude-table": "use the module option exclude_tables",
    "data-only": "use the module option data_only",
    "schema-only": "use the module option schema_only",
    "create": "use the module option create",
    "clean": "use the module option clean",
    "if-exists": "use the module option if_exists",
    "no-owner": "use the module option no_owner",
    "no-privileges": "use the module option no_privileges",
    "no-acl": "use the module option no_privileges",
    "role": "use the module option session_role",
    "help": "it prints help instead of dumping",
    "version": "it prints the version instead of dumping",
}
# the options that shape what pg_dump writes, recorded as given in a database or cluster set's manifest
PG_DUMP_OPTIONS = ("format", "jobs", "schemas", "exclude_schemas", "tables", "exclude_tables", "data_only", "schema_only",
                   "create", "clean", "if_exists", "no_owner", "no_privileges", "extra_args", "session_role")


@dataclasses.dataclass(frozen=True)
class CompressionOptions:
    method: str
    level: Optional[int]


@dataclasses.dataclass(frozen=True)
class DumpEncryptionOptions:
    method: str
    passphrase: Optional[str]


@dataclasses.dataclass(frozen=True)
class LogicalDumpOptions:
    """pg_logical_dump's options (without the connection and the repository); defaults are the argument spec's."""

    mode: str
    database: Optional[str]
    cluster: Optional[str]  # the name the set is filed under in the repository
    backup_id: Optional[str]
    format: str
    jobs: int
    parallel: int
    compression: Optional[CompressionOptions]
    encryption: Optional[DumpEncryptionOptions]
    schemas: Optional[List[str]]
    exclude_schemas: Optional[List[str]]
    tables: Optional[List[str]]
    exclude_tables: Optional[List[str]]
    data_only: bool
    schema_only: bool
    create: bool
    clean: bool
    if_exists: bool
    no_owner: bool
    no_privileges: bool
    extra_args: Optional[List[str]]
    fingerprint: bool
    query: Optional[str]
    name: Optional[str]
    copy_format: str
    if_running: str
    pg_bin_dir: Optional[str]
    session_role: Optional[str]

    def pg_dump_options(self):
        """{option: value} of PG_DUMP_OPTIONS, for the manifest."""
        return {name: getattr(self, name) for name in PG_DUMP_OPTIONS}

    def compression_spec(self):
        """The checked {method, level} (core.compression) of the ``compression`` option."""
        return compression.normalize(dataclasses.asdict(self.compression) if self.compression else None)


def safe_name(name):
    """A database or table name as a file name: readable where possible, never a path."""
    return quote(name, safe="").replace(".", "%2E") if name in (".", "..") else quote(name, safe="")


def dump_file_name(database, fmt, compression_spec, encryption_method):
    suffix = FORMATS[fmt]
    if fmt in ("plain", "tar"):  # compressed outside pg_dump, as a whole stream
        suffix += compression.SUFFIX[compression_spec["method"]]
    return "db_%s%s%s" % (safe_name(database), suffix, encryption.SUFFIX[encryption_method])


def quote_pattern(name):
    """An exact name as a pg_dump pattern: inside double quotes wildcards are literal."""
    return '"%s"' % name.replace('"', '""')


def pg_dump_argv(pg_dump, pg_dump_major, options, snapshot, compression_spec, out_dir=None):
    """pg_dump's argv for one database, from LogicalDumpOptions (pure: unit-tested)."""
    fmt = options.format
    argv = [pg_dump, "--format=%s" % fmt, "--no-password"]
    if options.session_role:
        argv.append("--role=%s" % options.session_role)
    if snapshot:
        argv.append("--snapshot=%s" % snapshot)
    for schema in options.schemas or []:
        argv.append("--schema=%s" % quote_pattern(schema))
    for schema in options.exclude_schemas or []:
        argv.append("--exclude-schema=%s" % quote_pattern(schema))
    for table in options.tables or []:
        argv.append("--table=%s.%s" % tuple(quote_pattern(part) for part in split_table(table)))
    for table in options.exclude_tables or []:
        argv.append("--exclude-table=%s.%s" % tuple(quote_pattern(part) for part in split_table(table)))
    for option, flag in (("data_only", "--data-only"), ("schema_only", "--schema-only"), ("create", "--create"),
                         ("clean", "--clean"), ("if_exists", "--if-exists"), ("no_owner", "--no-owner"),
                         ("no_privileges", "--no-privileges")):
        if getattr(options, option):
            argv.append(flag)
    if fmt in ("custom", "directory"):  # plain and tar are compressed outside pg_dump, as one stream
        argv += compression.pg_dump_option(compression_spec, pg_dump_major)
    if fmt == "directory":
        argv += ["--jobs=%d" % max(1, int(options.jobs)), "--file=%s" % out_dir]
    check_extra_args(options.extra_args)
    return argv + list(options.extra_args or [])


def check_extra_args(extra_args):
    """Refuse, in one line, any option of ``extra_args`` the module owns, however pg_dump would read it (core.cli_options)."""
    for item in cli_options.parse(cli_options.PG_DUMP, extra_args):
        where = "extra_args item %d" % (item.index + 1)
        if item.kind == "operand":
            # the word is not repeated: it may be a connection string with a password
            raise PgdrError("%s is not an option: pg_dump would take it as the database name; use the module option database, "
                            "or put the word right after the option it belongs to" % where)
        if item.kind == "ambiguous" and any(name in OWNED_OPTIONS for name in item.candidates):
            raise PgdrError("extra_args may not contain %s (%s): pg_dump could read it as %s; write the option in full" % (
                item.written, where, ", ".join("--" + name for name in item.candidates)))
        if item.kind == "option" and item.name in OWNED_OPTIONS:
            raise PgdrError("extra_args may not contain %s (%s, pg_dump --%s): the module sets it; %s" % (
                item.written, where, item.name, OWNED_OPTIONS[item.name]))


def check_session_role(conn, role):
    """PgdrError (one line) unless ``role`` exists and the login user may SET ROLE to it (pg_dump --role would fail late)."""
    if not role:
        return
    row = conn.execute("SELECT session_user, EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s)", [role]).fetchone()
    if not row[1]:
        raise PgdrError("session_role %s does not exist on the server; create the role or fix session_role" % role)
    # 'SET' (PostgreSQL 16+) is what SET ROLE needs; 15 knows only MEMBER, which is the same there
    privilege = "SET" if conn.info.server_version >= 160000 else "MEMBER"
    if not conn.execute("SELECT pg_catalog.pg_has_role(session_user, %s, '" + privilege + "')", [role]).fetchone()[0]:
        raise PgdrError("login user %s may not SET ROLE %s (not a member%s); GRANT %s TO %s, or fix session_role" % (
            row[0], role, " with SET" if privilege == "SET" else "", role, row[0]))


class Snapshot:
    """A REPEATABLE READ, READ ONLY transaction that exports its snapshot and stays open for the dump."""

    def __init__(self, conn_params, database, role=None):
        self.conn = conn_params.connect(database, autocommit=True)
        try:
            table_copy.set_role(self.conn, role)
            fingerprint.begin_snapshot(self.conn)
            self.id = fingerprint.export_snapshot(self.conn)
        except BaseException:
            self.conn.close()
            raise

    def close(self):
        self.conn.close()  # ends the read-only transaction


class Stages:
    """Compression and encryption stages shared by every file of one run."""

    def __init__(self, compression_spec, gpg):
        self.compression = compression_spec
        self.gpg = gpg

    @property
    def encryption_method(self):
        return "gpg" if self.gpg else "none"

    def after(self, compress=True):
        stages = []
        if compress and compression.compress_argv(self.compression):
            stages.append(compression.compress_argv(self.compression))
        if self.gpg:
            stages.append(self.gpg.encrypt_argv())
        return stages

    def manifest_compression(self, applied=True):
        return dict(self.compression) if applied else {"method": "none", "level": None}

    def manifest_encryption(self):
        return {"method": encryption.MANIFEST_NAME[self.encryption_method]}


def stream_into(writer, relpath, argvs, env, entry):
    """Run a pipeline and stream its output into one file of the set."""
    with writer.open_file(relpath, **entry) as handle:
        return run_pipeline(argvs, env=env, sink=handle.write)


def dump_database(ctx, database):
    """One database into the set: its dump file(s) and, when asked, its table fingerprints."""
    options, stages, writer = ctx.options, ctx.stages, ctx.writer
    fmt = options.format
    snapshot = Snapshot(ctx.conn_params, database, options.session_role)
    tables = []
    try:
        info = database_info(snapshot.conn, database)
        fingerprints = FingerprintThread(snapshot.conn, database, options) if ctx.fingerprint else None
        try:
            with ctx.conn_params.child_env() as env:
                env["PGDATABASE"] = database
                if fmt == "directory":
                    argv = dump_directory(ctx, database, snapshot, env)
                else:
                    argv = pg_dump_argv(ctx.pg_dump, ctx.pg_dump_major, options, snapshot.id, stages.compression)
                    name = dump_file_name(database, fmt, stages.compression, stages.encryption_method)
                    stream_into(writer, name, [argv] + stages.after(compress=fmt in ("plain", "tar")), env, dict(
                        role="database", database=database, format=fmt,
                        compression=stages.manifest_compression(),
                        encryption=stages.manifest_encryption()))
        except PgdrError:
            # a failed fingerprint ends the exporting transaction, and pg_dump then only says it "could not import the
            # requested snapshot": the fingerprint's error (e.g. permission denied for a table) is the cause to report
            if fingerprints and not fingerprints.thread.is_alive() and fingerprints.error:
                fingerprints.result()
            raise
        if fingerprints:
            tables = fingerprints.result()
    finally:
        snapshot.close()
    return tables, info, {"database": database, "snapshot": snapshot.id, "argv": argv}


def database_info(conn, database):
    """What a restore needs to recreate the database itself and what pg_dump without --create leaves out.

    Owner, encoding, ``ALTER DATABASE … SET`` / ``ALTER ROLE … IN DATABASE … SET`` settings, ACL, connection limit
    and comment (pg_dumpall keeps them; per-database dumps made without --create do not).
    """
    row = conn.execute("SELECT pg_catalog.pg_get_userbyid(d.datdba), pg_catalog.pg_encoding_to_char(d.encoding), "
                       "d.datacl::pg_catalog.text[], d.datconnlimit, pg_catalog.shobj_description(d.oid, 'pg_database') "
                       "FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()").fetchone()
    settings = conn.execute(
        "SELECT r.rolname, s.setconfig FROM pg_catalog.pg_db_role_setting AS s "
        "JOIN pg_catalog.pg_database AS d ON d.oid = s.setdatabase "
        "LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = s.setrole "
        "WHERE d.datname = pg_catalog.current_database() AND (s.setrole = 0 OR r.oid IS NOT NULL) "
        "ORDER BY r.rolname NULLS FIRST").fetchall()
    return {"name": database, "owner": row[0], "encoding": row[1], "settings": setting_items(settings),
            "acl": list(row[2]) if row[2] is not None else None, "connection_limit": row[3], "comment": row[4]}


def setting_items(rows):
    """[(rolname or None, setconfig)] as [{role, name, value}], in setconfig's order; each item splits at its first '='."""
    items = []
    for role, config in rows:
        for entry in config or []:
            name, _sep, value = entry.partition("=")
            items.append({"role": role, "name": name, "value": value})
    return items


def dump_directory(ctx, database, snapshot, env):
    """pg_dump -Fd writes files itself (for -j): stage locally, then stream each file to the set."""
    staging = tempfile.mkdtemp(prefix="pgdr-dump-")
    try:
        os.chmod(staging, 0o700)
        out_dir = os.path.join(staging, "dump")
        argv = pg_dump_argv(ctx.pg_dump, ctx.pg_dump_major, ctx.options, snapshot.id, ctx.stages.compression, out_dir=out_dir)
        run_pipeline([argv], env=env)
        folder = dump_file_name(database, "directory", ctx.stages.compression, "none")
        entry = dict(role="database", database=database, format="directory",
                     compression=ctx.stages.manifest_compression(), encryption=ctx.stages.manifest_encryption())
        encrypt = ctx.stages.after(compress=False)  # pg_dump compressed each file already
        for name in sorted(os.listdir(out_dir)):
            relpath = "%s/%s%s" % (folder, name, encryption.SUFFIX[ctx.stages.encryption_method])
            stream_into(ctx.writer, relpath, [["cat", os.path.join(out_dir, name)]] + encrypt, None, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return argv


def tables_in_dump(conn, options):
    """[(schema, table)] whose rows a pg_dump with these include/exclude options (LogicalDumpOptions) holds."""
    names = fingerprint.list_tables(conn, schemas=options.schemas,
                                    tables=[split_table(t) for t in options.tables or []] or None)
    excluded_schemas = set(options.exclude_schemas or [])
    excluded_tables = {split_table(t) for t in options.exclude_tables or []}
    return [n for n in names if n[0] not in excluded_schemas and tuple(n) not in excluded_tables]


class FingerprintThread:
    """Counts and fingerprints tables in the snapshot's own transaction while pg_dump runs."""

    def __init__(self, conn, database, options):
        self.error = None
        self.tables = None
        self.thread = threading.Thread(target=self._run, args=(conn, database, options), daemon=True)
        self.thread.start()

    def _run(self, conn, database, options):
        try:
            if options.schema_only:
                self.tables = []
                return
            self.tables = fingerprint.table_fingerprints(conn, database, tables_in_dump(conn, options))
        except Exception as exc:  # handed to the main thread, which fails the backup
            self.error = exc

    def result(self):
        self.thread.join()
        if self.error:
            raise PgdrError("fingerprinting failed: %s" % str(self.error).strip().splitlines()[0])
        return self.tables


def dump_globals(ctx, superuser):
    """Roles and tablespaces via pg_dumpall --globals-only, as a plain SQL file; returns the argv run."""
    argv = [ctx.pg_dumpall, "--globals-only", "--no-password"]
    if ctx.options.session_role:
        argv.append("--role=%s" % ctx.options.session_role)
    if not superuser:
        argv.append("--no-role-passwords")  # pg_authid is superuser-only
    name = "globals.sql%s%s" % (compression.SUFFIX[ctx.stages.compression["method"]], encryption.SUFFIX[ctx.stages.encryption_method])
    with ctx.conn_params.child_env() as env:
        stream_into(ctx.writer, name, [argv] + ctx.stages.after(), env, dict(
            role="globals", database=None, format="plain",
            compression=ctx.stages.manifest_compression(), encryption=ctx.stages.manifest_encryption()))
    return argv


def client_binaries(major, pg_bin_dir):
    """((pg_dump, its version), pg_dumpall) for a server of ``major``: its own major, else a newer one; never an older one."""
    return find_binary("pg_dump", major, pg_bin_dir), find_binary("pg_dumpall", major, pg_bin_dir)[0]


class DumpContext:
    """What one run needs everywhere: connection settings, binaries, options (LogicalDumpOptions), the set being written."""

    def __init__(self, conn_params, options, writer, stages, major):
        self.conn_params = conn_params
        self.options = options
        self.writer = writer
        self.stages = stages
        self.fingerprint = options.fingerprint
        (self.pg_dump, version), self.pg_dumpall = client_binaries(major, options.pg_bin_dir)
        self.pg_dump_major = version[0] if version else major
        self.tool_version = "%d.%d" % version if version else "unknown"


def run_backup(ctx, databases, superuser):
    """Dump ``databases`` (and globals for a cluster set), ``parallel`` at a time.

    Returns the fingerprints of all tables, each database's facts (database_info), the commands run
    ([{database (None for the globals), snapshot, argv}], globals first) and the seconds taken.
    """
    started = time.monotonic()
    runs = []
    if ctx.options.mode == "cluster":
        runs.append({"database": None, "snapshot": None, "argv": dump_globals(ctx, superuser)})
    parallel = max(1, ctx.options.parallel)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(databases)))) as pool:
        results = list(pool.map(lambda db: dump_database(ctx, db), databases))
    tables = [table for db_tables, _info, _run in results for table in db_tables]
    runs += [run for _tables, _info, run in results]
    return tables, [info for _tables, info, _run in results], runs, time.monotonic() - started


def run_table_backup(ctx, database):
    """``mode: table``: COPY each table (and query) of ``database`` on one exported snapshot, ``parallel`` at a time.

    The options' tables, schemas, query, name and copy_format say what is exported. Returns
    (fingerprints, per-table results, skipped, database info, schema objects, commands run, seconds); the
    commands are [{database, snapshot, argv}]: the pg_dump of schema.sql when one was written, else argv [].
    """
    options = ctx.options
    parallel = max(1, options.parallel)
    started = time.monotonic()
    snapshot = Snapshot(ctx.conn_params, database, options.session_role)
    try:
        info = database_info(snapshot.conn, database)
        info["extensions"] = [list(r) for r in snapshot.conn.execute(
            "SELECT e.extname, n.nspname FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n "
            "ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY e.extname").fetchall()]
        leaves, objects, skipped = table_copy.resolve(snapshot.conn, options.tables, options.schemas)
        jobs = [table_copy.TableJob(schema=s, table=t) for s, t in leaves]
        if options.query:
            jobs.append(table_copy.TableJob(query=options.query, name=options.name))
        if not jobs:
            raise PgdrError("nothing to export in database %s: %s" % (
                database, "; ".join("%s skipped (%s)" % (s["name"], s["reason"]) for s in skipped) or "no tables selected"), skipped=skipped)
        schema_argv = []
        with ctx.conn_params.child_env() as env:
            env["PGDATABASE"] = database
            if objects:
                schema_argv = table_copy.dump_schema(ctx, env, snapshot.id, objects)[1]
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs)))) as pool:
            done = list(pool.map(lambda job: table_copy.copy_job(ctx, snapshot.id, database, job, options.copy_format,
                                                                 ctx.fingerprint), jobs))
    finally:
        snapshot.close()
    fingerprints = [d["fingerprint"] for d in done if d["fingerprint"]]
    results = []
    for index, job in enumerate(jobs):
        outcome = done[index]
        if job.query is None:
            results.append(dict(schema=job.schema, table=job.table, rows=outcome["rows"], path=outcome["path"]))
        else:
            results.append(dict(query=job.name, rows=outcome["rows"], path=outcome["path"]))
    runs = [{"database": database, "snapshot": snapshot.id, "argv": schema_argv}]
    return fingerprints, results, skipped, info, objects, runs, time.monotonic() - started
