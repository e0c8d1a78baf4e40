# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore logical backup sets: globals, then databases, then prove them against the manifest.

Order of safety: the set's checksums are verified before the target is
touched; a database being replaced is restored under a new name, verified,
and only then swapped in, so the old one is never dropped before its
replacement has passed verification.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from ansible_collections.pgdr.backup.plugins.module_utils.core import compression
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint
from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import set_key

try:
    from psycopg import sql
except ImportError:  # reported by the module
    sql = None

READ_CHUNK = 1024 * 1024


def database_files(manifest):
    """{database: [file entries]} for the dumps in a logical set, and the globals file if any."""
    by_db, globals_file = {}, None
    for entry in manifest["files"]:
        if entry.get("role") == "globals":
            globals_file = entry
        elif entry.get("role") == "database":
            by_db.setdefault(entry["database"], []).append(entry)
    return by_db, globals_file


def input_stages(entry, gpg):
    """Stages that turn a stored file back into what the tool wrote: decrypt, then decompress."""
    stages = []
    if entry["encryption"]["method"] != "none":
        if gpg is None:
            raise PgdrError("file %s is encrypted; give encryption.passphrase to restore it" % entry["path"])
        stages.append(gpg.decrypt_argv())
    # custom and directory dumps are compressed inside the archive, pg_restore reads them as they are;
    # plain, tar, and COPY files (csv, text, binary) are compressed as whole streams
    if entry["format"] not in ("custom", "directory"):
        method = entry["compression"]["method"]
        if method != "none":
            stages.append(compression.decompress_argv(method))
    return stages


def feed(repo, key, argvs, env, sink=None, stdout_path=None):
    """Stream one stored file into the first process of a pipeline."""
    with repo.open_reader(key) as reader:
        try:
            return run_pipeline(argvs, env=env, stdin_reader=reader, sink=sink, stdout_path=stdout_path)
        except PgdrError as exc:
            cmd = exc.details.get("cmd") or []
            if cmd[:1] == ["gpg"] and "--decrypt" in cmd:  # a wrong passphrase is by far the likeliest cause
                exc.msg += "; check encryption.passphrase: it must be the one the set was encrypted with"
                exc.args = (exc.msg,)
            raise


def conninfo_dbname(database):
    """``dbname='...'`` for -d: a bare name with '=' in it would be read as a connection string."""
    return "dbname='%s'" % database.replace("\\", "\\\\").replace("'", "\\'")


def restore_command(entry, pg_restore, psql, database, options, jobs=1, path=None):
    """The tool that loads one database dump into ``database`` (which exists)."""
    fmt = entry["format"]
    if fmt == "plain":
        return [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--no-password",
                "--dbname=" + conninfo_dbname(database), "-f", "-"]
    argv = [pg_restore, "--no-password", "--exit-on-error", "--dbname=" + conninfo_dbname(database)]
    if options.get("no_owner"):
        argv.append("--no-owner")
    if options.get("no_privileges"):
        argv.append("--no-privileges")
    if jobs > 1:
        argv.append("--jobs=%d" % jobs)
    elif fmt == "custom":
        argv.append("--single-transaction")
    return argv + ([path] if path else [])


def restore_directory(repo, manifest, cluster, entries, database, tools, gpg, env, options, jobs=None):
    """Directory dumps are folders: fetch (and decrypt) them into a 0700 staging folder, then pg_restore -j."""
    staging = tempfile.mkdtemp(prefix="pgdr-restore-")
    try:
        os.chmod(staging, 0o700)
        folder = os.path.join(staging, "dump")
        os.mkdir(folder, 0o700)
        for entry in entries:
            name = entry["path"].split("/", 1)[1]
            if entry["encryption"]["method"] != "none":
                name = name[: -len(".gpg")] if name.endswith(".gpg") else name
            key = set_key(cluster, manifest["backup_id"], entry["path"])
            stages = input_stages(entry, gpg) or [["cat"]]
            feed(repo, key, stages, None, stdout_path=os.path.join(folder, name))
        jobs = max(1, int(jobs or manifest.get("options", {}).get("jobs") or 1))
        argv = restore_command(entries[0], tools["pg_restore"], tools["psql"], database, options, jobs=jobs, path=folder)
        run_pipeline([argv], env=env)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# pg_dumpall --globals-only writes one statement per line for these
