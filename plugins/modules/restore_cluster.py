#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: restore_cluster
short_description: Restore a backup set and prove the restore against its manifest
version_added: 0.1.0
description:
  - Physical restores - with O(pg_data), a base backup set from M(pgdr.backup.pg_basebackup) (plain or tar, or an
    incremental chain combined with C(pg_combinebackup)) replaces the cluster in O(pg_data) and recovers to a target
    (O(recovery_target_time), O(recovery_target_xid), O(recovery_target_lsn), O(recovery_target_name),
    O(recovery_target=immediate), or the end of the O(archive)); see the physical restore notes below.
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
  - pgdr.backup.service
  - pgdr.backup.wal_archive
attributes:
  check_mode:
    support: full
    description:
      - Reports what would be restored where; changes nothing. Logical and table restores read every file of the set back and
        verify its size and sha256 first.
      - Physical restores run only the checks that need nothing read or changed (the set is complete, the major version, the
        recovery target's bounds, O(force)); they do not read the set's files, whose digests are checked while deploying.
  diff_mode:
    support: none
    description: Backups and restores are actions, not states; there is nothing to diff.
options:
  repository:
    # the fragment's option, not required here: O(probackup) is the other source
    required: false
  probackup:
    description:
      - Restore from a pg_probackup or gs_probackup catalog on this host instead of a O(repository), with the same safety rules as
        physical restores (O(pg_data), O(force), O(keep_previous), recovery targets, O(archive_mode) off on the copy).
      - The tool runs C(restore) into C(<pg_data>.pgdr-new) (it writes C(restore_command) with C(archive-get), the target and
        C(recovery.signal)); O(recovery_target_action) is always passed for pg_probackup. O(backup_id=latest) means the newest backup
        whose status and whole parent chain are OK or DONE.
      - Not combined with O(repository), O(archive), O(standby) or O(tablespace_mapping).
    type: dict
    suboptions:
      binary:
        description: C(pg_probackup), C(gs_probackup) or a path; which tool it is comes from its C(version) output.
        type: str
        default: pg_probackup
      backup_path:
        description: The catalog (C(-B)).
        type: path
        required: true
      instance:
        description: The instance in the catalog.
        type: str
        required: true
      threads:
        description: Parallel threads (C(-j)).
        type: int
      incremental_mode:
        description:
          - V(checksum) or V(lsn) restores incrementally (C(-I)) - only what differs from the current cluster is rewritten. The server
            is stopped first and its data directory copied into C(<pg_data>.pgdr-new), which the tool then updates, so the original is
            still kept until the restored cluster is verified.
        type: str
        choices: [none, checksum, lsn]
        default: none
      db_include:
        description: Restore only these databases (C(--db-include)); the others' files are left empty and cannot be used.
        type: list
        elements: str
      db_exclude:
        description: Restore all but these databases (C(--db-exclude)).
        type: list
        elements: str
  cluster:
    description:
      - Name of the source cluster in the repository (as given to the backup module). Not used with O(probackup).
    type: str
  backup_id:
    description: The set to restore, or V(latest) for the newest complete set of O(cluster).
    type: str
    default: latest
  database:
    description:
      - For a single-database set, the name to restore into. Default - the name it was dumped from.
      - For a cluster set, the name to restore its one database chosen in O(databases) into; with several databases (or none
        chosen from a set that holds several) it is refused before anything changes, as each database keeps its own name.
      - For table restores, the target database.
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
    description:
      - With O(if_exists=replace), keep the replaced database as C(<name>_previous_<backup_id>).
      - For physical restores, keep the replaced data directory as C(<pg_data>.pgdr-previous-<backup_id>) after the restored
        cluster has started and passed verification (it is always kept until then, and put back on failure).
    type: bool
    default: false
  session_role:
    description:
      - Role to switch to after connecting (SET ROLE); the login user must be a member. Logical and table restores are done with
        this role's privileges, and what they create is owned by it (unless the dump's owners are kept, which needs the role to
        be a member of those owners too).
      - C(SET ROLE) in every session of the restore - the one that creates, renames and drops databases (so the role needs
        C(CREATEDB)), applies the globals and database settings, verifies and analyzes - and C(-c role=...) in C(PGOPTIONS) for
        C(pg_restore), C(psql) and C(pg_dump), which load the data. A role that does not exist, or that the login user may not
        switch to, fails in one line before anything changes.
      - Not for physical restores.
    type: str
  terminate_sessions:
    description:
      - With O(if_exists=replace), end the sessions connected to the database being replaced (C(pg_terminate_backend)) just before
        it is renamed away.
      - Without it, open sessions on that database fail the restore, naming how many - before anything changes when they are there
        at the start, otherwise at the swap, where the restored copy is dropped and the existing database left as it was.
    type: bool
    default: false
  verify:
    description:
      - Logical restores - recompute every table's row count and fingerprint after the restore and compare with the manifest.
      - Physical restores - check the deployed copy with C(pg_verifybackup) (every file against PostgreSQL's C(backup_manifest))
        before the server starts, and after it starts check its system identifier and that recovery passed the backup's end.
    type: bool
    default: true
  force:
    description:
      - Physical restores - replace what O(pg_data) holds, stopping its server if it runs. Without it the task fails before anything
        is changed when O(pg_data) holds a cluster (running or stopped) or is any other non-empty folder (the message names what is
        there). An absent or empty O(pg_data) needs no O(force).
      - What is replaced is kept as C(<pg_data>.pgdr-previous-<backup_id>) until the restored cluster has started and passed
        verification, put back if the restore fails, and then removed unless O(keep_previous).
      - Never replaced, even with O(force) - a symbolic link (give the data directory it points to), a file, or a folder that
        holds a cluster further down (O(pg_data) given one level too high).
    type: bool
    default: false
  recovery_target:
    description:
      - Physical restores - V(immediate) stops recovery as soon as the backup is consistent (its end); V(latest) (the default
        when no other target is given) replays all WAL the O(archive) holds.
    type: str
    choices: [immediate, latest]
  recovery_target_time:
    description:
      - Physical restores - recover up to this time, with a time zone, for example V(2026-11-22 10:15:00+00).
      - Refused before anything changes when it lies before the backup's end or after the newest segment in O(archive).
    type: str
  recovery_target_xid:
    description: Physical restores - recover up to this transaction id.
    type: str
  recovery_target_lsn:
    description:
      - Physical restores - recover up to this WAL location, for example V(0/5000100).
      - Refused before anything changes when it lies before the backup's end or after the newest segment in O(archive).
    type: str
  recovery_target_name:
    description: Physical restores - recover up to this restore point (made with C(pg_create_restore_point())).
    type: str
  recovery_target_inclusive:
    description: Physical restores - whether recovery stops just after (V(true), PostgreSQL's default) or just before the target.
    type: bool
  recovery_target_timeline:
    description: Physical restores - the timeline to follow, V(latest) (default with a target), V(current) or a number.
    type: str
  recovery_target_action:
    description:
      - Physical restores - what the server does at the target. Always written explicitly, because PostgreSQL's own default
        (V(pause)) would leave an unattended restore waiting.
      - V(promote) ends recovery and opens the cluster read-write; V(pause) keeps it read-only at the target (inspect, then
        promote with C(pg_wal_replay_resume())); V(shutdown) stops the server at the target (recognised by C(pg_controldata),
        cluster state C(shut down in recovery), wherever the server logs).
    type: str
    choices: [promote, pause, shutdown]
    default: promote
  standby:
    description:
      - Physical restores - build a streaming standby instead of a recovered copy, C(standby.signal) instead of C(recovery.signal).
    type: dict
    suboptions:
      primary_conninfo:
        description: libpq connection string to the primary, for example V(host=db1 user=replicator application_name=db2). Never logged.
        type: str
        required: true
      slot:
        description: Physical replication slot on the primary to stream from (C(primary_slot_name)).
        type: str
  archive_mode:
    description:
      - Physical restores - C(archive_mode) of the restored cluster. V(off) (the default) makes sure a drill or scratch copy never
        writes WAL into the production archive.
    type: str
    choices: ['off', 'on', always]
    default: 'off'
  server_settings:
    description:
      - Physical restores - more settings written to the restored cluster's C(postgresql.auto.conf), such as another C(port) for a scratch copy.
    type: dict
  tablespace_mapping:
    description:
      - Physical restores - new folders for tablespaces, keyed by the original location (or the tablespace OID). Each folder must be
        empty or absent; without a mapping the original location is used.
      - Logical restores of a cluster set's globals - new locations for the tablespaces it creates, keyed by tablespace name or
        original location. Each folder must exist on the target host, be empty and belong to the server's OS user. A key the set's
        globals do not hold fails the restore before anything changes.
    type: dict
  globals_tablespaces:
    description:
      - For a cluster set's globals, V(create) makes the tablespaces the target lacks (at their original location, or where
        O(tablespace_mapping) says); V(skip) applies no tablespace statement at all and loads custom, directory and tar dumps with
        C(pg_restore --no-tablespaces), so their objects land in the default tablespace (a plain dump that sets a skipped tablespace
        fails to load).
      - Every location is checked on the target before anything changes (it must exist and be empty). The tablespaces are created
        first (C(CREATE TABLESPACE) cannot run in a transaction), then roles, tablespace owners, grants and comments are applied in
        one transaction; if anything fails, the tablespaces made by this run are dropped again and nothing is left applied.
    type: str
    choices: [create, skip]
    default: create
  recovery_timeout:
    description:
      - Physical restores - seconds to wait, once the server accepts connections, for recovery to reach its target before the
        restore is rolled back.
      - Replay up to the consistent point (the end of the backup) happens before the server accepts connections, so it counts
        against O(start_timeout), not this one.
    type: int
    default: 600
  start_timeout:
    description:
      - Physical restores - seconds to wait for the server to start and accept connections (C(pg_ctl -w)).
      - This includes replaying the WAL from the backup's start to its end (until the cluster is consistent; all of recovery when the
        restored C(postgresql.conf) has C(hot_standby = off)), which can take long after a backup of a busy server; raise it rather than
        O(recovery_timeout) when the restored server does not start in time.
    type: int
    default: 120
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
      - For physical restores, the binaries the restored cluster runs with (C(pg_ctl), C(pg_verifybackup), C(pg_combinebackup), C(pg_controldata));
        they must be of the backup's major version.
    type: path
