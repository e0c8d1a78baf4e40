#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: probackup_instance
short_description: pg_probackup and gs_probackup catalogs, instances, configuration and backups
version_added: 0.1.0
description:
  - Drives the C(pg_probackup) command line (PostgreSQL) or its openGauss fork C(gs_probackup) on the host that
    holds the backup catalog, usually as the C(postgres) user.
  - Without O(action), the module is declarative. O(state=present) initializes the catalog at O(backup_path)
    when it is missing or empty (an existing catalog is fine; a folder that is not empty and not a catalog is an
    error), registers O(instance) with C(add-instance) when it is missing, and converges its configuration -
    it reads C(show-config --format=json --no-scale-units) and runs C(set-config) with only the settings that
    differ. O(state=absent) runs C(del-instance), which removes the instance's backups and WAL archive too, so it
    refuses while either exists unless O(purge=true).
  - With O(action), the module acts on an existing instance - V(backup), V(validate), V(merge), V(delete),
    V(pin), V(unpin) or V(show). Results come from the tool's JSON (C(show --format=json)), not from its log
    lines - a backup returns the new backup's id, mode, status, LSNs, sizes and duration.
  - Knows what each tool lacks (gs_probackup - no C(--stream), no PAGE or DELTA backups, no archive-push;
    pg_probackup - no C(--rw-timeout), no lz4) and refuses such options with a message that says so, before
    running anything.
  - A failed command fails the task with one line built from the tool's exit code and ERROR line, plus what
    to do; a backup that ends with status ERROR fails naming its id; a validation that leaves CORRUPT or
    ORPHAN backups fails and lists them.
author:
  - pgdr.backup developers (@pgdr)
attributes:
  check_mode:
    support: full
    description:
      - State - reads the catalog and reports the commands it would run. Actions - runs nothing that changes the
        catalog; O(action=delete) with O(delete_expired) or O(delete_wal) runs the tool's own C(--dry-run) to say what
        would go, and reports changed when it names an expired backup or WAL that can be removed (RV(would_purge)).
  diff_mode:
    support: full
    description: Before and after values of the configuration settings the task manages.
