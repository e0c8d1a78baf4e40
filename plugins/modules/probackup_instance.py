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

import dataclasses
import datetime
import re
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import RecoveryTargetOptions, recovery_target_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as probackup

LEVELS = ["VERBOSE", "LOG", "INFO", "WARNING", "ERROR", "OFF"]
DEPRECATED = dict(version="1.0.0", collection_name="pgdr.backup")


def target_argument_spec():
    """PostgreSQL's recovery target options, as restore_cluster takes them, without recovery_target_action (a validate has none).

    ``recovery_target`` is raw: immediate or latest, or the deprecated {kind, value} dict (probackup.legacy_target checks it).
    """
    spec = {name: dict(option) for name, option in recovery_target_argument_spec().items() if name != "recovery_target_action"}
    spec["recovery_target"] = dict(type="raw")
    return spec


TARGET_OPTIONS = tuple(target_argument_spec())
ACTION_ONLY = ("stream", "slot", "threads", "note", "ttl", "expire_time", "rw_timeout", "backup_id", "status") + TARGET_OPTIONS
ACTIONS_ON_AN_INSTANCE = ("backup", "merge", "delete", "pin", "unpin")  # show and validate may cover every instance

# what Ansible checks before run(), and ansible-doc shows
ARGUMENT_RELATIONS = dict(
    required_if=[["action", action, ["instance"]] for action in ACTIONS_ON_AN_INSTANCE]
    + [["action", action, ["backup_id"]] for action in ("merge", "pin", "unpin")]
    + [["action", "pin", ["ttl", "expire_time"], True]],
    mutually_exclusive=[["ttl", "expire_time"]],
)


def argument_spec():
    spec = dict(
        binary=dict(type="str", default="pg_probackup"),
        backup_path=dict(type="path", required=True),
        instance=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        purge=dict(type="bool", default=False),
        pg_data=dict(type="path", aliases=["pgdata"], deprecated_aliases=[dict(name="pgdata", **DEPRECATED)]),
        external_dirs=dict(type="list", elements="path"),
        retention_redundancy=dict(type="int"),
        retention_window=dict(type="int"),
        wal_depth=dict(type="int"),
        compress_algorithm=dict(type="str", choices=["none", "zlib", "pglz", "lz4"]),
        compress_level=dict(type="int"),
        pgdatabase=dict(type="str"),
        pghost=dict(type="str"),
        pgport=dict(type="int"),
        pguser=dict(type="str"),
        archive_timeout=dict(type="int"),
        remote_proto=dict(type="str", choices=["ssh", "none"]),
        remote_host=dict(type="str"),
        remote_port=dict(type="int"),
        remote_user=dict(type="str"),
        remote_path=dict(type="str"),
        remote_libpath=dict(type="str"),
        ssh_options=dict(type="str"),
        log_level_console=dict(type="str", choices=LEVELS),
        log_level_file=dict(type="str", choices=LEVELS),
        log_directory=dict(type="path"),
        log_filename=dict(type="str"),
        action=dict(type="str", choices=["backup", "validate", "merge", "delete", "pin", "unpin", "show"]),
        backup_mode=dict(type="str", default="FULL", choices=["FULL", "PAGE", "DELTA", "PTRACK"], aliases=["mode"]),
        stream=dict(type="bool"),
        temp_slot=dict(type="bool", default=False),
        slot=dict(type="str"),
        threads=dict(type="int"),
        note=dict(type="str"),
        ttl=dict(type="str"),
        expire_time=dict(type="str"),
        delete_expired=dict(type="bool", default=False),
        merge_expired=dict(type="bool", default=False),
        delete_wal=dict(type="bool", default=False),
        no_validate=dict(type="bool", default=False),
        rw_timeout=dict(type="int"),
        backup_id=dict(type="str"),
        status=dict(type="str", choices=["OK", "DONE", "ERROR", "CORRUPT", "ORPHAN", "RUNNING"]),
        dry_run=dict(type="bool", default=False),
    )
    spec.update(target_argument_spec())
    spec.update(archive=dict(type="bool", default=False))
    return spec


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """What one task does, on which catalog and instance."""

    binary: str
    backup_path: str
    instance: Optional[str]
    state: str
    purge: bool
    action: Optional[str]
    backup_mode: str
    stream: Optional[bool]
    temp_slot: bool
    slot: Optional[str]
    threads: Optional[int]
    note: Optional[str]
    ttl: Optional[str]
    expire_time: Optional[str]
    delete_expired: bool
    merge_expired: bool
    delete_wal: bool
    no_validate: bool
    rw_timeout: Optional[int]
    backup_id: Optional[str]
    status: Optional[str]
    dry_run: bool
    archive: bool
    config: probackup.InstanceConfig  # the instance settings the task manages
    target: RecoveryTargetOptions  # for action validate; recovery_target may be the deprecated {kind, value} dict


