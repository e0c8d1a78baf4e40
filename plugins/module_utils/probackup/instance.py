# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What module probackup_instance runs, callable without Ansible (the host-side runner pgdr-backup runs it too).

``argument_spec()`` and ``ARGUMENT_RELATIONS`` are the module's options; ``options_from(params)`` types them once;
``run(options, check_mode, diff, deprecate)`` converges the catalog and instance, or runs one action, and returns
the module's result dict. Nothing here imports ``ansible.*`` at import time.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
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
class InstanceOptions:
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


def options_from(params):
    """The task's options, typed once (``params``: the module's, or a job file's, after Ansible's checks and defaults)."""
    # the instance settings and the recovery target are flat options too: each part reads its own from the same params
    return typed(InstanceOptions, dict(params, config=params, target=params))


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


def run(options, check_mode, diff=False, deprecate=None):
    """The task's result dict; a PgdrError on failure.

    ``diff``: also return the configuration before and after (a task without action); ``deprecate``: a
    callable(msg, **kwargs), the module's ``module.deprecate``, told when the task uses a deprecated form
    (None: outside Ansible, nobody to tell).
    """
    if isinstance(options.target.recovery_target, dict):
        probackup.legacy_target(options.target.recovery_target)  # refused when malformed, as its suboptions were
        if deprecate is not None:
            deprecate(
                "recovery_target as a {kind, value} dict is deprecated; give the target as restore_cluster takes it - recovery_target_time, "
                "recovery_target_xid, recovery_target_lsn, recovery_target_name, or recovery_target: immediate (or latest)",
                **DEPRECATED,
            )
    refuse_misplaced_options(options)
    catalog = probackup.Probackup.detect(options.binary, options.backup_path)
    result = dict(changed=False, tool=catalog.program.kind, tool_version=catalog.program.version, commands=catalog.commands)
    if check_mode:
        result["would_run"] = []
    if options.action:
        require_instance(catalog, options)
        ACTIONS[options.action](catalog, options, result, check_mode)
    elif options.state == "present":
        ensure_present(catalog, options, result, check_mode, diff)
    else:
        ensure_absent(catalog, options, result, check_mode)
    return result


def run_or_record(catalog, argv, result, check_mode):
    """Run a command that changes the catalog, or in check mode record it."""
    result["changed"] = True
    if check_mode:
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


def ensure_present(catalog, options, result, check_mode, diff=False):
    desired = probackup.desired_config(options.config, catalog.program)
    state = probackup.catalog_state(options.backup_path)
    result["catalog_created"] = state in ("missing", "empty")
    if state == "other":
        if check_mode:
            raise PgdrError("%s is not empty and is not a backup catalog (no backups/ and wal/); choose an empty or missing folder" % options.backup_path)
        catalog.run(probackup.init_argv(catalog.program, options.backup_path))  # the tool refuses; its message says why
    if result["catalog_created"]:
        run_or_record(catalog, probackup.init_argv(catalog.program, options.backup_path), result, check_mode)
    if not options.instance:
        return
    current = None if (result["catalog_created"] and check_mode) else catalog.show_config(options.instance)
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
        run_or_record(catalog, probackup.add_instance_argv(catalog.program, options.backup_path, options.instance, pg_data, first), result, check_mode)
        current = dict(first, pgdata=pg_data) if check_mode else catalog.show_config(options.instance)
    now = probackup.current_config(current)
    changes = probackup.config_changes(now, desired)
    result["config_changes"] = changes
    if changes:
        run_or_record(catalog, probackup.set_config_argv(catalog.program, options.backup_path, options.instance, changes), result, check_mode)
    if diff:
        result["diff"] = dict(
            before={k: now.get(k) for k in sorted(desired)} if not result["instance_added"] else {}, after={k: desired[k] for k in sorted(desired)}
        )
    if not check_mode:
        result["config"] = catalog.show_config(options.instance) if changes else current


def ensure_absent(catalog, options, result, check_mode):
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
    run_or_record(catalog, probackup.del_instance_argv(catalog.program, options.backup_path, options.instance), result, check_mode)


# ---------------------------------------------------------------- actions


def take_backup(catalog, options, result, check_mode):
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
    if check_mode:
        run_or_record(catalog, argv, result, check_mode)
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


def validate_backups(catalog, options, result, check_mode):
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
    if check_mode:
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


def merge_backups(catalog, options, result, check_mode):
    argv = probackup.merge_argv(catalog.program, options.backup_path, options.instance, options.backup_id, options.threads)
    backups = {b["id"]: b for b in catalog.backups(options.instance)}
    target = backups.get(options.backup_id)
    if target is None:
        raise PgdrError("backup %s is not in instance %s; see action: show" % (options.backup_id, options.instance))
    result["backup_id"] = options.backup_id
    if target["backup-mode"] == "FULL":  # already merged (a merge gives the FULL the incremental's id)
        result.update(backup=probackup.backup_summary(target), deleted=[])
        return
    if run_or_record(catalog, argv, result, check_mode) is None:
        return
    after = {b["id"]: b for b in catalog.backups(options.instance)}
    result.update(backup=probackup.backup_summary(after[options.backup_id]), deleted=sorted(set(backups) - set(after)))


def delete_backups(catalog, options, result, check_mode):
    dry = options.dry_run or check_mode
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
        if check_mode and doomed:
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
        if check_mode and (expired or result.get("would_purge")):
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


def pin_backup(catalog, options, result, check_mode):
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
    if current != wanted and run_or_record(catalog, pin, result, check_mode) is not None:
        backup = find_backup(catalog, options)
    result["backup"] = probackup.backup_summary(backup)


def unpin_backup(catalog, options, result, check_mode):
    backup = find_backup(catalog, options)
    result["backup_id"] = backup["id"]
    unpin = probackup.set_backup_argv(catalog.program, options.backup_path, options.instance, options.backup_id, ttl="0")
    if backup.get("expire-time") and run_or_record(catalog, unpin, result, check_mode) is not None:
        backup = find_backup(catalog, options)
    result["backup"] = probackup.backup_summary(backup)


def show_catalog(catalog, options, result, check_mode):
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