notes:
  - A set dumped from an older major version restores into a newer server (the target's pg_restore is used).
  - >-
    Physical restores run on the host whose cluster is replaced, as root (or the O(os_user)). The set is deployed next to
    O(pg_data) while the current server still runs (tars are streamed from the repository through sha256 into C(tar));
    the server is stopped only then, its data directory renamed to C(<pg_data>.pgdr-previous-<backup_id>), the new one renamed into
    place, recovery settings written to C(postgresql.auto.conf) with C(recovery.signal) (or C(standby.signal)), and the server started.
    If it does not start, or recovery does not reach the target within O(recovery_timeout), or verification fails, the restored
    directory is removed, the previous one put back and started again if it was running.
  - >-
    Refused before anything changes - a set that is incomplete or whose files do not match the manifest, a backup of another major
    version than the target's binaries or cluster, a recovery target before the backup's end or after the newest archived WAL,
    an O(pg_data) that holds a cluster or other files without O(force), and a place the server cannot use (O(os_user) cannot enter
    the folder that holds O(pg_data), or cannot write the server log when the server is started with C(pg_ctl)).
  - >-
    Missing folders above O(pg_data) (and above O(server_log)) are created owned by O(os_user), mode 0700, as initdb makes a data
    directory; they are removed again, if still empty, when the restore fails.
  - >-
    A restored server that does not start fails with the first FATAL line of its log, or, when it logged nothing, with what C(pg_ctl)
    or the service manager said.
  - >-
    Physical restores watch recovery over the connection options (O(login_host), O(login_port)): they must reach the restored server
    (with a C(port) in O(server_settings), that port). A server that never ran recovery (C(pg_last_wal_replay_lsn()) is null), or
    whose C(data_directory) is not O(pg_data), fails the restore, which is then rolled back.
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

- name: Point-in-time restore of db1's newest base backup onto the replica host, from the S3 WAL archive
  pgdr.backup.restore_cluster:
    cluster: db1
    pg_data: /var/lib/postgresql/16/main
    force: true
    recovery_target_time: "2026-11-22 10:15:00+00"
    archive: {type: s3, endpoint_url: "https://s3.example.com", bucket: pg-wal, prefix: db1,
              access_key: "{{ vault_s3_access_key }}", secret_key: "{{ vault_s3_secret_key }}"}
    repository: {type: s3, endpoint_url: "https://s3.example.com", bucket: pg-backups,
                 access_key: "{{ vault_s3_access_key }}", secret_key: "{{ vault_s3_secret_key }}"}
  become: true
"""

RETURN = r"""
backup_id:
  description: The set restored.
  returned: always
  type: str
kind:
  description: Kind of the set (logical-db, logical-cluster, logical-table, base), or probackup for a catalog's backup.
  returned: always
  type: str
checked_files:
  description:
    - Files whose size and sha256 were verified - for a logical restore every file of the set, before restoring; for a table
      restore the files it read (only those it needs), each checked as it was read into the scratch database.
  returned: for logical and table restores
  type: int
databases:
  description:
    - Per database - source name, target name, what happened, seconds taken, and verification (empty for table restores).
    - C(action) is V(created), V(replace) or V(use); in check mode it is what would happen - V(would_create), V(would_replace) or
      V(would_use).
    - C(database_properties) (databases this run created or replaced) - the source database's properties applied to it from the
      manifest (C(ALTER DATABASE SET) and C(ALTER ROLE IN DATABASE SET) count, ACL, connection limit, comment), and C(skipped), what
      could not be applied (a role absent on the target, a setting the target refuses). With O(verify) they are read back; a
      difference fails the verification (C(settings_mismatches)).
  returned: for logical and table restores
  type: list
  elements: dict
  sample: [{"source": "sales", "target": "sales_check", "action": "created", "seconds": 3.2,
            "verification": {"verified": true, "tables": 12, "mismatches": [], "settings_mismatches": []},
            "database_properties": {"settings": 2, "acl": ["=Tc/app", "app=CTc/app"], "connection_limit": 50, "comment": null,
                                    "skipped": []}}]
globals_restored:
  description: Whether the globals of a cluster set were applied.
  returned: for logical and table restores
  type: bool
globals:
  description:
    - For a cluster set with O(globals=true), what the globals step applied (or, in check mode, would apply) - roles created, roles
      that existed and were left as they are, tablespaces created (name, location, source_location), skipped
      (O(globals_tablespaces=skip)), and that existed.
  returned: for logical restores of a cluster set with globals
  type: dict
  sample: {"roles_created": ["app"], "roles_existing": ["postgres"], "tablespaces_created": [{"name": "fast", "location": "/srv/fast",
           "source_location": "/mnt/ssd/fast"}], "tablespaces_skipped": [], "tablespaces_existing": []}
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
    - In check mode, the plan (without rows and verification), its action what would happen - V(would_create), V(would_rename) or
      V(would_replace).
  returned: for table restores
  type: list
  elements: dict
  sample: [{"schema": "public", "table": "orders", "target_schema": "public", "target_table": "orders_restored_20261121T020000Z",
            "action": "renamed", "rows": 1200, "expected_rows": 1200, "verified": true, "problem": null}]
seconds:
  description: For table restores, seconds taken.
  returned: for table restores, when not in check mode
  type: float
plan:
  description:
    - For physical restores, what is (or in check mode would be) done.
    - C(existing) is what O(pg_data) held - V(absent), V(empty), V(running cluster), V(stopped cluster) or V(other) (files that are not
      a cluster, replaced with O(force)); C(create_folders) the missing folders above it that are made for O(os_user).
  returned: for physical restores
  type: dict
  sample: {"pg_data": "/var/lib/postgresql/16/main", "existing": "running cluster", "create_folders": [], "chain": ["20261122T020000Z"],
           "signal": "recovery", "was_running": true, "target": {"kind": "name", "value": "before_upgrade"}, "format": "tar"}
state:
  description: For physical restores, the state the restored server ended in - V(promoted), V(paused), V(standby) or V(shut down at target).
  returned: for physical restores, when not in check mode
  type: str
reached_lsn:
  description: For physical restores, the last WAL location replayed.
  returned: for physical restores, when not in check mode
  type: str
reached_time:
  description: For physical restores, the commit time of the last transaction replayed (null when none was replayed).
  returned: for physical restores, when not in check mode
  type: str
wal_files_restored:
  description:
    - For physical restores, how many WAL segments recovery fetched from the archive, counted from the server's log; null when the server
      does not log to the file pg_ctl was given (systemd, logging_collector).
  returned: for physical restores, when not in check mode
  type: int
timings:
  description: For physical restores, seconds for deploy, verify_backup, recovery (start to target) and total.
  returned: for physical restores, when not in check mode
  type: dict
  sample: {"deploy_seconds": 4.1, "verify_backup_seconds": 0.9, "recovery_seconds": 3.2, "total_seconds": 8.3}
backup:
  description: For restores from a probackup catalog, the restored backup as the tool's C(show) describes it (id, mode, status, LSNs, times).
  returned: for probackup restores
  type: dict
commands:
  description: For restores from a probackup catalog, the tool's command lines as run (the binary's name, then its arguments).
  returned: for probackup restores
  type: list
  elements: list
