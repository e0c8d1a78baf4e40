#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: probackup_instance
short_description: pg_probackup and gs_probackup catalogs, instances, configuration and backups
version_added: 0.2.0
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
      - The tool - V(pg_probackup), V(gs_probackup) (looked up on C(PATH)) or a path. Which tool it is, is read
        from its C(version) output, not from its name.
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
  pgdata:
    description:
      - Data directory of the cluster (C(-D)). Needed to add an instance; compared and changed like the settings.
    type: path
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
      - V(validate) - validate the whole instance, one O(backup_id), or the backup that reaches O(recovery_target).
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
        (C(--ttl)). With O(action=backup) or O(action=pin).
    type: str
  expire_time:
    description: Pin until this time, such as V(2027-01-01 00:00:00+00) (C(--expire-time)).
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
    description: The backup for O(action=validate), V(merge), V(delete), V(pin), V(unpin) and V(show).
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
      - With O(action=validate), validate the backup and WAL that reach this target.
    type: dict
    suboptions:
      kind:
        description: V(time), V(xid), V(lsn), V(name), V(immediate) or V(latest).
        type: str
        required: true
        choices: [time, xid, lsn, name, immediate, latest]
      value:
        description: The target's value (none for V(immediate) and V(latest)).
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
    pgdata: /var/lib/postgresql/15/main
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

import datetime
import re

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as pb

LEVELS = ["VERBOSE", "LOG", "INFO", "WARNING", "ERROR", "OFF"]
ACTION_ONLY = (
    "stream",
    "slot",
    "threads",
    "note",
    "ttl",
    "expire_time",
    "rw_timeout",
    "backup_id",
    "status",
    "recovery_target",
    "recovery_target_inclusive",
    "recovery_target_timeline",
)


def argument_spec():
    return dict(
        binary=dict(type="str", default="pg_probackup"),
        backup_path=dict(type="path", required=True),
        instance=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        purge=dict(type="bool", default=False),
        pgdata=dict(type="path"),
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
        recovery_target=dict(
            type="dict",
            options=dict(
                kind=dict(type="str", required=True, choices=list(pb.TARGET_KINDS)),
                value=dict(type="str"),
            ),
        ),
        recovery_target_inclusive=dict(type="bool"),
        recovery_target_timeline=dict(type="str"),
        archive=dict(type="bool", default=False),
    )


def check_combinations(p):
    if p["action"]:
        config = [o for o in pb.CONFIG_OPTIONS if p.get(o) not in (None, [])]
        if config:
            raise PgdrError(
                "%s configure the instance; set them in a task without action (action %s uses the stored configuration)" % (", ".join(config), p["action"])
            )
        if p["action"] not in ("show", "validate") and not p["instance"]:
            raise PgdrError("action %s needs instance" % p["action"])
    else:
        used = [o for o in ACTION_ONLY if p.get(o) not in (None, False)]
        if used:
            raise PgdrError("%s go with an action (backup, validate, merge, delete, pin, unpin, show)" % ", ".join(used))
        if not p["instance"] and p["state"] == "absent":
            raise PgdrError("state absent removes an instance; name it with instance (the catalog itself is never removed)")


def run(module):
    p = module.params
    check_combinations(p)
    tool = pb.Probackup.detect(p["binary"], p["backup_path"])
    result = dict(changed=False, tool=tool.tool.kind, tool_version=tool.tool.version, commands=tool.commands)
    if module.check_mode:
        result["would_run"] = []
    if p["action"]:
        ensure_exists(tool, p)
        ACTIONS[p["action"]](module, tool, p, result)
    elif p["state"] == "present":
        present(module, tool, p, result)
    else:
        absent(module, tool, p, result)
    return result


def change(module, tool, argv, result):
    """Run a command that changes the catalog, or in check mode record it."""
    result["changed"] = True
    if module.check_mode:
        result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + argv[1:])
        return None
    return tool.run(argv)


def ensure_exists(tool, p):
    state = pb.catalog_state(p["backup_path"])
    if state != "catalog":
        raise PgdrError(
            "%s is not a backup catalog (%s); create it with state: present first"
            % (p["backup_path"], {"missing": "it does not exist", "empty": "it is empty"}.get(state, "no backups/ and wal/"))
        )
    if p["instance"] and tool.show_config(p["instance"]) is None:
        raise PgdrError("instance %s is not in the catalog %s; add it with state: present and pgdata" % (p["instance"], p["backup_path"]))