def task_options(params):
    # the instance settings and the recovery target are flat options too: each part reads its own from the same params
    return typed(TaskOptions, dict(params, config=params, target=params))


def refuse_misplaced_options(options):
    """Instance settings go in a task without action, action options in one with an action."""
    if options.action:
        config = options.config.managed()
        if config:
            raise PgdrError(
                "%s configure the instance; set them in a task without action (action %s uses the stored configuration)" % (", ".join(config), options.action)
            )
    else:
        used = [name for name in ACTION_ONLY if getattr(options.target if name in TARGET_OPTIONS else options, name) not in (None, False)]
        if used:
            raise PgdrError("%s go with an action (backup, validate, merge, delete, pin, unpin, show)" % ", ".join(used))
        if not options.instance and options.state == "absent":
            raise PgdrError("state absent removes an instance; name it with instance (the catalog itself is never removed)")


def run(module):
    options = task_options(module.params)
    if isinstance(options.target.recovery_target, dict):
        probackup.legacy_target(options.target.recovery_target)  # refused when malformed, as its suboptions were
        module.deprecate(
            "recovery_target as a {kind, value} dict is deprecated; give the target as restore_cluster takes it - recovery_target_time, "
            "recovery_target_xid, recovery_target_lsn, recovery_target_name, or recovery_target: immediate (or latest)",
            **DEPRECATED,
        )
    refuse_misplaced_options(options)
    catalog = probackup.Probackup.detect(options.binary, options.backup_path)
    result = dict(changed=False, tool=catalog.program.kind, tool_version=catalog.program.version, commands=catalog.commands)
    if module.check_mode:
        result["would_run"] = []
    if options.action:
        require_instance(catalog, options)
        ACTIONS[options.action](module, catalog, options, result)
    elif options.state == "present":
        ensure_present(module, catalog, options, result)
    else:
        ensure_absent(module, catalog, options, result)
    return result


def run_or_record(module, catalog, argv, result):
    """Run a command that changes the catalog, or in check mode record it."""
    result["changed"] = True
    if module.check_mode:
        result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + argv[1:])
        return None
    return catalog.run(argv)


def require_instance(catalog, options):
    """An action needs the catalog, and the instance when it names one."""
    state = probackup.catalog_state(options.backup_path)
    if state != "catalog":
        raise PgdrError(
            "%s is not a backup catalog (%s); create it with state: present first"
            % (options.backup_path, {"missing": "it does not exist", "empty": "it is empty"}.get(state, "no backups/ and wal/"))
        )
    if options.instance and catalog.show_config(options.instance) is None:
        raise PgdrError("instance %s is not in the catalog %s; add it with state: present and pg_data" % (options.instance, options.backup_path))


# ---------------------------------------------------------------- state