_ROLE_LINE = re.compile(r'^(CREATE|ALTER) ROLE ((?:"(?:[^"]|"")+")|[a-z_][a-z0-9_$]*)[ ;]')
_TABLESPACE_LINE = re.compile(r'^CREATE TABLESPACE ((?:"(?:[^"]|"")+")|[a-z_][a-z0-9_$]*) ')


def _unquote(ident):
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def filter_globals(text, existing_roles, existing_tablespaces):
    """Globals SQL without the statements for roles and tablespaces that already exist.

    Roles that exist are left exactly as they are (attributes and password
    included); memberships are granted again, which PostgreSQL accepts.
    """
    kept = []
    for line in text.splitlines(keepends=True):
        role = _ROLE_LINE.match(line)
        if role and _unquote(role.group(2)) in existing_roles:
            continue
        tablespace = _TABLESPACE_LINE.match(line)
        if tablespace and _unquote(tablespace.group(1)) in existing_tablespaces:
            continue
        kept.append(line)
    return "".join(kept)


def create_database(conn, name, info=None, keep_owner=True):
    """CREATE DATABASE from template0 with the source's encoding and, if that role exists here, its owner."""
    info = info or {}
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if info.get("encoding"):
        statement = sql.SQL("{} ENCODING {}").format(statement, sql.Literal(info["encoding"]))
    owner = info.get("owner") if keep_owner else None
    with conn.cursor() as cur:
        if owner:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner])
            if cur.fetchone():
                statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
        cur.execute(statement)


def database_exists(conn, name):
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cur.fetchone() is not None


def drop_database(conn, name):
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rename_database(conn, old, new):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [old])
        cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def verify_database(params, restored_name, source_name, manifest):
    """Recompute fingerprints in the restored database and compare with the manifest."""
    expected = [t for t in manifest.get("tables", []) if t["database"] == source_name]
    conn = params.connect(restored_name, autocommit=True)
    try:
        fingerprint.begin_snapshot(conn)
        names = [(t["schema"], t["table"]) for t in expected]
        present = set(map(tuple, fingerprint.list_tables(conn)))
        actual = fingerprint.table_fingerprints(conn, source_name, [n for n in names if n in present],
                                                method=fingerprint.recorded_method(expected))
    finally:
        conn.close()
    mismatches = fingerprint.compare(expected, actual)
    return dict(database=restored_name, source_database=source_name, tables=len(expected),
                verified=not mismatches, mismatches=mismatches)


def analyze(params, database):
    conn = params.connect(database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    finally:
        conn.close()


def load_database(repo, manifest, cluster, entries, database, tools, gpg, env, options, jobs=None):
    """Load one database's dump (custom, directory, tar, plain) into the existing ``database``.

    ``jobs`` > 1 runs pg_restore in parallel: directory dumps are staged anyway,
    a custom dump is fetched (and decrypted) into a 0700 staging folder first
    (pg_restore -j cannot read a pipe).
    """
    entry = entries[0]
    if entry["format"] == "directory":
        restore_directory(repo, manifest, cluster, entries, database, tools, gpg, env, options, jobs=jobs)
        return
    key = set_key(cluster, manifest["backup_id"], entry["path"])
    if entry["format"] == "custom" and (jobs or 1) > 1:
        staging = tempfile.mkdtemp(prefix="pgdr-restore-")
        try:
            os.chmod(staging, 0o700)
            path = os.path.join(staging, "dump.custom")
            feed(repo, key, input_stages(entry, gpg) or [["cat"]], None, stdout_path=path)
            run_pipeline([restore_command(entry, tools["pg_restore"], tools["psql"], database, options, jobs=jobs, path=path)], env=env)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    argv = restore_command(entry, tools["pg_restore"], tools["psql"], database, options)
    feed(repo, key, input_stages(entry, gpg) + [argv], env)