# ---------------------------------------------------------------- state


def present(module, tool, p, result):
    desired = pb.desired_config(p, tool.tool)
    state = pb.catalog_state(p["backup_path"])
    result["catalog_created"] = state in ("missing", "empty")
    if state == "other":
        if module.check_mode:
            raise PgdrError("%s is not empty and is not a backup catalog (no backups/ and wal/); choose an empty or missing folder" % p["backup_path"])
        tool.run(pb.init_argv(tool.tool, p["backup_path"]))  # the tool refuses; its message says why
    if result["catalog_created"]:
        change(module, tool, pb.init_argv(tool.tool, p["backup_path"]), result)
    if not p["instance"]:
        return
    current = None if (result["catalog_created"] and module.check_mode) else tool.show_config(p["instance"])
    result["instance_added"] = current is None
    if current is None:
        if not p["pgdata"]:
            raise PgdrError("instance %s is not in the catalog; pgdata is needed to add it" % p["instance"])
        first = {
            k: v
            for k, v in desired.items()
            if k in ("external-dirs", "remote-proto", "remote-host", "remote-port", "remote-user", "remote-path", "remote-libpath", "ssh-options")
        }
        change(module, tool, pb.add_instance_argv(tool.tool, p["backup_path"], p["instance"], p["pgdata"], first), result)
        current = dict(first, pgdata=p["pgdata"]) if module.check_mode else tool.show_config(p["instance"])
    now = pb.current_config(current)
    changes = pb.config_changes(now, desired)
    result["config_changes"] = changes
    if changes:
        change(module, tool, pb.set_config_argv(tool.tool, p["backup_path"], p["instance"], changes), result)
    if module._diff:
        result["diff"] = dict(
            before={k: now.get(k) for k in sorted(desired)} if not result["instance_added"] else {}, after={k: desired[k] for k in sorted(desired)}
        )
    if not module.check_mode:
        result["config"] = tool.show_config(p["instance"]) if changes else current


def absent(module, tool, p, result):
    if pb.catalog_state(p["backup_path"]) != "catalog" or tool.show_config(p["instance"]) is None:
        return
    backups = tool.backups(p["instance"])
    wal = pb.wal_segments(p["backup_path"], p["instance"])
    if (backups or wal) and not p["purge"]:
        raise PgdrError(
            "instance %s still has %d backups and %d archived WAL files, which del-instance removes; set purge: true to "
            "delete them" % (p["instance"], len(backups), len(wal))
        )
    result["deleted"] = [b["id"] for b in backups]
    change(module, tool, pb.del_instance_argv(tool.tool, p["backup_path"], p["instance"]), result)


# ---------------------------------------------------------------- actions


def do_backup(module, tool, p, result):
    argv = pb.backup_argv(
        tool.tool,
        p["backup_path"],
        p["instance"],
        p["backup_mode"],
        stream=p["stream"],
        temp_slot=p["temp_slot"],
        slot=p["slot"],
        threads=p["threads"],
        note=p["note"],
        ttl=p["ttl"],
        expire_time=p["expire_time"],
        delete_expired=p["delete_expired"],
        merge_expired=p["merge_expired"],
        delete_wal=p["delete_wal"],
        no_validate=p["no_validate"],
        rw_timeout=p["rw_timeout"],
    )
    before = {b["id"] for b in tool.backups(p["instance"])}
    if module.check_mode:
        change(module, tool, argv, result)
        return
    result["changed"] = True
    ran = tool.run(argv, check=False)
    after = tool.backups(p["instance"])
    new = [b for b in after if b["id"] not in before]
    result["deleted"] = sorted(before - {b["id"] for b in after})
    rc = ran.returncodes[0]
    if new:
        backup = new[0]  # newest first
        result.update(backup_id=backup["id"], backup=pb.backup_summary(backup))
        if backup["status"] not in pb.VALID_STATUSES or rc != 0:
            raise PgdrError(
                "backup %s of instance %s failed (status %s): %s"
                % (backup["id"], p["instance"], backup["status"], pb.failure_message(tool.tool.kind, "backup", rc, ran.stderr)),
                backup_id=backup["id"],
                backup=result["backup"],
                rc=rc,
                stderr=ran.stderr[-4000:],
                cmd=tool.commands[-2],
            )
        return
    if rc != 0:
        result["changed"] = False
        raise pb.ProbackupError(pb.failure_message(tool.tool.kind, "backup", rc, ran.stderr), rc=rc, stderr=ran.stderr[-4000:], cmd=tool.commands[-2])
    raise PgdrError("%s backup exited 0 but show lists no new backup of instance %s" % (tool.tool.kind, p["instance"]))


