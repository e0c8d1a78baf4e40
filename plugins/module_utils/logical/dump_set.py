# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What module pg_logical_dump runs, callable without Ansible (the host-side runner pgdr-backup runs it too).

``argument_spec()`` and ``ARGUMENT_RELATIONS`` are the module's options; ``options_from(params)`` types them once;
``run(options, connection, repository, check_mode)`` writes the set (or reports what it would dump) and returns
the module's result dict. Nothing here imports ``ansible.*`` at import time.
"""

from __future__ import annotations

import contextlib
import socket

from ansible_collections.pgdr.backup.plugins.module_utils.access.grants import list_databases
from ansible_collections.pgdr.backup.plugins.module_utils.core import compression, encryption, locks
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import (
    ConnectionOptions,
    ConnectionParams,
    connection_argument_spec,
    default_cluster_name,
)
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import server_version
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump as logical_dump
from ansible_collections.pgdr.backup.plugins.module_utils.logical import table_copy
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions, open_repository, storage_argument_spec

# Declared so that Ansible checks them before run() and ansible-doc shows them. validate() still refuses an empty
# list or passphrase, which Ansible counts as given.
ARGUMENT_RELATIONS = dict(
    required_if=[("mode", "table", ("tables", "schemas", "query"), True)],
)


def argument_spec():
    spec = connection_argument_spec()
    spec.update(storage_argument_spec())
    spec.update(
        mode=dict(type="str", default="database", choices=["database", "cluster", "table"]),
        database=dict(type="str"),
        cluster=dict(type="str"),
        backup_id=dict(type="str"),
        format=dict(type="str", default="custom", choices=list(logical_dump.FORMATS)),
        jobs=dict(type="int", default=1),
        parallel=dict(type="int", default=1),
        compression=dict(type="dict", default={"method": "gzip"}, options=dict(
            method=dict(type="str", default="gzip", choices=list(compression.METHODS)),
            level=dict(type="int"),
        )),
        encryption=encryption.encryption_argument_spec(),
        schemas=dict(type="list", elements="str"),
        exclude_schemas=dict(type="list", elements="str"),
        tables=dict(type="list", elements="str"),
        exclude_tables=dict(type="list", elements="str"),
        data_only=dict(type="bool", default=False),
        schema_only=dict(type="bool", default=False),
        create=dict(type="bool", default=False),
        clean=dict(type="bool", default=False),
        if_exists=dict(type="bool", default=False),
        no_owner=dict(type="bool", default=False),
        no_privileges=dict(type="bool", default=False),
        extra_args=dict(type="list", elements="str", default=[]),
        fingerprint=dict(type="bool", default=True),
        query=dict(type="str"),
        name=dict(type="str"),
        copy_format=dict(type="str", default="csv", choices=list(table_copy.COPY_FORMATS)),
        if_running=dict(type="str", default="fail", choices=["fail", "skip"]),
        pg_bin_dir=dict(type="path"),
        session_role=dict(type="str"),
    )
    return spec


def system_identifier(conn):
    """The cluster's system identifier, or None where the login may not read pg_control."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT system_identifier::text FROM pg_control_system()")
            return cur.fetchone()[0]
    except Exception:  # insufficient privilege on some setups: the manifest records null
        return None


def estimate(conn, databases):
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(pg_database_size(datname)), 0)::bigint FROM pg_database WHERE datname = ANY(%s)",
                    [databases])
        return cur.fetchone()[0]


def would_dump(conn_params, database, options):
    """The tables whose rows a database dump with these options would hold (for check mode)."""
    conn = conn_params.connect(database, autocommit=True)
    try:
        return [dict(database=database, schema=s, table=t) for s, t in logical_dump.tables_in_dump(conn, options)]
    finally:
        conn.close()


def summary(manifest):
    result = dict(manifest=manifest, bytes=sum(f["size"] for f in manifest["files"]), tables=manifest.get("tables", []))
    if manifest["kind"] == "logical-table":
        result.update(skipped_relations=manifest["options"].get("skipped", []), copied=manifest["options"].get("copied", []))
    return result