options:
  binary:
    description:
      - The backup tool's program - V(pg_probackup), V(gs_probackup) (looked up on C(PATH)) or the path of its binary.
        Which tool it is, is read from its C(version) output, not from its name.
      - This is the tool itself, not PostgreSQL's client programs (the folder other modules of this collection take as
        C(pg_bin_dir)).
    type: str
    default: pg_probackup
  backup_path:
    description: The backup catalog (C(-B)). It must be on this host.
    type: path
    required: true
  instance:
    description:
      - The instance name in the catalog (C(--instance)). Required except for O(action=show) and
        O(action=validate), which then cover every instance.
    type: str
  state:
    description:
      - V(present) - the catalog exists, the instance is registered and configured as given.
      - V(absent) - the instance is not in the catalog (C(del-instance)).
      - Ignored with O(action); an action needs the instance to exist.
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=absent), allow C(del-instance) to remove the instance's backups and archived WAL.
    type: bool
    default: false
  pg_data:
    description:
      - Data directory of the cluster (C(-D), the tool's C(pgdata) setting). Needed to add an instance; compared and
        changed like the settings.
      - The alias O(pgdata) is deprecated and will be removed in 1.0.0; use O(pg_data), the name
        M(pgdr.backup.restore_cluster) and M(pgdr.backup.wal_archive_config) use for a data directory.
    type: path
    aliases: [pgdata]
  external_dirs:
    description: External directories backed up with the cluster (C(--external-dirs), joined with colons).
    type: list
    elements: path
  retention_redundancy:
    description: Number of FULL backups to keep (C(retention-redundancy)); V(0) disables it.
    type: int
  retention_window:
    description: Days of recoverability to keep (C(retention-window)); V(0) disables it.
    type: int
  wal_depth:
    description: Valid backups per timeline that keep their WAL for point-in-time recovery (C(wal-depth)).
    type: int
  compress_algorithm:
    description:
      - Compression of backups and archived WAL. pg_probackup has V(none), V(zlib) and V(pglz); gs_probackup
        also V(lz4).
    type: str
    choices: [none, zlib, pglz, lz4]
  compress_level:
    description: Compression level, 0 to 9.
    type: int
  pgdatabase:
    description: Database the tool connects to for a backup (C(pgdatabase)).
    type: str
  pghost:
    description: Host or socket folder the tool connects to (C(pghost)).
    type: str
  pgport:
    description: Port the tool connects to (C(pgport)).
    type: int
  pguser:
    description:
      - Role the tool connects as (C(pguser)). Grant it the C(probackup) profile of M(pgdr.backup.role_grants).
        Passwords are not stored by this module; use a C(.pgpass) file of the OS user that runs the task.
    type: str
  archive_timeout:
    description: Seconds a backup waits for its WAL to be archived (C(archive-timeout)).
    type: int
  remote_proto:
    description: V(ssh) or V(none) (C(remote-proto)).
    type: str
    choices: [ssh, none]
  remote_host:
    description: Host where the cluster runs, for backups over SSH (C(remote-host)).
    type: str
  remote_port:
    description: SSH port (C(remote-port)).
    type: int
  remote_user:
    description: SSH user (C(remote-user)).
    type: str
  remote_path:
    description: Folder of the tool's binary on the remote host (C(remote-path)).
    type: str
  remote_libpath:
    description: Library folder of gs_probackup on the remote host (C(remote-libpath)); gs_probackup only.
    type: str
  ssh_options:
    description: Extra ssh options as one string (C(ssh-options)).
    type: str
  log_level_console:
    description: Console log level (C(log-level-console)).
    type: str
    choices: [VERBOSE, LOG, INFO, WARNING, ERROR, 'OFF']
  log_level_file:
    description: Log file level (C(log-level-file)).
    type: str
    choices: [VERBOSE, LOG, INFO, WARNING, ERROR, 'OFF']
  log_directory:
    description: Folder of the tool's log files (C(log-directory)).
    type: path
  log_filename:
    description: Name pattern of the tool's log file (C(log-filename)).
    type: str
  action:
    description:
      - V(backup) - take a backup of O(backup_mode).
      - V(validate) - validate the whole instance, one O(backup_id), or the backup and WAL that reach a recovery target
        (O(recovery_target_time), O(recovery_target_xid), O(recovery_target_lsn), O(recovery_target_name) or
        O(recovery_target)).
      - V(merge) - merge the incremental O(backup_id) with its parents into one FULL (which takes that id).
        Merging a FULL backup does nothing.
      - V(delete) - delete O(backup_id) and its descendants, or the backups of O(status), or what the retention
        policy expires (O(delete_expired), O(merge_expired), O(delete_wal)); O(dry_run) only reports.
        A O(backup_id) that is not in the catalog is already deleted - nothing to do.
      - V(pin) - keep O(backup_id) from retention for O(ttl) after its recovery time, or until O(expire_time).
      - V(unpin) - remove the pin of O(backup_id).
      - V(show) - return the catalog (C(show --format=json)), and with O(archive) the WAL timelines.
    type: str
    choices: [backup, validate, merge, delete, pin, unpin, show]
  backup_mode:
    description:
      - Backup mode for O(action=backup). pg_probackup has V(FULL), V(PAGE), V(DELTA) and V(PTRACK);
        gs_probackup V(FULL) and V(PTRACK).
    type: str
    choices: [FULL, PAGE, DELTA, PTRACK]
    default: FULL
    aliases: [mode]
  stream:
    description:
      - Stream the WAL the backup needs into the backup (C(--stream)) instead of taking it from the archive.
      - pg_probackup only; gs_probackup always streams and refuses the option.
    type: bool
  temp_slot:
    description: Stream through a temporary replication slot (C(--temp-slot)).
    type: bool
    default: false
  slot:
    description: Replication slot to stream through (C(-S)).
    type: str
  threads:
    description: Parallel threads (C(-j)) for backup and merge.
    type: int
  note:
    description: A note stored with the backup (C(--note)).
    type: str
  ttl:
    description:
      - How long a backup stays pinned after its recovery time, such as V(30d), V(12h) or seconds
        (C(--ttl)). With O(action=backup) or O(action=pin), which needs O(ttl) or O(expire_time).
      - Mutually exclusive with O(expire_time).
    type: str
  expire_time:
    description:
      - Pin until this time, such as V(2027-01-01 00:00:00+00) (C(--expire-time)).
      - Mutually exclusive with O(ttl).
    type: str
  delete_expired:
    description: Delete the backups the retention policy expires (C(--delete-expired)), after a backup or as O(action=delete).
    type: bool
    default: false
  merge_expired:
    description: Merge expired backups into their descendants where the policy allows (C(--merge-expired)).
    type: bool
    default: false
  delete_wal:
    description: Remove archived WAL no kept backup needs (C(--delete-wal)).
    type: bool
    default: false
  no_validate:
    description: Skip the validation after a backup (C(--no-validate)); the backup ends with status DONE.
    type: bool
    default: false
  rw_timeout:
    description: Connection read/write timeout in seconds (C(-t)); gs_probackup only.
    type: int
  backup_id:
    description:
      - The backup for O(action=validate), V(merge), V(delete), V(pin), V(unpin) and V(show).
      - Required with O(action=merge), O(action=pin) and O(action=unpin).
    type: str
  status:
    description: With O(action=delete), delete every backup with this status (C(--status)).
    type: str
    choices: [OK, DONE, ERROR, CORRUPT, ORPHAN, RUNNING]
  dry_run:
    description: With O(action=delete), only report what would be deleted (C(--dry-run)).
    type: bool
    default: false
  recovery_target:
    description:
      - With O(action=validate), V(immediate) validates the backup up to the point where it is consistent, V(latest) the backup
        and the WAL up to the end of the archive (C(--recovery-target)); pg_probackup only. The same option as in
        M(pgdr.backup.restore_cluster). Give at most one recovery target.
      - Deprecated form - a dict with C(kind) (V(time), V(xid), V(lsn), V(name), V(immediate) or V(latest)) and C(value) (none for
        V(immediate) and V(latest)), such as C(kind=time) with C(value=2026-11-22 10:15:00+00). It still works, with a
        deprecation warning, and will be removed in 1.0.0; use O(recovery_target_time), O(recovery_target_xid),
        O(recovery_target_lsn), O(recovery_target_name) or O(recovery_target=immediate) instead, which give the same command line.
    type: raw
  recovery_target_time:
    description: With O(action=validate), validate the backup and WAL that reach this time, with a time zone, for example V(2026-11-22 10:15:00+00).
    type: str
  recovery_target_xid:
    description: With O(action=validate), validate the backup and WAL that reach this transaction id.
    type: str
  recovery_target_lsn:
    description: With O(action=validate), validate the backup and WAL that reach this WAL location, for example V(0/5000100).
    type: str
  recovery_target_name:
    description: With O(action=validate), validate the backup and WAL that reach this restore point (made with C(pg_create_restore_point())).
    type: str
  recovery_target_inclusive:
    description: Whether the target itself is included (C(--recovery-target-inclusive)).
    type: bool
  recovery_target_timeline:
    description: Timeline to validate along (C(--recovery-target-timeline)); pg_probackup only.
    type: str
  archive:
    description: With O(action=show), also return the WAL archive's timelines and lost segments (C(show --archive)).
    type: bool
    default: false
notes:
  - Run the task on the host that holds the catalog, as the OS user that owns it (C(become_user) postgres).
  - Server preparation - a backup role with the C(probackup) profile of M(pgdr.backup.role_grants), and for
    PAGE backups and ARCHIVE-mode backups WAL archiving into the catalog with C(pg_probackup archive-push)
    (see C(docs/probackup.md)).
seealso:
  - module: pgdr.backup.role_grants
  - module: pgdr.backup.restore_cluster
"""

EXAMPLES = r"""
- name: Catalog, instance and retention
  pgdr.backup.probackup_instance:
    backup_path: /var/backups/probackup
    instance: main
    pg_data: /var/lib/postgresql/15/main
    retention_redundancy: 2
    retention_window: 7
    compress_algorithm: zlib
    compress_level: 1
  become: true
  become_user: postgres

- name: Nightly FULL backup, then delete what retention expires
  pgdr.backup.probackup_instance:
    backup_path: /var/backups/probackup
    instance: main
    action: backup
    backup_mode: FULL
    stream: true
    delete_expired: true
    delete_wal: true
  register: nightly

- name: Validate the instance; fails listing CORRUPT and ORPHAN backups
  pgdr.backup.probackup_instance:
    backup_path: /var/backups/probackup
    instance: main
    action: validate

- name: Validate what a restore to this time would use
  pgdr.backup.probackup_instance:
    backup_path: /var/backups/probackup
    instance: main
    action: validate
    recovery_target_time: "2026-11-22 10:15:00+00"

- name: Keep a backup for 30 days whatever the retention policy says
  pgdr.backup.probackup_instance:
    backup_path: /var/backups/probackup
    instance: main
    action: pin
    backup_id: "{{ nightly.backup_id }}"
    ttl: 30d

- name: openGauss - gs_probackup has FULL and PTRACK only
  pgdr.backup.probackup_instance:
    binary: gs_probackup
    backup_path: /var/backups/gs
    instance: og1
    action: backup
    backup_mode: PTRACK
    rw_timeout: 300
"""

RETURN = r"""
tool:
  description: Which tool ran, as its version output says.
  returned: always
  type: str
  sample: pg_probackup
tool_version:
  description: The tool's version.
  returned: always
  type: str
  sample: 2.5.15
commands:
  description: The commands that ran (argv lists; no secrets are ever on them).
  returned: always
  type: list
  elements: list
would_run:
  description: In check mode, the commands that would change something.
  returned: in check mode
  type: list
  elements: list
catalog_created:
  description: Whether the catalog was (or in check mode would be) initialized.
  returned: without action
  type: bool
instance_added:
  description: Whether the instance was (or would be) added.
  returned: without action, state present
  type: bool
config_changes:
  description: The settings changed (or that would be) with set-config, by show-config key.
  returned: without action, state present
  type: dict
  sample: {"retention-redundancy": "2"}
config:
  description: The instance's configuration after the task, from show-config --no-scale-units.
  returned: without action, state present, outside check mode
  type: dict
backup_id:
  description: The id of the backup taken, merged, pinned or unpinned.
  returned: with action backup, merge, pin, unpin
  type: str
  sample: TOUSRY
backup:
  description:
    - The backup as show --format=json reports it, with snake_case keys - id, mode, status, wal, parent_backup_id,
      timeline, start_lsn, stop_lsn, start_time, end_time, recovery_time, recovery_xid, expire_time, note,
      data_bytes, wal_bytes, uncompressed_bytes, pgdata_bytes, compress_alg, server_version, program_version,
      duration (seconds).
  returned: with action backup, merge, pin, unpin, and show with backup_id
  type: dict
deleted:
  description: Ids of the backups the task removed (a delete, a merge, or retention after a backup).
  returned: with action delete, merge, backup
  type: list
  elements: str
retention:
  description: The tool's retention verdict per backup - id, mode, status and Active or Expired.
  returned: with action delete and delete_expired or merge_expired, and with dry_run or in check mode
  type: list
  elements: dict
wal_purged:
  description: Number of archived WAL files removed.
  returned: with action delete
  type: int
would_purge:
  description:
    - The archived WAL the tool's dry run says O(delete_wal) can remove - timeline, first (the oldest segment) and last
      (the first segment kept), per timeline. In check mode a non-empty list makes the task report changed.
    - The dry run reckons with the backups as they are; with O(delete_expired) the real run also removes the WAL that only
      the expired backups needed, so it may purge more than listed.
  returned: with action delete, delete_wal and dry_run or in check mode, unless backup_id or status chooses the backups
  type: list
  elements: dict
backups:
  description: The instance's backups after the task (summaries as in RV(backup)), newest first.
  returned: with action show, validate, delete
  type: list
  elements: dict
invalid:
  description: The backups left CORRUPT or ORPHAN, each with id and status.
  returned: with action validate
  type: list
  elements: dict
catalog:
  description: show --format=json as the tool printed it - a list of instances with their backups.
  returned: with action show
  type: list
  elements: dict
latest_valid:
  description: Id of the newest backup whose status and whole chain are OK or DONE (what a restore of latest uses).
  returned: with action show and instance
  type: str
archive:
  description:
    - Per instance and timeline - tli, parent_tli, switchpoint, min_segno, max_segno, n_segments, size, zratio,
      status, lost_segments and the ids of its backups.
  returned: with action show and archive
  type: list
  elements: dict
"""

from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance

# the run logic lives in module_utils so that pgdr-backup runs the same code outside Ansible; the spec is also
# read here (ansible-test, tests/unit/test_module_docs.py)
argument_spec = instance.argument_spec


def run(module):
    return instance.run(instance.options_from(module.params), module.check_mode, diff=module._diff, deprecate=module.deprecate)


def main():
    run_module(argument_spec(), run, **instance.ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
