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

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from ansible_collections.pgdr.backup.plugins.module_utils.core import compression, encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import find_binary
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.identifiers import split_table
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint

FORMATS = {"plain": ".sql", "custom": ".dump", "directory": ".dir", "tar": ".tar"}
# pg_dump options the module sets itself: extra_args may not override them
MANAGED_OPTIONS = ("-f", "--file", "-F", "--format", "--snapshot", "-Z", "--compress", "-j", "--jobs", "-d", "--dbname",
                   "-h", "--host", "-p", "--port", "-U", "--username", "-W", "--password")


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
    """pg_dump's argv for one database (pure: unit-tested)."""
    fmt = options["format"]
    argv = [pg_dump, "--format=%s" % fmt, "--no-password"]
    if snapshot:
        argv.append("--snapshot=%s" % snapshot)
    for schema in options.get("schemas") or []:
        argv.append("--schema=%s" % quote_pattern(schema))
    for schema in options.get("exclude_schemas") or []:
        argv.append("--exclude-schema=%s" % quote_pattern(schema))
    for table in options.get("tables") or []:
        argv.append("--table=%s.%s" % tuple(quote_pattern(part) for part in split_table(table)))
    for table in options.get("exclude_tables") or []:
        argv.append("--exclude-table=%s.%s" % tuple(quote_pattern(part) for part in split_table(table)))
    for option, flag in (("data_only", "--data-only"), ("schema_only", "--schema-only"), ("create", "--create"),
                         ("clean", "--clean"), ("if_exists", "--if-exists"), ("no_owner", "--no-owner"),
                         ("no_privileges", "--no-privileges")):
        if options.get(option):
            argv.append(flag)
    if fmt in ("custom", "directory"):  # plain and tar are compressed outside pg_dump, as one stream
        argv += compression.pg_dump_option(compression_spec, pg_dump_major)
    if fmt == "directory":
        argv += ["--jobs=%d" % max(1, int(options.get("jobs") or 1)), "--file=%s" % out_dir]
    check_extra_args(options.get("extra_args"))
    return argv + list(options.get("extra_args") or [])


def check_extra_args(extra_args):
    for arg in extra_args or []:
        if arg.split("=", 1)[0] in MANAGED_OPTIONS:
            raise PgdrError("extra_args may not contain %s: the module sets it (use the module's own option)" % arg.split("=", 1)[0])


class Snapshot:
    """A REPEATABLE READ, READ ONLY transaction that exports its snapshot and stays open for the dump."""

    def __init__(self, params, database):
        self.conn = params.connect(database, autocommit=True)
        try:
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
    fmt = options["format"]
    snapshot = Snapshot(ctx.params, database)
    tables = []
    try:
        info = database_info(snapshot.conn, database)
        fingerprints = FingerprintThread(snapshot.conn, database, options) if ctx.fingerprint else None
        with ctx.params.child_env() as env:
            env["PGDATABASE"] = database
            if fmt == "directory":
                dump_directory(ctx, database, snapshot, env)
            else:
                argv = pg_dump_argv(ctx.pg_dump, ctx.pg_dump_major, options, snapshot.id, stages.compression)
                name = dump_file_name(database, fmt, stages.compression, stages.encryption_method)
                stream_into(writer, name, [argv] + stages.after(compress=fmt in ("plain", "tar")), env, dict(
                    role="database", database=database, format=fmt,
                    compression=stages.manifest_compression(),
                    encryption=stages.manifest_encryption()))
        if fingerprints:
            tables = fingerprints.result()
    finally:
        snapshot.close()
    return tables, info


def database_info(conn, database):
    """What a restore needs to recreate the database itself: its owner and encoding."""
    row = conn.execute("SELECT pg_catalog.pg_get_userbyid(datdba), pg_catalog.pg_encoding_to_char(encoding) "
                       "FROM pg_catalog.pg_database WHERE datname = current_database()").fetchone()
    return {"name": database, "owner": row[0], "encoding": row[1]}


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