def validate(options):
    if options.jobs > 1 and options.format != "directory":
        raise PgdrError("jobs works only with format directory; set format: directory or jobs: 1")
    if options.data_only and options.schema_only:
        raise PgdrError("data_only and schema_only exclude each other; choose one")
    if options.mode == "cluster" and (options.database or options.schemas or options.tables):
        raise PgdrError("mode cluster dumps every database; database, schemas and tables go with mode database")
    if options.mode == "table":
        validate_table_mode(options)
    elif options.query or options.name:
        raise PgdrError("query and name go with mode table")
    if options.encryption and options.encryption.method == "gpg" and not options.encryption.passphrase:
        raise PgdrError("encryption.passphrase is required with encryption.method gpg")
    logical_dump.check_extra_args(options.extra_args)


def validate_table_mode(options):
    if not (options.tables or options.schemas or options.query):
        raise PgdrError("mode table needs tables (schema.table), schemas or a query")
    if options.query and not options.name:
        raise PgdrError("a query export needs name (the output file's name)")
    if options.name and not options.query:
        raise PgdrError("name goes with query")
    if options.name:
        backup_set.validate_file_path(options.name)
        if "/" in options.name:
            raise PgdrError("name %r must be a plain file name without slashes" % options.name)
    unused = [o for o in ("exclude_schemas", "exclude_tables") if getattr(options, o)] + [o for o in (
        "data_only", "schema_only", "create", "clean", "if_exists", "no_owner", "no_privileges") if getattr(options, o)]
    if options.extra_args:
        unused.append("extra_args")
    if options.format != "custom" or options.jobs != 1:
        unused.append("format/jobs")
    if unused:
        raise PgdrError("%s do not apply to mode table (COPY per table; use copy_format and parallel)" % ", ".join(unused))


def options_from(params):
    """The typed options of one run, from the module's params (defaults already applied, as AnsibleModule does)."""
    return (typed(logical_dump.LogicalDumpOptions, params), typed(ConnectionOptions, params), typed(RepositoryOptions, params["repository"]))


def run(options, connection, repository, check_mode):
    """The module's result dict: the set written, or already complete (changed false), or in check mode what would be dumped."""
    validate(options)
    conn_params = ConnectionParams(connection)
    compression_spec = options.compression_spec()
    database = options.database or conn_params.dbname
    admin = conn_params.connect(database, autocommit=True)
    repo = open_repository(repository)
    try:
        return backup(options, conn_params, admin, repo, compression_spec, database, check_mode)
    finally:
        admin.close()
        repo.close()


def backup(options, conn_params, admin, repo, compression_spec, database, check_mode):
    """The set of this run: written, or already complete (changed false), or in check mode what would be dumped."""
    version = server_version(admin)
    logical_dump.check_session_role(admin, options.session_role)
    logical_dump.client_binaries(version["major"], options.pg_bin_dir)  # a client that cannot dump this server fails here, in check mode too
    cluster_name = options.cluster or default_cluster_name(conn_params)
    backup_set.validate_cluster_name(cluster_name)
    backup_id = options.backup_id or backup_set.new_backup_id()
    backup_set.validate_backup_id(backup_id)
    databases = list_databases(admin) if options.mode == "cluster" else [database]
    location = repo.location(backup_set.set_key(cluster_name, backup_id))
    result = dict(changed=False, backup_id=backup_id, location=location, databases=databases)

    status = backup_set.set_status(repo, cluster_name, backup_id)
    if status == "complete":
        result.update(summary(backup_set.load_manifest(repo, cluster_name, backup_id)))
        return result
    if check_mode:
        if options.mode == "table":
            leaves, _objects, skipped = table_copy.resolve(admin, options.tables, options.schemas)
            result.update(changed=True, tables=[dict(schema=s, table=t) for s, t in leaves], skipped_relations=skipped,
                          estimated_bytes=table_copy.estimate_bytes(admin, leaves))
            return result
        result.update(changed=True, estimated_bytes=estimate(admin, databases))
        if options.mode == "database":
            result["tables"] = would_dump(conn_params, database, options)
        return result

    source = "%s:%s" % (conn_params.describe(), cluster_name)
    with locks.exclusive(source, repo.describe()) as (taken, holder):
        if not taken:
            reason = "another backup of %s into %s is running (%s)" % (cluster_name, repo.describe(), holder or "pid unknown")
            if options.if_running == "skip":
                result.update(skipped_reason=reason)
                return result
            raise PgdrError(reason + "; wait for it, or set if_running: skip")
        # leftovers of an interrupted run with this id are never a backup; even an "absent" set may have some that
        # no listing shows (S3 multipart uploads a writer could not abort because the store was down)
        backup_set.delete_set(repo, cluster_name, backup_id)
        manifest, duration = write_set(options, conn_params, admin, repo, compression_spec, version, cluster_name, backup_id, databases)
    result.update(summary(manifest), changed=True, duration=round(duration, 3))
    return result