previous_data_dir:
  description: For physical restores with O(keep_previous=true), where the replaced data directory was kept.
  returned: for physical restores, when not in check mode
  type: str
"""

import contextlib

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions, ConnectionParams, connection_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.pg_service import service_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import recovery_target_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.logical.restore import LOGICAL_KINDS, LogicalRestore, LogicalRestoreOptions, with_session_role
from ansible_collections.pgdr.backup.plugins.module_utils.logical.table_restore import CONFLICTS, TableRestore
from ansible_collections.pgdr.backup.plugins.module_utils.physical.restore import BaseSetRestore, BaseSetRestoreOptions
from ansible_collections.pgdr.backup.plugins.module_utils.probackup.restore import ProbackupRestore, ProbackupRestoreOptions, catalog_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import select_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions, open_repository, storage_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import archive_argument_spec

# Declared so that Ansible checks them before run() and ansible-doc shows them: a restore reads either a repository
# (where the sets of ``cluster`` are) or a probackup catalog.
ARGUMENT_RELATIONS = dict(
    required_one_of=[["repository", "probackup"]],
    required_by={"repository": ["cluster"]},
)
LOGICAL_ONLY = ("database", "databases", "tables", "schemas", "terminate_sessions", "session_role")


def argument_spec():
    spec = connection_argument_spec()
    spec.update(storage_argument_spec())
    spec.update(
        cluster=dict(type="str"),
        backup_id=dict(type="str", default="latest"),
        database=dict(type="str"),
        databases=dict(type="list", elements="str"),
        globals=dict(type="bool", default=True),
        if_exists=dict(type="str", default="fail", choices=["fail", "rename", "replace", "use"]),
        keep_previous=dict(type="bool", default=False),
        terminate_sessions=dict(type="bool", default=False),
        session_role=dict(type="str"),
        verify=dict(type="bool", default=True),
        analyze=dict(type="bool", default=True),
        no_owner=dict(type="bool", default=False),
        no_privileges=dict(type="bool", default=False),
        encryption=dict(type="dict", options=dict(passphrase=dict(type="str", no_log=True))),
        pg_bin_dir=dict(type="path"),
        tables=dict(type="list", elements="str"),
        schemas=dict(type="list", elements="str"),
        conflict=dict(type="str", default="error", choices=list(CONFLICTS)),
        jobs=dict(type="int"),
        # physical restores (base sets)
        force=dict(type="bool", default=False),
        standby=dict(type="dict", options=dict(primary_conninfo=dict(type="str", required=True, no_log=True), slot=dict(type="str"))),
        archive_mode=dict(type="str", choices=["off", "on", "always"], default="off"),
        server_settings=dict(type="dict"),
        tablespace_mapping=dict(type="dict"),
        globals_tablespaces=dict(type="str", choices=["create", "skip"], default="create"),
        recovery_timeout=dict(type="int", default=600),
        start_timeout=dict(type="int", default=120),
    )
    spec.update(recovery_target_argument_spec())
    spec.update(service_argument_spec())
    spec.update(archive_argument_spec())
    spec.update(catalog_argument_spec())
    spec["repository"] = dict(spec["repository"], required=False)  # a probackup catalog is the other source
    return spec


def logical_engine(manifest, options):
    """The engine for a set restored through a connection (no pg_data): TableRestore or LogicalRestore."""
    if manifest["kind"] == "base":
        raise PgdrError("set %s is a base backup, which restores a whole cluster: give pg_data (the data directory it replaces)" % manifest["backup_id"])
    if manifest["kind"] not in LOGICAL_KINDS:
        raise PgdrError("set %s is a %s backup, which restore_cluster cannot restore" % (manifest["backup_id"], manifest["kind"]))
    if manifest["kind"] == "logical-table" or options.tables or options.schemas:
        return TableRestore
    return LogicalRestore


def run(module):
    conn_params = ConnectionParams(typed(ConnectionOptions, module.params))
    if module.params["probackup"]:
        return run_probackup(module, conn_params)
    with open_repository(typed(RepositoryOptions, module.params["repository"])) as repo:
        if module.params["pg_data"]:  # a whole cluster from a base backup; the server may be down, so no connection yet
            return run_physical(module, conn_params, repo)
        options = typed(LogicalRestoreOptions, module.params)
        manifest = select_set(repo, options.cluster, options.backup_id)
        engine = logical_engine(manifest, options)
        with contextlib.closing(conn_params.connect(autocommit=True)) as admin:
            params, admin = with_session_role(conn_params, admin, options.session_role)
            return engine(options, params, repo, manifest, admin).run(check_mode=module.check_mode)


def run_physical(module, conn_params, repo):
    """A base backup set replaces the cluster in pg_data."""
    # not declared mutually exclusive with pg_data: a probackup restore has pg_data too and has always ignored them
    for option in LOGICAL_ONLY:
        if module.params[option]:
            raise PgdrError("%s is for logical restores; a base backup restores the whole cluster in pg_data" % option)
    options = typed(BaseSetRestoreOptions, module.params)
    manifest = select_set(repo, options.cluster, options.backup_id, kind="base")
    return BaseSetRestore.from_options(options, conn_params, repo, manifest).run(check_mode=module.check_mode)


def run_probackup(module, conn_params):
    """A backup of a pg_probackup / gs_probackup catalog on this host, with the safety rules of physical restores."""
    for option, why in (("repository", "the catalog is the source"), ("archive", "restore_command is the tool's archive-get")):
        if module.params[option]:
            raise PgdrError("%s cannot be combined with probackup: %s" % (option, why))
    if not module.params["pg_data"]:
        raise PgdrError("a probackup restore replaces a whole cluster: give pg_data (the data directory it replaces)")
    return ProbackupRestore.from_options(typed(ProbackupRestoreOptions, module.params), conn_params).run(check_mode=module.check_mode)


def main():
    run_module(argument_spec(), run, **ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