def ensure_present(module, catalog, options, result):
    desired = probackup.desired_config(options.config, catalog.program)
    state = probackup.catalog_state(options.backup_path)
    result["catalog_created"] = state in ("missing", "empty")
    if state == "other":
        if module.check_mode:
            raise PgdrError("%s is not empty and is not a backup catalog (no backups/ and wal/); choose an empty or missing folder" % options.backup_path)
        catalog.run(probackup.init_argv(catalog.program, options.backup_path))  # the tool refuses; its message says why
    if result["catalog_created"]:
        run_or_record(module, catalog, probackup.init_argv(catalog.program, options.backup_path), result)
    if not options.instance:
        return
    current = None if (result["catalog_created"] and module.check_mode) else catalog.show_config(options.instance)
    result["instance_added"] = current is None
    if current is None:
        pg_data = options.config.pg_data
        if not pg_data:
            raise PgdrError("instance %s is not in the catalog; pg_data is needed to add it" % options.instance)
        first = {
            k: v
            for k, v in desired.items()
            if k in ("external-dirs", "remote-proto", "remote-host", "remote-port", "remote-user", "remote-path", "remote-libpath", "ssh-options")
        }
        run_or_record(module, catalog, probackup.add_instance_argv(catalog.program, options.backup_path, options.instance, pg_data, first), result)
        current = dict(first, pgdata=pg_data) if module.check_mode else catalog.show_config(options.instance)
    now = probackup.current_config(current)
    changes = probackup.config_changes(now, desired)
    result["config_changes"] = changes
    if changes:
        run_or_record(module, catalog, probackup.set_config_argv(catalog.program, options.backup_path, options.instance, changes), result)
    if module._diff:
        result["diff"] = dict(
            before={k: now.get(k) for k in sorted(desired)} if not result["instance_added"] else {}, after={k: desired[k] for k in sorted(desired)}
        )
    if not module.check_mode:
        result["config"] = catalog.show_config(options.instance) if changes else current


def ensure_absent(module, catalog, options, result):
    if probackup.catalog_state(options.backup_path) != "catalog" or catalog.show_config(options.instance) is None:
        return
    backups = catalog.backups(options.instance)
    wal = probackup.wal_segments(options.backup_path, options.instance)
    if (backups or wal) and not options.purge:
        raise PgdrError(
            "instance %s still has %d backups and %d archived WAL files, which del-instance removes; set purge: true to "
            "delete them" % (options.instance, len(backups), len(wal))
        )
    result["deleted"] = [b["id"] for b in backups]
    run_or_record(module, catalog, probackup.del_instance_argv(catalog.program, options.backup_path, options.instance), result)


# ---------------------------------------------------------------- actions


def take_backup(module, catalog, options, result):
    argv = probackup.backup_argv(
        catalog.program,
        options.backup_path,
        options.instance,
        options.backup_mode,
        stream=options.stream,
        temp_slot=options.temp_slot,
        slot=options.slot,
        threads=options.threads,
        note=options.note,
        ttl=options.ttl,
        expire_time=options.expire_time,
        delete_expired=options.delete_expired,
        merge_expired=options.merge_expired,
        delete_wal=options.delete_wal,
        no_validate=options.no_validate,
        rw_timeout=options.rw_timeout,
    )
    before = {b["id"] for b in catalog.backups(options.instance)}
    if module.check_mode:
        run_or_record(module, catalog, argv, result)
        return
    result["changed"] = True
    ran = catalog.run(argv, check=False)
    after = catalog.backups(options.instance)
    new = [b for b in after if b["id"] not in before]
    result["deleted"] = sorted(before - {b["id"] for b in after})
    rc = ran.returncodes[0]
    kind = catalog.program.kind
    if new:
        backup = new[0]  # newest first
        result.update(backup_id=backup["id"], backup=probackup.backup_summary(backup))
        if backup["status"] not in probackup.VALID_STATUSES or rc != 0:
            raise PgdrError(
                "backup %s of instance %s failed (status %s): %s"
                % (backup["id"], options.instance, backup["status"], probackup.failure_message(kind, "backup", rc, ran.stderr)),
                backup_id=backup["id"],
                backup=result["backup"],
                rc=rc,
                stderr=ran.stderr[-4000:],
                cmd=catalog.commands[-2],
            )
        return
    if rc != 0:
        result["changed"] = False
        raise probackup.ProbackupError(probackup.failure_message(kind, "backup", rc, ran.stderr), rc=rc, stderr=ran.stderr[-4000:], cmd=catalog.commands[-2])
    raise PgdrError("%s backup exited 0 but show lists no new backup of instance %s" % (kind, options.instance))