def tool_facts(mode, version, runs):
    """The manifest's tool: argv of the (first) pg_dump as run, and every command of the set in ``commands``.

    Passwords never reach an argv (libpq reads them from a passfile), so the argv is recorded as is.
    """
    dumps = [run for run in runs if run["database"] is not None]
    return dict(name="copy" if mode == "table" else "pg_dump", version=version, argv=list(dumps[0]["argv"]) if dumps else [],
                commands=[dict(database=run["database"], argv=list(run["argv"])) for run in runs])


def consistency_facts(runs):
    """The snapshot each database was read in; ``snapshot`` is the set's one snapshot, null when there is one per database."""
    snapshots = {run["database"]: run["snapshot"] for run in runs if run["database"] is not None}
    return dict(snapshot=next(iter(snapshots.values())) if len(snapshots) == 1 else None, snapshots=snapshots,
                isolation="repeatable read")


def write_set(options, conn_params, admin, repo, compression_spec, version, cluster_name, backup_id, databases):
    encryption_method = options.encryption.method if options.encryption else "none"
    superuser = admin.info.parameter_status("is_superuser") == "on"
    started_at = backup_set.iso_utc()
    writer = backup_set.SetWriter(repo, cluster_name, backup_id, compression=compression_spec, encryption=encryption_method)
    gpg_context = encryption.gpg_session(options.encryption.passphrase) if encryption_method == "gpg" else contextlib.nullcontext()
    try:
        with gpg_context as gpg:
            stages = logical_dump.Stages(compression_spec, gpg)
            ctx = logical_dump.DumpContext(conn_params, options, writer, stages, version["major"])
            if options.mode == "table":
                tables, copied, skipped, info, objects, runs, duration = logical_dump.run_table_backup(ctx, databases[0])
                database_infos = [info]
                recorded = dict(mode="table", fingerprint=options.fingerprint, copy_format=options.copy_format, tables=options.tables,
                                schemas=options.schemas, parallel=options.parallel,
                                queries=[dict(name=options.name, sql=options.query)] if options.query else [], copied=copied, skipped=skipped,
                                schema_objects=[list(o) for o in objects])
            else:
                tables, database_infos, runs, duration = logical_dump.run_backup(ctx, databases, superuser)
                recorded = dict(options.pg_dump_options(), mode=options.mode, fingerprint=options.fingerprint)
        kind = {"cluster": "logical-cluster", "table": "logical-table"}.get(options.mode, "logical-db")
        manifest = writer.finish(dict(
            kind=kind,
            source=dict(host=conn_params.settings.get("host") or socket.gethostname(), port=int(conn_params.settings.get("port") or 5432),
                        database=None if options.mode == "cluster" else databases[0],
                        system_identifier=system_identifier(admin), server_version=version["text"],
                        server_version_num=version["num"], major=version["major"]),
            started_at=started_at,
            finished_at=backup_set.iso_utc(),
            duration_seconds=round(duration, 3),
            tool=tool_facts(options.mode, ctx.tool_version, runs),
            compression=dict(compression_spec),
            encryption=stages.manifest_encryption(),
            consistency=consistency_facts(runs),
            tables=tables,
            databases=database_infos,
            options=recorded,
        ))
    except BaseException as exc:
        try:
            writer.abort()  # a half-written set must never look like a backup
        except Exception as cleanup:  # e.g. the store is still down: the failure that stopped the dump is the one to report
            if isinstance(exc, PgdrError):
                exc.msg += "; its partial files could not be removed (the repository failed again), but without a manifest " \
                           "they are never restored, and a rerun with backup_id %s removes them" % backup_id
                exc.args = (exc.msg,)
                exc.details["cleanup_error"] = str(cleanup)
        raise
    return manifest, duration