def tables_in_dump(conn, options):
    """[(schema, table)] whose rows a pg_dump with these include/exclude options holds."""
    names = fingerprint.list_tables(conn, schemas=options.get("schemas"),
                                    tables=[split_table(t) for t in options.get("tables") or []] or None)
    excluded_schemas = set(options.get("exclude_schemas") or [])
    excluded_tables = {split_table(t) for t in options.get("exclude_tables") or []}
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
            if options.get("schema_only"):
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
    """Roles and tablespaces via pg_dumpall --globals-only, as a plain SQL file."""
    argv = [ctx.pg_dumpall, "--globals-only", "--no-password"]
    if not superuser:
        argv.append("--no-role-passwords")  # pg_authid is superuser-only
    name = "globals.sql%s%s" % (compression.SUFFIX[ctx.stages.compression["method"]], encryption.SUFFIX[ctx.stages.encryption_method])
    with ctx.params.child_env() as env:
        stream_into(ctx.writer, name, [argv] + ctx.stages.after(), env, dict(
            role="globals", database=None, format="plain",
            compression=ctx.stages.manifest_compression(), encryption=ctx.stages.manifest_encryption()))


class DumpContext:
    """What one run needs everywhere: connection settings, binaries, options, the set being written."""

    def __init__(self, params, options, writer, stages, major, pg_bin_dir, fingerprint_on):
        self.params = params
        self.options = options
        self.writer = writer
        self.stages = stages
        self.fingerprint = fingerprint_on
        self.pg_dump, version = find_binary("pg_dump", major, pg_bin_dir)
        self.pg_dump_major = version[0] if version else major
        self.pg_dumpall = find_binary("pg_dumpall", major, pg_bin_dir)[0]
        self.tool_version = "%d.%d" % version if version else "unknown"


def run_backup(ctx, mode, databases, parallel, superuser):
    """Dump ``databases`` (and globals for a cluster set).

    Returns the fingerprints of all tables, each database's owner and encoding, and the seconds taken.
    """
    started = time.monotonic()
    if mode == "cluster":
        dump_globals(ctx, superuser)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(databases)))) as pool:
        results = list(pool.map(lambda db: dump_database(ctx, db), databases))
    tables = [table for db_tables, _info in results for table in db_tables]
    return tables, [info for _tables, info in results], time.monotonic() - started


def run_table_backup(ctx, database, selection, parallel):
    """``mode: table``: COPY each table (and query) on one exported snapshot, ``parallel`` at a time.

    ``selection`` holds tables, schemas, query, name and copy_format. Returns
    (fingerprints, per-table results, skipped, database info, seconds).
    """
    from ansible_collections.pgdr.backup.plugins.module_utils.logical import table_copy

    started = time.monotonic()
    snapshot = Snapshot(ctx.params, database)
    try:
        info = database_info(snapshot.conn, database)
        info["extensions"] = [list(r) for r in snapshot.conn.execute(
            "SELECT e.extname, n.nspname FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n "
            "ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY e.extname").fetchall()]
        leaves, objects, skipped = table_copy.resolve(snapshot.conn, selection.get("tables"), selection.get("schemas"))
        jobs = [table_copy.TableJob(schema=s, table=t) for s, t in leaves]
        if selection.get("query"):
            jobs.append(table_copy.TableJob(query=selection["query"], name=selection["name"]))
        if not jobs:
            raise PgdrError("nothing to export in database %s: %s" % (
                database, "; ".join("%s skipped (%s)" % (s["name"], s["reason"]) for s in skipped) or "no tables selected"), skipped=skipped)
        with ctx.params.child_env() as env:
            env["PGDATABASE"] = database
            if objects:
                table_copy.dump_schema(ctx, env, snapshot.id, objects)
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs)))) as pool:
            done = list(pool.map(lambda job: table_copy.copy_job(ctx, snapshot.id, database, job, selection["copy_format"],
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
    return fingerprints, results, skipped, info, objects, time.monotonic() - started
