# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What module backup_catalog runs, callable without Ansible (the host-side runner pgdr-backup prunes and verifies with it).

``argument_spec()`` and ``ARGUMENT_RELATIONS`` are the module's options; ``options_from(params)`` types them once;
``run(options, repository, check_mode, now)`` lists, pins, unpins, prunes or verifies and returns the module's
result dict. Nothing here imports ``ansible.*`` at import time.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import catalog, retention
from ansible_collections.pgdr.backup.plugins.module_utils.catalog.timespec import iso, parse_moment, parse_positive_duration
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions, open_repository, storage_argument_spec
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import ArchiveOptions, archive_argument_spec, open_archive


@dataclasses.dataclass(frozen=True)
class CatalogOptions:
    action: str
    cluster: str
    backup_id: Optional[str]
    kind: Optional[List[str]]
    since: Optional[str]
    until: Optional[str]
    newest_before: Optional[str]
    pin_expires: Optional[str]
    keep_last: Optional[int]
    keep_within: Optional[str]
    incomplete_grace: str
    max_age: Optional[str]
    archive: Optional[ArchiveOptions]


# what Ansible checks before run(), and ansible-doc shows (check_options refuses the same without Ansible)
ARGUMENT_RELATIONS = dict(required_if=[("action", "pin", ("backup_id",)), ("action", "unpin", ("backup_id",))])


def argument_spec():
    spec = storage_argument_spec()
    spec.update(archive_argument_spec())
    spec.update(
        action=dict(type="str", default="list", choices=["list", "pin", "unpin", "prune", "verify"]),
        cluster=dict(type="str", required=True),
        backup_id=dict(type="str"),
        kind=dict(type="list", elements="str", choices=list(backup_set.KINDS)),
        since=dict(type="str"),
        until=dict(type="str"),
        newest_before=dict(type="str"),
        pin_expires=dict(type="str"),
        keep_last=dict(type="int"),
        keep_within=dict(type="str"),
        incomplete_grace=dict(type="str", default="1d"),
        max_age=dict(type="str"),
    )
    return spec


# options that mean something only with some actions: given elsewhere they are a mistake, not a no-op
_ONLY_WITH = {
    "since": ("list",), "until": ("list",), "newest_before": ("list",), "pin_expires": ("pin",),
    "keep_last": ("prune",), "keep_within": ("prune",), "max_age": ("verify",), "backup_id": ("list", "pin", "unpin", "verify"),
    "kind": ("list", "prune", "verify"), "archive": ("prune", "verify"),
}


def check_options(options):
    for name, actions in _ONLY_WITH.items():
        if getattr(options, name) is not None and options.action not in actions:
            raise PgdrError("option %s has no meaning with action %s (only with %s): drop it" % (name, options.action, ", ".join(actions)))
    backup_set.validate_cluster_name(options.cluster)
    if options.backup_id is not None:
        backup_set.validate_backup_id(options.backup_id)
    if options.action in ("pin", "unpin") and options.backup_id is None:
        raise PgdrError("action %s needs backup_id: the set to %s (action list shows them)" % (options.action, options.action))
    if options.action == "prune":
        if options.keep_last is None and options.keep_within is None:
            raise PgdrError("action prune needs keep_last, keep_within or both: without a rule it would keep only the newest set of each kind")
        if options.keep_last is not None and options.keep_last < 1:
            raise PgdrError("keep_last %d keeps nothing: give 1 or more (the newest set of each kind is kept anyway)" % options.keep_last)


def options_from(params):
    """The task's options and its repository's, typed once (``params``: the module's, or a job file's, after Ansible's checks and defaults)."""
    return typed(CatalogOptions, params), typed(RepositoryOptions, params["repository"])


def run(options, repository, check_mode, now=None):
    """The task's result dict; a PgdrError on failure. ``now`` (an aware UTC datetime): the time the task runs at, else the clock's."""
    check_options(options)  # before the repository is opened: a wrong option fails without touching the store
    now = catalog.utc_now() if now is None else now
    repo = open_repository(repository)
    try:
        if options.action == "list":
            return list_sets(options, repo, now)
        if options.action == "pin":
            return pin_set(options, repo, now, check_mode)
        if options.action == "unpin":
            return unpin_set(options, repo, check_mode)
        if options.action == "prune":
            return prune(options, repo, now, check_mode)
        return verify(options, repo, now)
    finally:
        repo.close()


def archive_names(options):
    """The names in the WAL archive (one listing), or None without ``archive``."""
    if options.archive is None:
        return None
    with open_archive(options.archive) as archive:
        return [item["name"] for item in archive.list()]


def prune_wal(options, kept_entries, names, check_mode):
    """Remove the WAL below what the oldest kept base set needs; the ``wal_pruned`` result."""
    plan = catalog.plan_wal_prune(kept_entries, names)
    files = plan["files"]
    if files and not check_mode:
        with open_archive(options.archive) as archive:
            archive.repository.delete_many(files)
    return dict(boundary=plan["boundary"], count=len(files), first=files[0] if files else None, last=files[-1] if files else None,
                reason=plan["reason"])


