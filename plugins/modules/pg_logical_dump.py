#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: pg_logical_dump
short_description: Logical backups (pg_dump, pg_dumpall) into a verified backup set
version_added: 0.1.0
description:
  - Dumps one database (O(mode=database)) or every database plus the roles and tablespaces
    (O(mode=cluster)) into a backup set C(<repository>/<cluster>/<backup_id>/) with a C(manifest.json)
    written last, listing every file with its size and sha256.
  - Each dump runs on a snapshot exported by a REPEATABLE READ transaction that stays open for the whole
    dump; the same transaction counts the rows of every table and computes a content fingerprint, so a
    restore can prove it holds exactly the data that was dumped.
  - Output streams through optional compression (gzip, lz4, zstd) and encryption (OpenPGP AES-256 with
    gpg) into a local folder, an SFTP server or S3-compatible object storage, without a local copy of the
    whole dump (directory format excepted, which pg_dump writes to a local staging folder itself).
  - If anything fails, the partial set is deleted; a set without a manifest is never offered for restore.
  - Runs for the same source and repository never overlap on one host (O(if_running)).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
  - pgdr.backup.storage
attributes:
  check_mode:
    support: full
    description: Reports the databases and tables that would be dumped and their size on the server; writes nothing.
  diff_mode:
    support: none
    description: Backups and restores are actions, not states; there is nothing to diff.