def target_of(p):
    return dict(p["recovery_target"]) if p["recovery_target"] else None


def do_validate(module, tool, p, result):
    argv = pb.validate_argv(
        tool.tool, p["backup_path"], p["instance"], p["backup_id"], target_of(p), p["recovery_target_inclusive"], p["recovery_target_timeline"]
    )
    instances = [p["instance"]] if p["instance"] else [i["instance"] for i in tool.show()]
    before = {(i, b["id"]): b["status"] for i in instances for b in tool.backups(i)}
    if module.check_mode:
        result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + argv[1:])  # validation marks statuses: not in check mode
        return
    ran = tool.run(argv, check=False)
    rc = ran.returncodes[0]
    after = {i: tool.backups(i) for i in instances}
    result["changed"] = before != {(i, b["id"]): b["status"] for i in instances for b in after[i]}
    invalid = [dict(instance=i, id=bid, status=status) for i in instances for bid, status in pb.invalid_backups(after[i])]
    result["invalid"] = invalid
    if p["instance"]:
        result["backups"] = [pb.backup_summary(b) for b in after[p["instance"]]]
    whole = not (p["backup_id"] or p["recovery_target"])
    if invalid and whole:  # one backup or a target: the tool's own reason below names what failed
        raise PgdrError(
            "validate found invalid backups: %s; their files do not match the checksums taken at backup time (or a parent "
            "is invalid); take a new FULL backup and delete them" % ", ".join("%s (%s)" % (x["id"], x["status"]) for x in invalid),
            invalid=invalid,
            rc=rc,
            stderr=ran.stderr[-4000:],
        )
    if rc != 0:
        raise pb.ProbackupError(pb.failure_message(tool.tool.kind, "validate", rc, ran.stderr), rc=rc, stderr=ran.stderr[-4000:], invalid=invalid)


def do_merge(module, tool, p, result):
    argv = pb.merge_argv(tool.tool, p["backup_path"], p["instance"], p["backup_id"], p["threads"])
    backups = {b["id"]: b for b in tool.backups(p["instance"])}
    target = backups.get(p["backup_id"])
    if target is None:
        raise PgdrError("backup %s is not in instance %s; see action: show" % (p["backup_id"], p["instance"]))
    result["backup_id"] = p["backup_id"]
    if target["backup-mode"] == "FULL":  # already merged (a merge gives the FULL the incremental's id)
        result.update(backup=pb.backup_summary(target), deleted=[])
        return
    if change(module, tool, argv, result) is None:
        return
    after = {b["id"]: b for b in tool.backups(p["instance"])}
    result.update(backup=pb.backup_summary(after[p["backup_id"]]), deleted=sorted(set(backups) - set(after)))


def do_delete(module, tool, p, result):
    dry = p["dry_run"] or module.check_mode
    argv = pb.delete_argv(
        tool.tool, p["backup_path"], p["instance"], p["backup_id"], p["delete_expired"], p["status"], dry, p["delete_wal"], p["merge_expired"]
    )
    before = tool.backups(p["instance"])
    ids = [b["id"] for b in before]
    if p["backup_id"] and p["backup_id"] not in ids:
        result.update(deleted=[], backups=[pb.backup_summary(b) for b in before], wal_purged=0)
        return
    wal_before = pb.wal_segments(p["backup_path"], p["instance"])
    if dry and (p["backup_id"] or p["status"]):
        doomed = descendants_of(before, p["backup_id"]) if p["backup_id"] else [b["id"] for b in before if b["status"] == p["status"]]
        result.update(would_delete=doomed, deleted=[], wal_purged=0, backups=[pb.backup_summary(b) for b in before])
        if module.check_mode and doomed:
            result["changed"] = True
            result["would_run"].append([argv[0].rsplit("/", 1)[-1]] + [a for a in argv[1:] if a != "--dry-run"])
        return
    ran = tool.run(argv)
    after = tool.backups(p["instance"])
    deleted = sorted(set(ids) - {b["id"] for b in after})
    purged = len(set(wal_before) - set(pb.wal_segments(p["backup_path"], p["instance"])))
    result.update(deleted=deleted, wal_purged=purged, backups=[pb.backup_summary(b) for b in after])
    if p["delete_expired"] or p["merge_expired"]:
        result["retention"] = pb.retention_verdicts(ran.stderr)
    if dry:
        expired = [v["id"] for v in result.get("retention", []) if v["verdict"] == "Expired"]
        result["would_delete"] = expired
        if p["delete_wal"]:
            result["would_purge"] = pb.wal_purge_ranges(ran.stderr)
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