def validate_backups(module, catalog, options, result):
    target = probackup.validation_target(options.target)
    argv = probackup.validate_argv(
        catalog.program,
        options.backup_path,
        options.instance,
        options.backup_id,
        target,
        options.target.recovery_target_inclusive,
        options.target.recovery_target_timeline,
    )
    instances = [options.instance] if options.instance else [i["instance"] for i in catalog.show()]
    before = {(i, b["id"]): b["status"] for i in instances for b in catalog.backups(i)}
    if module.check_mode:
        result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + argv[1:])  # validation marks statuses: not in check mode
        return
    ran = catalog.run(argv, check=False)
    rc = ran.returncodes[0]
    after = {i: catalog.backups(i) for i in instances}
    result["changed"] = before != {(i, b["id"]): b["status"] for i in instances for b in after[i]}
    invalid = [dict(instance=i, id=bid, status=status) for i in instances for bid, status in probackup.invalid_backups(after[i])]
    result["invalid"] = invalid
    if options.instance:
        result["backups"] = [probackup.backup_summary(b) for b in after[options.instance]]
    whole = not (options.backup_id or target)
    if invalid and whole:  # one backup or a target: the tool's own reason below names what failed
        raise PgdrError(
            "validate found invalid backups: %s; their files do not match the checksums taken at backup time (or a parent "
            "is invalid); take a new FULL backup and delete them" % ", ".join("%s (%s)" % (x["id"], x["status"]) for x in invalid),
            invalid=invalid,
            rc=rc,
            stderr=ran.stderr[-4000:],
        )
    if rc != 0:
        raise probackup.ProbackupError(
            probackup.failure_message(catalog.program.kind, "validate", rc, ran.stderr), rc=rc, stderr=ran.stderr[-4000:], invalid=invalid
        )


def merge_backups(module, catalog, options, result):
    argv = probackup.merge_argv(catalog.program, options.backup_path, options.instance, options.backup_id, options.threads)
    backups = {b["id"]: b for b in catalog.backups(options.instance)}
    target = backups.get(options.backup_id)
    if target is None:
        raise PgdrError("backup %s is not in instance %s; see action: show" % (options.backup_id, options.instance))
    result["backup_id"] = options.backup_id
    if target["backup-mode"] == "FULL":  # already merged (a merge gives the FULL the incremental's id)
        result.update(backup=probackup.backup_summary(target), deleted=[])
        return
    if run_or_record(module, catalog, argv, result) is None:
        return
    after = {b["id"]: b for b in catalog.backups(options.instance)}
    result.update(backup=probackup.backup_summary(after[options.backup_id]), deleted=sorted(set(backups) - set(after)))


def delete_backups(module, catalog, options, result):
    dry = options.dry_run or module.check_mode
    argv = probackup.delete_argv(
        catalog.program,
        options.backup_path,
        options.instance,
        options.backup_id,
        options.delete_expired,
        options.status,
        dry,
        options.delete_wal,
        options.merge_expired,
    )
    before = catalog.backups(options.instance)
    ids = [b["id"] for b in before]
    if options.backup_id and options.backup_id not in ids:
        result.update(deleted=[], backups=[probackup.backup_summary(b) for b in before], wal_purged=0)
        return
    wal_before = probackup.wal_segments(options.backup_path, options.instance)
    if dry and (options.backup_id or options.status):
        doomed = descendants_of(before, options.backup_id) if options.backup_id else [b["id"] for b in before if b["status"] == options.status]
        result.update(would_delete=doomed, deleted=[], wal_purged=0, backups=[probackup.backup_summary(b) for b in before])
        if module.check_mode and doomed:
            result["changed"] = True
            result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + [a for a in argv[1:] if a != "--dry-run"])
        return
    ran = catalog.run(argv)
    after = catalog.backups(options.instance)
    deleted = sorted(set(ids) - {b["id"] for b in after})
    purged = len(set(wal_before) - set(probackup.wal_segments(options.backup_path, options.instance)))
    result.update(deleted=deleted, wal_purged=purged, backups=[probackup.backup_summary(b) for b in after])
    if options.delete_expired or options.merge_expired:
        result["retention"] = probackup.retention_verdicts(ran.stderr)
    if dry:
        expired = [v["id"] for v in result.get("retention", []) if v["verdict"] == "Expired"]
        result["would_delete"] = expired
        if options.delete_wal:
            result["would_purge"] = probackup.wal_purge_ranges(ran.stderr)
        if module.check_mode and (expired or result.get("would_purge")):
            result["changed"] = True
            result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + [a for a in argv[1:] if a != "--dry-run"])
        return
    result["changed"] = bool(deleted) or purged > 0