options:
  mode:
    description:
      - V(database) dumps O(database) with C(pg_dump).
      - V(cluster) dumps the globals with C(pg_dumpall --globals-only) and then every database that allows
        connections and is not a template, O(parallel) at a time, into one set with one file per database.
      - V(table) exports O(tables), every table of O(schemas) and/or one O(query) of O(database) with
        C(COPY ... TO STDOUT) in O(copy_format), one file per table, O(parallel) tables at once, into a set of
        kind C(logical-table). Every COPY worker has its own connection that imports the one exported snapshot
        (C(SET TRANSACTION SNAPSHOT)), so all files are consistent with each other and with the fingerprints.
        A partitioned table is exported as its leaf partitions; views, materialized views, foreign and
        temporary tables are skipped and listed in RV(skipped_relations). The set also holds C(schema.sql)
        (C(pg_dump --schema-only) of those tables and their partition parents, on the same snapshot), so a
        restore into a fresh database can create them.
    type: str
    choices: [database, cluster, table]
    default: database
  database:
    description:
      - Database to dump with O(mode=database). Default - O(login_db), else V(postgres).
    type: str
  cluster:
    description:
      - Name of the source cluster in the repository layout C(<cluster>/<backup_id>/).
      - Default - O(login_host) when it is a host name or address, otherwise this host's name. Set it to
        something stable such as C({{ inventory_hostname }}) so restores and drills find the sets.
    type: str
  backup_id:
    description:
      - Identifier of the set. Default - the current UTC time as C(YYYYMMDDTHHMMSSZ).
      - If a complete set with this id exists, nothing is done and RV(ignore:changed) is false.
    type: str
  format:
    description:
      - pg_dump output format. V(custom) and V(directory) are compressed by pg_dump itself,
        V(plain) and V(tar) by a separate compressor on the whole stream.
    type: str
    choices: [custom, plain, directory, tar]
    default: custom
  jobs:
    description:
      - Parallel pg_dump workers; only with O(format=directory).
    type: int
    default: 1
  parallel:
    description:
      - With O(mode=cluster), how many databases are dumped at once.
      - With O(mode=table), how many tables are copied at once (one connection each).
    type: int
    default: 1
  compression:
    description:
      - Compression of the dump.
      - pg_dump 14 and 15 compress custom and directory dumps only with gzip.
    type: dict
    default: {method: gzip}
    suboptions:
      method:
        description: Compression method.
        type: str
        choices: [none, gzip, lz4, zstd]
        default: gzip
      level:
        description: Level, within the method's range (gzip 1-9, lz4 1-12, zstd 1-19); default is the tool's.
        type: int
  encryption:
    description:
      - Encryption at rest, as OpenPGP symmetric AES-256 (C(gpg)). A file decrypts without this collection with
        C(gpg --batch --pinentry-mode loopback --passphrase-file FILE --decrypt db_x.dump.gpg > db_x.dump).
    type: dict
    suboptions:
      method:
        description: V(gpg) encrypts, V(none) does not.
        type: str
        choices: [none, gpg]
        default: none
      passphrase:
        description: The passphrase. Required with V(gpg). Never logged; gpg reads it from a 0600 file.
        type: str
  schemas:
    description:
      - Dump only these schemas (exact names, not patterns).
      - With O(mode=table), export every table of these schemas (partitions of a partitioned table in the
        same schema come with it; views and the like are listed in RV(skipped_relations)).
    type: list
    elements: str
  exclude_schemas:
    description: Leave these schemas out (exact names).
    type: list
    elements: str
  tables:
    description:
      - Dump only these tables, as C(schema.table) (exact names; a bare name is in C(public); the first dot
        separates schema from table).
      - With O(mode=table), the tables to export; a partitioned table is exported as its leaf partitions,
        a name that does not exist fails the task.
    type: list
    elements: str
  exclude_tables:
    description: Leave these tables out, as C(schema.table).
    type: list
    elements: str
  data_only:
    description: Only the data (C(--data-only)).
    type: bool
    default: false
  schema_only:
    description: Only the definitions (C(--schema-only)); no fingerprints are taken.
    type: bool
    default: false
  create:
    description: Include C(CREATE DATABASE) in the dump (C(--create)).
    type: bool
    default: false
  clean:
    description: Include C(DROP) statements (C(--clean)).
    type: bool
    default: false
  if_exists:
    description: Use C(IF EXISTS) with the drops (C(--if-exists)).
    type: bool
    default: false
  no_owner:
    description: Do not dump ownership (C(--no-owner)).
    type: bool
    default: false
  no_privileges:
    description: Do not dump privileges (C(--no-privileges)).
    type: bool
    default: false
  extra_args:
    description:
      - More pg_dump arguments, as a list (never a shell string), for what the module has no option for
        (e.g. C(--no-comments), C(--exclude-table-data=PATTERN)).
      - They are read as pg_dump reads them (short clusters such as C(-vFp), attached values such as C(-j4),
        C(--name value), unambiguous abbreviations such as C(--form=plain)). Options the module owns are refused
        before anything is written, naming the module option to use instead (output file, format, snapshot,
        compression, jobs, connection and role, schema/table filters, data_only, schema_only, create, clean,
        if_exists, no_owner, no_privileges). So is a word that is not an option (pg_dump would take it as the
        database name).
    type: list
    elements: str
    default: []
  fingerprint:
    description:
      - Count the rows of every dumped table and compute an order-independent content hash in the dump's
        snapshot, recorded in the manifest for restore verification.
      - Costs one extra read of every table (a 64-bit hash of each row's text) on the server while pg_dump runs,
        about as much server CPU as the dump's own COPY (see C(docs/performance.md)).
    type: bool
    default: true
  query:
    description:
      - With O(mode=table), a query whose result is exported too, with C(COPY (query) TO STDOUT), on the same
        snapshot, into C(queries/<name>.<ext>). It is run as given (it is the playbook author's SQL); it
        gets no fingerprint and is not restored by M(pgdr.backup.restore_cluster).
    type: str
  name:
    description:
      - The file name (without extension) of the O(query) export. Required with O(query).
    type: str
  copy_format:
    description:
      - With O(mode=table), the C(COPY) format of the data files. V(csv) and V(text) are written in UTF8
        (C(ENCODING 'UTF8')) and keep NULL apart from the empty string; V(binary) is the fastest and
        restores only into columns of the same types.
      - Compression and encryption apply to each file as a whole stream.
    type: str
    choices: [csv, text, binary]
    default: csv
  if_running:
    description:
      - What to do when another run for the same source and repository holds the lock on this host.
    type: str
    choices: [fail, skip]
    default: fail
  session_role:
    description:
      - Role to switch to after connecting (SET ROLE); the login user must be a member. Objects are read with
        this role's privileges.
      - C(pg_dump --role) and C(pg_dumpall --role), and C(SET ROLE) in the sessions that take the snapshot, the
        fingerprints and the COPYs. A role that does not exist, or that the login user may not switch to, fails
        in one line before anything is written.
    type: str
  pg_bin_dir:
    description:
      - Folder with C(pg_dump) and C(pg_dumpall). Vendor builds (EDB Postgres Advanced Server, PPAS) must use
        their own binaries. Default - C(/usr/lib/postgresql/<major>/bin), then C(PATH), of the server's major
        version; if there is none, the nearest newer C(/usr/lib/postgresql/<newer>/bin) (a newer pg_dump reads
        an older server, as PostgreSQL recommends).
      - A pg_dump older than the server is refused, here too, in one line before anything is written. A restore
        of the set then needs a C(pg_restore) at least as new as the pg_dump recorded in the manifest.
    type: path
notes:
  - A role granted the C(logical) profile of M(pgdr.backup.role_grants) can run this module.
seealso:
  - module: pgdr.backup.role_grants
  - module: pgdr.backup.restore_cluster
"""

EXAMPLES = r"""
- name: Nightly dump of one database to S3, compressed and encrypted
  pgdr.backup.pg_logical_dump:
    database: sales
    cluster: "{{ inventory_hostname }}"
    compression: {method: gzip, level: 6}
    encryption: {method: gpg, passphrase: "{{ vault_backup_passphrase }}"}
    repository:
      type: s3
      endpoint_url: https://oss-cn-hangzhou.aliyuncs.com
      bucket: pg-backups
      prefix: prod
      access_key: "{{ vault_s3_access_key }}"
      secret_key: "{{ vault_s3_secret_key }}"
  become: true
  become_user: postgres

- name: Export two tables and a report query as CSV, three COPYs at a time, on one snapshot
  pgdr.backup.pg_logical_dump:
    mode: table
    database: sales
    tables: [public.orders, "Billing.Invoices"]
    query: "SELECT id, total FROM public.orders WHERE total > 1000"
    name: big_orders
    copy_format: csv
    parallel: 3
    cluster: "{{ inventory_hostname }}"
    repository: {type: local, path: /var/backups/pgdr}

- name: Every database and the globals, two at a time, to the backup host over SFTP
  pgdr.backup.pg_logical_dump:
    mode: cluster
    parallel: 2
    format: custom
    cluster: "{{ inventory_hostname }}"
    repository: {type: sftp, host: backup1.example.com, path: /var/backups/pgdr, key_file: /root/.ssh/id_ed25519}
"""

RETURN = r"""
backup_id:
  description: Identifier of the set.
  returned: always
  type: str
  sample: 20261121T020000Z
location:
  description: Where the set is (no secrets).
  returned: always
  type: str
  sample: s3://pg-backups/prod/db1/20261121T020000Z/
manifest:
  description: The manifest written last into the set (files with size and sha256, tables with rows and fingerprints).
  returned: when a set was written or already existed
  type: dict
bytes:
  description: Total size of the files in the set.
  returned: when a set was written or already existed
  type: int
duration:
  description: Seconds the dump took.
  returned: when a set was written
  type: float
tables:
  description:
    - Per-table row counts and fingerprints taken in the dump's snapshot.
    - In check mode, the tables that would be dumped (O(mode=database)) or exported (O(mode=table)).
  returned: when a set was written or already existed, and in check mode with O(mode=database) or O(mode=table)
  type: list
  elements: dict
databases:
  description: Databases dumped (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
estimated_bytes:
  description:
    - In check mode, the size of the databases on the server (the dump is usually smaller).
    - With O(mode=table), the size of the tables that would be exported.
  returned: in check mode
  type: int
skipped_relations:
  description:
    - With O(mode=table), the named relations that were not exported and why (view, materialized view,
      foreign table, temporary table, partitioned table whose partitions are exported, extension member).
    - In check mode too.
  returned: with O(mode=table)
  type: list
  elements: dict
  sample: [{"name": "public.v_orders", "reason": "view"}]
copied:
  description: With O(mode=table), per table or query - the file written and the rows COPY wrote.
  returned: with O(mode=table), when a set was written or already existed
  type: list
  elements: dict
  sample: [{"schema": "public", "table": "orders", "rows": 1200, "path": "tables/public/orders.csv.gz"},
           {"query": "big_orders", "rows": 12, "path": "queries/big_orders.csv.gz"}]
skipped_reason:
  description: Why nothing was done (another run holds the lock, with O(if_running=skip)).
  returned: when skipped
  type: str
"""

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
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
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


def run(module):
    options = typed(logical_dump.LogicalDumpOptions, module.params)
    validate(options)
    conn_params = ConnectionParams(typed(ConnectionOptions, module.params))
    compression_spec = options.compression_spec()
    database = options.database or conn_params.dbname
    admin = conn_params.connect(database, autocommit=True)
    repo = open_repository(typed(RepositoryOptions, module.params["repository"]))
    try:
        return backup(module, options, conn_params, admin, repo, compression_spec, database)
    finally:
        admin.close()
        repo.close()


def backup(module, options, conn_params, admin, repo, compression_spec, database):
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
    if module.check_mode:
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


def main():
    run_module(argument_spec(), run, **ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
