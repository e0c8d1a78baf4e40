#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: restore_cluster
short_description: Restore a backup set and prove the restore against its manifest
version_added: 0.1.0
description:
  - Restores logical backup sets written by M(pgdr.backup.pg_logical_dump) from any repository (local folder,
    SFTP, S3-compatible), selected by O(backup_id) or the latest complete set of O(cluster).
  - Before the target is touched, every file of the set is read back and its size and sha256 compared with
    the manifest; any mismatch fails naming the file, and nothing is restored.
  - A database is created from C(template0) and loaded with C(pg_restore) (custom, directory, tar) or
    C(psql) with C(ON_ERROR_STOP) in a single transaction (plain). Cluster sets restore the globals first
    (roles and tablespaces that already exist are left exactly as they are), then every database.
  - With O(verify=true) (the default) the row count and content fingerprint of every table are recomputed
    in the restored database and compared with the manifest; a mismatch fails the task with the list.
  - An existing database is never dropped before its replacement is restored and verified
    (O(if_exists=replace)).
  - Table restores - a C(logical-table) set (from O(pgdr.backup.pg_logical_dump#module:mode=table)), or
    O(tables) / O(schemas) chosen from a C(logical-db) set (or from one database of a cluster set). The set
    is loaded into a scratch database created from C(template0) (its C(schema.sql) and C(COPY FROM) of the
    data files, or C(pg_restore) of the whole dump), the chosen tables are fingerprinted there and compared
    with the manifest, and only then is the target database (O(database), created if missing) touched, as
    O(conflict) says. The scratch database is always dropped.
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
  - pgdr.backup.storage
attributes:
  check_mode:
    support: full
    description: Verifies the set's checksums and reports what would be restored where; changes nothing.
  diff_mode:
    support: none
    description: Backups and restores are actions, not states; there is nothing to diff.
options:
  cluster:
    description: Name of the source cluster in the repository (as given to the backup module).
    type: str
    required: true
  backup_id:
    description: The set to restore, or V(latest) for the newest complete set of O(cluster).
    type: str
    default: latest
  database:
    description:
      - For a single-database set, the name to restore into. Default - the name it was dumped from.
    type: str
  databases:
    description:
      - For a cluster set, the databases to restore (source names). Default - all of them.
    type: list
    elements: str
  globals:
    description: For a cluster set, restore roles and tablespaces first.
    type: bool
    default: true
  if_exists:
    description:
      - What to do when a target database already exists.
      - V(fail) stops before touching anything.
      - V(rename) restores into C(<name>_restored_<backup_id>) and leaves the existing database untouched.
      - V(replace) restores into a new database, verifies it, then swaps it in (renaming the old one away
        and dropping it unless O(keep_previous)).
      - V(use) restores into the existing database as it is (objects that exist make the restore fail).
    type: str
    choices: [fail, rename, replace, use]
    default: fail
  keep_previous:
    description: With O(if_exists=replace), keep the replaced database as C(<name>_previous_<backup_id>).
    type: bool
    default: false
  verify:
    description: Recompute every table's row count and fingerprint after the restore and compare with the manifest.
    type: bool
    default: true
  analyze:
    description: Run C(ANALYZE) in each restored database.
    type: bool
    default: true
  no_owner:
    description: Do not restore ownership (C(pg_restore --no-owner)).
    type: bool
    default: false
  no_privileges:
    description: Do not restore privileges (C(pg_restore --no-privileges)).
    type: bool
    default: false
  encryption:
    description: How to decrypt an encrypted set.
    type: dict
    suboptions:
      passphrase:
        description: The passphrase the set was encrypted with. Never logged.
        type: str
  tables:
    description:
      - Restore only these tables, as C(schema.table) (exact names; a bare name is in C(public); the first dot
        separates schema from table), from a C(logical-db) or C(logical-table) set, or from the one database of
        a cluster set given in O(databases).
      - Each must be a table the manifest has a fingerprint for; a partitioned table is restored by naming its
        partitions (a partition created in the target is attached to its parent, which is created too if missing).
      - The target is O(database), default the source database; it is created if it does not exist.
    type: list
    elements: str
  schemas:
    description:
      - Restore every table of these schemas that the set holds (as with O(tables)).
    type: list
    elements: str
  conflict:
    description:
      - For table restores, what to do with a table that already exists in the target database.
      - V(error) fails before anything is changed, naming the tables.
      - V(rename) restores into C(<table>_restored_<backup_id>) in the same schema (a standalone table with its
        indexes and owned sequences renamed the same way) and leaves the existing table untouched.
      - V(replace) empties the existing table (C(TRUNCATE ONLY)) and loads the backup's rows in one transaction
        for all replaced tables, recomputes their fingerprints inside that transaction, and commits only if they
        match the manifest; otherwise it rolls back and fails, and the old rows are still there. The table's
        definition, indexes and grants stay as they are.
      - Tables that do not exist in the target are created (with indexes, constraints and owned sequences).
    type: str
    choices: [error, rename, replace]
    default: error
  jobs:
    description:
      - Parallel C(pg_restore) jobs for custom and directory format dumps. A custom dump is then first fetched
        (and decrypted) into a 0700 staging folder, as C(pg_restore -j) cannot read a pipe.
      - Default - the set's own O(pgdr.backup.pg_logical_dump#module:jobs) for directory dumps, 1 otherwise.
    type: int
  pg_bin_dir:
    description:
      - Folder with C(pg_restore) and C(psql) for the target server. Default - C(/usr/lib/postgresql/<major>/bin),
        then C(PATH), matching the target server's major version.
    type: path
notes:
  - A set dumped from an older major version restores into a newer server (the target's pg_restore is used).
seealso:
  - module: pgdr.backup.pg_logical_dump
"""

EXAMPLES = r"""
- name: Restore the latest dump of db1's "sales" onto the replica host under a new name, verified
  pgdr.backup.restore_cluster:
    cluster: db1
    database: sales_check
    repository: {type: s3, endpoint_url: "https://s3.example.com", bucket: pg-backups,
                 access_key: "{{ vault_s3_access_key }}", secret_key: "{{ vault_s3_secret_key }}"}
  become: true
  become_user: postgres

- name: Put one table back as it was in a database dump, in one verified transaction
  pgdr.backup.restore_cluster:
    cluster: db1
    backup_id: 20261121T020000Z
    tables: ["public.orders"]
    conflict: replace
    repository: {type: local, path: /var/backups/pgdr}

- name: Restore a COPY table set next to the live tables, as <table>_restored_<backup_id>
  pgdr.backup.restore_cluster:
    cluster: db1
    database: sales
    conflict: rename
    repository: {type: local, path: /var/backups/pgdr}

- name: Replace a database with a chosen backup; the old one is dropped only after the new one verifies
  pgdr.backup.restore_cluster:
    cluster: db1
    backup_id: 20261121T020000Z
    if_exists: replace
    repository: {type: local, path: /var/backups/pgdr}
"""

RETURN = r"""
backup_id:
  description: The set restored.
  returned: always
  type: str
kind:
  description: Kind of the set (logical-db, logical-cluster, logical-table).
  returned: always
  type: str
checked_files:
  description: Files whose size and sha256 were verified before restoring.
  returned: always
  type: int
databases:
  description: Per database - source name, target name, what happened, seconds taken, and verification.
  returned: always
  type: list
  elements: dict
  sample: [{"source": "sales", "target": "sales_check", "action": "created", "seconds": 3.2,
            "verification": {"verified": true, "tables": 12, "mismatches": []}}]
globals_restored:
  description: Whether the globals of a cluster set were applied.
  returned: always
  type: bool
database:
  description: For table restores, the target database.
  returned: for table restores
  type: str
database_created:
  description: For table restores, whether the target database did not exist and was (or, in check mode, would be) created.
  returned: for table restores
  type: bool
tables:
  description:
    - For table restores, per table - source schema and table, target schema and table, action (created, renamed,
      replaced), rows found, rows expected, whether they match the manifest's fingerprint, and the problem if not.
    - In check mode, the plan (without rows and verification).
  returned: for table restores
  type: list
  elements: dict
  sample: [{"schema": "public", "table": "orders", "target_schema": "public", "target_table": "orders_restored_20261121T020000Z",
            "action": "renamed", "rows": 1200, "expected_rows": 1200, "verified": true, "problem": null}]
seconds:
  description: For table restores, seconds taken.
  returned: for table restores, when not in check mode
  type: float
"""

import contextlib
import time

from ansible_collections.pgdr.backup.plugins.module_utils import backup_set, encryption, logical_restore, table_copy
from ansible_collections.pgdr.backup.plugins.module_utils.binaries import find_binary
from ansible_collections.pgdr.backup.plugins.module_utils.commands import run as run_command
from ansible_collections.pgdr.backup.plugins.module_utils.connection import ConnectionParams, connection_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.pgversion import server_version
from ansible_collections.pgdr.backup.plugins.module_utils.storage import repository_from_params, storage_argument_spec

LOGICAL_KINDS = ("logical-db", "logical-cluster", "logical-table")


def argument_spec():
    spec = connection_argument_spec()
    spec.update(storage_argument_spec())
    spec.update(
        cluster=dict(type="str", required=True),
        backup_id=dict(type="str", default="latest"),
        database=dict(type="str"),
        databases=dict(type="list", elements="str"),
        globals=dict(type="bool", default=True),
        if_exists=dict(type="str", default="fail", choices=["fail", "rename", "replace", "use"]),
        keep_previous=dict(type="bool", default=False),
        verify=dict(type="bool", default=True),
        analyze=dict(type="bool", default=True),
        no_owner=dict(type="bool", default=False),
        no_privileges=dict(type="bool", default=False),
        encryption=dict(type="dict", options=dict(passphrase=dict(type="str", no_log=True))),
        pg_bin_dir=dict(type="path"),
        tables=dict(type="list", elements="str"),
        schemas=dict(type="list", elements="str"),
        conflict=dict(type="str", default="error", choices=list(table_copy.CONFLICTS)),
        jobs=dict(type="int"),
    )
    return spec


def select_set(repo, cluster, backup_id):
    if backup_id == "latest":
        found = backup_set.latest_complete(repo, cluster)
        if found is None:
            raise PgdrError("no complete backup set for cluster %s in %s; check cluster and repository" % (cluster, repo.describe()))
        return found
    return backup_set.load_manifest(repo, cluster, backup_id)


def plan_targets(p, manifest, admin):
    """[(source database, target name, action)] where action is create, use or replace."""
    by_db, _globals = logical_restore.database_files(manifest)
    if manifest["kind"] == "logical-db":
        sources = list(by_db)
    else:
        sources = p["databases"] or list(by_db)
        unknown = [d for d in sources if d not in by_db]
        if unknown:
            raise PgdrError("set %s has no dump of database(s) %s; it holds %s" % (
                manifest["backup_id"], ", ".join(unknown), ", ".join(sorted(by_db))))
    plans = []
    for source in sources:
        target = p["database"] if (p["database"] and manifest["kind"] == "logical-db") else source
        if not logical_restore.database_exists(admin, target):
            plans.append((source, target, "create"))
        elif p["if_exists"] == "fail":
            raise PgdrError('database "%s" exists on the target; set if_exists (rename, replace, use) or database' % target)
        elif p["if_exists"] == "rename":
            plans.append((source, "%s_restored_%s" % (target, manifest["backup_id"]), "create"))
        else:
            plans.append((source, target, p["if_exists"]))
    return plans


def run(module):
    p = module.params
    params = ConnectionParams(p)
    repo = repository_from_params(p["repository"])
    admin = params.connect(autocommit=True)
    try:
        return _run(module, p, params, repo, admin)
    finally:
        admin.close()
        repo.close()


def _run(module, p, params, repo, admin):
    manifest = select_set(repo, p["cluster"], p["backup_id"])
    if manifest["kind"] not in LOGICAL_KINDS:
        raise PgdrError("set %s is a %s backup; this version restores logical sets only" % (manifest["backup_id"], manifest["kind"]))
    backup_set.check_files(repo, manifest, p["cluster"])  # before anything touches the target
    if manifest["kind"] == "logical-table" or p["tables"] or p["schemas"]:
        return run_table_restore(module, p, params, repo, admin, manifest)
    plans = plan_targets(p, manifest, admin)
    result = dict(changed=False, backup_id=manifest["backup_id"], kind=manifest["kind"], checked_files=len(manifest["files"]),
                  globals_restored=False,
                  databases=[dict(source=s, target=t, action=a) for s, t, a in plans])
    if module.check_mode:
        result["changed"] = bool(plans)
        return result

    tools = find_tools(p, admin)
    passphrase = (p["encryption"] or {}).get("passphrase")
    gpg_context = encryption.gpg_session(passphrase) if passphrase else contextlib.nullcontext()
    by_db, globals_file = logical_restore.database_files(manifest)
    with gpg_context as gpg:
        if manifest["kind"] == "logical-cluster" and p["globals"] and globals_file:
            restore_globals(repo, manifest, p["cluster"], globals_file, admin, params, tools, gpg)
            result["globals_restored"] = True
        result["databases"] = []
        for source, target, action in plans:
            result["changed"] = True
            outcome = restore_one(p, params, admin, repo, manifest, by_db[source], source, target, action, tools, gpg)
            result["databases"].append(outcome)
    failed = [d for d in result["databases"] if d.get("verification") and not d["verification"]["verified"]]
    if failed:
        first = failed[0]["verification"]["mismatches"][0]
        result["msg"] = "verification failed for %d database(s): %s.%s in %s: %s; the restored data differs from the backup" % (
            len(failed), first["schema"], first["table"], failed[0]["target"], first["problem"])
        module.fail_json(**result)
    return result


def find_tools(p, admin):
    major = server_version(admin)["major"]
    return {name: find_binary(name, major, p["pg_bin_dir"])[0] for name in ("pg_restore", "psql", "pg_dump")}


def table_source_database(p, manifest):
    """The source database whose tables are restored."""
    by_db, _globals = logical_restore.database_files(manifest)
    if manifest["kind"] != "logical-cluster":
        return manifest["source"]["database"] or (list(by_db) or [None])[0]
    if not p["databases"] or len(p["databases"]) != 1:
        raise PgdrError("restoring tables from a cluster set needs exactly one source database in databases; the set holds %s"
                        % ", ".join(sorted(by_db)))
    if p["databases"][0] not in by_db:
        raise PgdrError("set %s has no dump of database %s; it holds %s" % (manifest["backup_id"], p["databases"][0], ", ".join(sorted(by_db))))
    return p["databases"][0]


def run_table_restore(module, p, params, repo, admin, manifest):
    """Tables from a logical-table set, or chosen tables/schemas from a database set, with conflict handling."""
    if p["if_exists"] != "fail" or p["keep_previous"]:
        raise PgdrError("table restores use conflict (error, rename, replace), not if_exists or keep_previous")
    source = table_source_database(p, manifest)
    target = p["database"] or source
    exists = logical_restore.database_exists(admin, target)
    plans = table_copy.restore_plan(manifest, params, source, target, p["tables"], p["schemas"], p["conflict"], exists)
    result = dict(changed=False, backup_id=manifest["backup_id"], kind=manifest["kind"], checked_files=len(manifest["files"]),
                  globals_restored=False, database=target, database_created=not exists, databases=[],
                  tables=[dict(schema=s, table=t, target_schema=s, target_table=x, action=a) for s, t, x, a in plans])
    if module.check_mode:
        result["changed"] = True
        return result
    started = time.monotonic()
    tools = find_tools(p, admin)
    passphrase = (p["encryption"] or {}).get("passphrase")
    gpg_context = encryption.gpg_session(passphrase) if passphrase else contextlib.nullcontext()
    by_db, _globals = logical_restore.database_files(manifest)
    infos = {info["name"]: info for info in manifest.get("databases", [])}
    options = dict(no_owner=p["no_owner"], no_privileges=p["no_privileges"], verify=p["verify"], analyze=p["analyze"])
    with gpg_context as gpg:
        def load_dump(scratch):
            with params.child_env() as env:
                env["PGDATABASE"] = scratch
                logical_restore.load_database(repo, manifest, p["cluster"], by_db[source], scratch, tools, gpg, env, options,
                                              jobs=p["jobs"])

        def create_target():
            if not exists:
                logical_restore.create_database(admin, target, infos.get(source), keep_owner=not p["no_owner"])
                result["changed"] = True

        ctx = table_copy.RestoreContext(params, admin, repo, p["cluster"], manifest, tools, gpg, options)
        result["tables"] = table_copy.restore_tables(ctx, source, target, plans, load_dump, create_target)
    result.update(changed=True, seconds=round(time.monotonic() - started, 3))
    failed = [t for t in result["tables"] if t["verified"] is False]
    if failed:
        result["msg"] = "verification failed for %d table(s): %s.%s in %s: %s; the restored data differs from the backup" % (
            len(failed), failed[0]["target_schema"], failed[0]["target_table"], target, failed[0]["problem"])
        module.fail_json(**result)
    return result


def restore_globals(repo, manifest, cluster, entry, admin, params, tools, gpg):
    """Apply roles and tablespaces, leaving the ones that already exist as they are."""
    chunks = []
    key = backup_set.set_key(cluster, manifest["backup_id"], entry["path"])
    stages = logical_restore.input_stages(entry, gpg) or [["cat"]]
    logical_restore.feed(repo, key, stages, None, sink=chunks.append)
    with admin.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles")
        roles = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT spcname FROM pg_tablespace")
        tablespaces = {row[0] for row in cur.fetchall()}
    text = logical_restore.filter_globals(b"".join(chunks).decode("utf-8"), roles, tablespaces)
    with params.child_env() as env:
        env["PGDATABASE"] = "postgres"
        run_command([tools["psql"], "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-f", "-"], env=env, input_text=text)


def restore_one(p, params, admin, repo, manifest, entries, source, target, action, tools, gpg):
    """Restore one database; for replace, into a new name that is swapped in once verified."""
    started = time.monotonic()
    load_into = target if action in ("create", "use") else "%s_pgdr_new_%s" % (target, manifest["backup_id"])
    if action != "use":
        infos = {info["name"]: info for info in manifest.get("databases", [])}
        logical_restore.create_database(admin, load_into, infos.get(source), keep_owner=not p["no_owner"])
    try:
        load(p, params, repo, manifest, entries, load_into, tools, gpg)
        verification = logical_restore.verify_database(params, load_into, source, manifest) if p["verify"] else None
        if verification and not verification["verified"] and action == "replace":
            raise PgdrError("restored copy of %s does not match the backup (%s); the existing database was not touched"
                            % (target, verification["mismatches"][0]["problem"]), verification=verification)
    except BaseException:
        if action in ("create", "replace"):  # made by this run: a half-loaded database must not pass for a restore
            logical_restore.drop_database(admin, load_into)  # (with replace, the existing database is untouched)
        raise
    if action == "replace":
        previous = "%s_previous_%s" % (target, manifest["backup_id"])
        logical_restore.rename_database(admin, target, previous)
        logical_restore.rename_database(admin, load_into, target)
        if not p["keep_previous"]:
            logical_restore.drop_database(admin, previous)
    if p["analyze"]:
        logical_restore.analyze(params, target)
    if verification:
        verification["database"] = target
    return dict(source=source, target=target, action=action if action != "create" else "created",
                seconds=round(time.monotonic() - started, 3), verification=verification)


def load(p, params, repo, manifest, entries, database, tools, gpg):
    options = dict(no_owner=p["no_owner"], no_privileges=p["no_privileges"])
    with params.child_env() as env:
        env["PGDATABASE"] = database
        logical_restore.load_database(repo, manifest, p["cluster"], entries, database, tools, gpg, env, options, jobs=p["jobs"])


def main():
    run_module(argument_spec(), run)


if __name__ == "__main__":
    main()