def descendants_of(backups, backup_id):
    out = [backup_id]
    grew = True
    while grew:
        grew = False
        for b in backups:
            if b.get("parent-backup-id") in out and b["id"] not in out:
                out.append(b["id"])
                grew = True
    return out


def find_backup(catalog, options):
    """The backup_id's entry in show (the declared relations make sure backup_id is given)."""
    for b in catalog.backups(options.instance):
        if b["id"] == options.backup_id:
            return b
    raise PgdrError("backup %s is not in instance %s; see action: show" % (options.backup_id, options.instance))


def ttl_seconds(ttl):
    match = re.match(r"^\s*(\d+)\s*(d|h|min|s)?\s*$", ttl)
    if not match:
        raise PgdrError("ttl %r is not an interval such as 30d, 12h, 90min or 3600 (seconds)" % ttl)
    return int(match.group(1)) * {"d": 86400, "h": 3600, "min": 60, "s": 1}[match.group(2) or "s"]


def pin_backup(module, catalog, options, result):
    backup = find_backup(catalog, options)
    pin = probackup.set_backup_argv(catalog.program, options.backup_path, options.instance, options.backup_id, ttl=options.ttl, expire_time=options.expire_time)
    if options.ttl is not None:
        seconds = ttl_seconds(options.ttl)
        if seconds == 0:
            raise PgdrError("ttl 0 removes the pin; use action: unpin")
        recovery = probackup.parse_tool_time(backup.get("recovery-time"))
        if recovery is None:
            raise PgdrError("backup %s has no recovery time (status %s); it cannot be pinned by ttl" % (backup["id"], backup["status"]))
        wanted = recovery + datetime.timedelta(seconds=seconds)
    else:
        wanted = probackup.parse_tool_time(options.expire_time.strip().replace("T", " ").replace("Z", "+00"))
        if wanted is None:
            raise PgdrError("expire_time %r is not a time such as 2027-01-01 00:00:00+00" % options.expire_time)
    current = probackup.parse_tool_time(backup.get("expire-time"))
    result["backup_id"] = backup["id"]
    if current != wanted and run_or_record(module, catalog, pin, result) is not None:
        backup = find_backup(catalog, options)
    result["backup"] = probackup.backup_summary(backup)


def unpin_backup(module, catalog, options, result):
    backup = find_backup(catalog, options)
    result["backup_id"] = backup["id"]
    unpin = probackup.set_backup_argv(catalog.program, options.backup_path, options.instance, options.backup_id, ttl="0")
    if backup.get("expire-time") and run_or_record(module, catalog, unpin, result) is not None:
        backup = find_backup(catalog, options)
    result["backup"] = probackup.backup_summary(backup)


def show_catalog(module, catalog, options, result):
    listing = catalog.show(options.instance, options.backup_id)
    result["catalog"] = listing
    if options.instance:
        backups = probackup.backups_of(listing, options.instance)
        result["backups"] = [probackup.backup_summary(b) for b in backups]
        if options.backup_id:
            if not backups:
                raise PgdrError("backup %s is not in instance %s" % (options.backup_id, options.instance))
            result["backup"] = probackup.backup_summary(backups[0])
        else:
            latest = probackup.latest_valid_backup(listing, options.instance)
            result["latest_valid"] = latest["id"] if latest else None
    if options.archive:
        result["archive"] = probackup.archive_summary(catalog.show_archive(options.instance))


ACTIONS = dict(
    backup=take_backup,
    validate=validate_backups,
    merge=merge_backups,
    delete=delete_backups,
    pin=pin_backup,
    unpin=unpin_backup,
    show=show_catalog,
)


def main():
    run_module(argument_spec(), run, **ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