def _wal_line(wal_pruned):
    if not wal_pruned["count"]:
        return "WAL: nothing removed (%s)\n" % (wal_pruned["reason"] or "nothing below %s" % wal_pruned["boundary"])
    return "WAL: %d files removed, %s .. %s (everything below %s)\n" % (
        wal_pruned["count"], wal_pruned["first"], wal_pruned["last"], wal_pruned["boundary"])


def list_sets(options, repo, now):
    since = parse_moment(options.since, "since", now) if options.since is not None else None
    until = parse_moment(options.until, "until", now) if options.until is not None else None
    before = parse_moment(options.newest_before, "newest_before", now) if options.newest_before is not None else None
    entries = catalog.list_catalog(repo, options.cluster, now)
    result = dict(changed=False, sets=catalog.select(entries, options.kind, since, until, options.backup_id))
    if before is not None:
        selected = catalog.newest_before(entries, before, options.kind)
        if selected is None:
            raise PgdrError("no complete %sset of cluster %s in %s finished before %s: choose a later time or take a backup"
                            % ("%s " % "/".join(options.kind) if options.kind else "", options.cluster, repo.describe(), iso(before)))
        result["selected"] = selected
    return result


def _pin_text(pin):
    if pin is None:
        return "not pinned\n"
    return "pinned at %s until %s\n" % (pin.get("pinned_at") or "?", pin.get("expires") or "unpinned")


def pin_set(options, repo, now, check_mode):
    done = catalog.pin(repo, options.cluster, options.backup_id, options.pin_expires, now, check_mode)
    return dict(changed=done["changed"], pin=done["pin"], diff=dict(before=_pin_text(done["before"]), after=_pin_text(done["pin"])))


def unpin_set(options, repo, check_mode):
    done = catalog.unpin(repo, options.cluster, options.backup_id, check_mode)
    return dict(changed=done["changed"], pin=None, diff=dict(before=_pin_text(done["before"]), after=_pin_text(None)))


def _set_line(entry):
    return "%s %s %s%s\n" % (entry["backup_id"], entry["kind"] or entry["status"], entry["finished_at"] or entry["last_activity"] or "-",
                             " pinned" if entry["pinned"] else "")


def prune(options, repo, now, check_mode):
    rules = retention.Rules(
        keep_last=options.keep_last,
        keep_within=parse_positive_duration(options.keep_within, "keep_within") if options.keep_within is not None else None,
        incomplete_grace=parse_positive_duration(options.incomplete_grace, "incomplete_grace"),
    )
    entries = catalog.list_catalog(repo, options.cluster, now)
    names = archive_names(options)  # listed before anything is deleted: a wrong archive option fails first
    decisions, doomed = catalog.plan_prune(entries, rules, now, options.kind)
    doomed_ids = {entry["backup_id"] for entry in doomed}
    verdicts = {d.backup_id: d for d in decisions}
    sets = [dict(entry, keep=entry["backup_id"] not in doomed_ids, reasons=verdicts[entry["backup_id"]].reasons) for entry in entries]
    if check_mode:
        deleted, skipped = [entry["backup_id"] for entry in doomed], []
    else:
        deleted, skipped = catalog.delete_sets(repo, options.cluster, doomed, now)
    gone = set(deleted)
    diff = dict(before="".join(_set_line(entry) for entry in entries), after="".join(_set_line(entry) for entry in entries if entry["backup_id"] not in gone))
    # "spared", not "skipped": Ansible reads that key as the task's own status
    result = dict(changed=bool(deleted), sets=sets, deleted=deleted, spared=skipped,
                  kept=[entry["backup_id"] for entry in entries if entry["backup_id"] not in doomed_ids], diff=diff)
    if names is not None:
        # after the sets: a set whose deletion failed or was spared is still kept, and its WAL with it
        wal_pruned = prune_wal(options, [entry for entry in entries if entry["backup_id"] not in gone], names, check_mode)
        result.update(wal_pruned=wal_pruned, changed=result["changed"] or bool(wal_pruned["count"]))
        diff["before"] += "WAL: %d files\n" % len(names)
        diff["after"] += _wal_line(wal_pruned)
    return result


def verify(options, repo, now):
    max_age = parse_positive_duration(options.max_age, "max_age") if options.max_age is not None else None
    entries = catalog.list_catalog(repo, options.cluster, now)
    chosen = catalog.select(entries, options.kind, backup_id=options.backup_id)
    if options.backup_id is not None and not chosen:
        raise PgdrError("backup set %s/%s does not exist in %s; check cluster and backup_id (action list shows the sets)"
                        % (options.cluster, options.backup_id, repo.describe()))
    if options.backup_id is not None and not chosen[0]["complete"]:
        raise PgdrError("backup set %s/%s is incomplete (no manifest.json): there is nothing to verify it against; it is never restored, prune removes it"
                        % (options.cluster, options.backup_id))
    results, newest, message = catalog.verify(repo, options.cluster, chosen, now, max_age, archive_names(options))
    result = dict(changed=False, verified=results, newest_good=newest["backup_id"] if newest else None)
    if newest is not None:
        result["newest_good_age_seconds"] = int((now - catalog.entry_time(newest)).total_seconds())
    if message:
        raise PgdrError(message, **result)
    return result