def find_backup(tool, p):
    if not p["backup_id"]:
        raise PgdrError("action %s needs backup_id" % p["action"])
    for b in tool.backups(p["instance"]):
        if b["id"] == p["backup_id"]:
            return b
    raise PgdrError("backup %s is not in instance %s; see action: show" % (p["backup_id"], p["instance"]))


def ttl_seconds(ttl):
    match = re.match(r"^\s*(\d+)\s*(d|h|min|s)?\s*$", ttl)
    if not match:
        raise PgdrError("ttl %r is not an interval such as 30d, 12h, 90min or 3600 (seconds)" % ttl)
    return int(match.group(1)) * {"d": 86400, "h": 3600, "min": 60, "s": 1}[match.group(2) or "s"]


def do_pin(module, tool, p, result):
    backup = find_backup(tool, p)
    if p["ttl"] is None and p["expire_time"] is None:
        raise PgdrError("action pin needs ttl or expire_time")
    argv = pb.set_backup_argv(tool.tool, p["backup_path"], p["instance"], p["backup_id"], ttl=p["ttl"], expire_time=p["expire_time"])
    if p["ttl"] is not None:
        seconds = ttl_seconds(p["ttl"])
        if seconds == 0:
            raise PgdrError("ttl 0 removes the pin; use action: unpin")
        recovery = pb.parse_tool_time(backup.get("recovery-time"))
        if recovery is None:
            raise PgdrError("backup %s has no recovery time (status %s); it cannot be pinned by ttl" % (backup["id"], backup["status"]))
        wanted = recovery + datetime.timedelta(seconds=seconds)
    else:
        wanted = pb.parse_tool_time(p["expire_time"].strip().replace("T", " ").replace("Z", "+00"))
        if wanted is None:
            raise PgdrError("expire_time %r is not a time such as 2027-01-01 00:00:00+00" % p["expire_time"])
    current = pb.parse_tool_time(backup.get("expire-time"))
    result["backup_id"] = backup["id"]
    if current != wanted and change(module, tool, argv, result) is not None:
        backup = find_backup(tool, p)
    result["backup"] = pb.backup_summary(backup)


def do_unpin(module, tool, p, result):
    backup = find_backup(tool, p)
    result["backup_id"] = backup["id"]
    if (
        backup.get("expire-time")
        and change(module, tool, pb.set_backup_argv(tool.tool, p["backup_path"], p["instance"], p["backup_id"], ttl="0"), result) is not None
    ):
        backup = find_backup(tool, p)
    result["backup"] = pb.backup_summary(backup)


def do_show(module, tool, p, result):
    catalog = tool.show(p["instance"], p["backup_id"])
    result["catalog"] = catalog
    if p["instance"]:
        backups = pb.backups_of(catalog, p["instance"])
        result["backups"] = [pb.backup_summary(b) for b in backups]
        if p["backup_id"]:
            if not backups:
                raise PgdrError("backup %s is not in instance %s" % (p["backup_id"], p["instance"]))
            result["backup"] = pb.backup_summary(backups[0])
        else:
            latest = pb.latest_valid_backup(catalog, p["instance"])
            result["latest_valid"] = latest["id"] if latest else None
    if p["archive"]:
        result["archive"] = pb.archive_summary(tool.show_archive(p["instance"]))


ACTIONS = dict(backup=do_backup, validate=do_validate, merge=do_merge, delete=do_delete, pin=do_pin, unpin=do_unpin, show=do_show)


def main():
    run_module(argument_spec(), run)


if __name__ == "__main__":
    main()
