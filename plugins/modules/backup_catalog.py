#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_catalog
short_description: List, pin, prune and verify the backup sets of a cluster in a repository
version_added: 0.1.0
description:
  - Reads a repository (local, SFTP, S3) the way restores do, through each set's C(manifest.json), and acts on the
    sets of one O(cluster). A set with data but no manifest is C(incomplete) (interrupted, never restored); a set whose
    manifest cannot be read or checked is C(unreadable).
  - O(action=list) returns every set with its kind, times, LSNs, size, tool and pin; O(kind), O(since), O(until) and
    O(backup_id) filter, O(newest_before) picks the set a restore to that time would start from.
  - O(action=pin) and O(action=unpin) record a pin in C(<cluster>/<backup_id>/pin.json) beside the manifest (never in it,
    as the manifest is written once and hashed). A pinned set is never pruned until the pin expires.
  - O(action=prune) removes sets by O(keep_last) and O(keep_within), per kind, and incomplete sets older than
    O(incomplete_grace). Each set's manifest goes first, then its files, so a half-deleted set is never offered for restore.
  - O(action=verify) re-hashes every file of the chosen sets against the manifest (streamed, nothing copied to the host),
    names missing, damaged and extra files, and fails when a set is bad or the newest good set is older than O(max_age).
  - For base sets, C(wal) in RV(sets) is the WAL range the set needs (its first segment from C(start_lsn) and C(timeline)).
    With O(archive), O(action=verify) also checks that the WAL archive holds every segment of the set's timeline from that
    first segment to the newest one archived (at least to C(stop_lsn)), and the timeline's C(.history) file above timeline 1;
    a gap is named by its first and last missing segment.
  - With O(archive), O(action=prune) also removes, after the sets, the WAL files (segments, C(.partial) and C(.backup)
    files, on any timeline) below the first segment the oldest kept base set needs. C(.history) files always stay.
    With no kept base set, no WAL is pruned at all (RV(wal_pruned) says why).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.storage
  - pgdr.backup.wal_archive
attributes:
  check_mode:
    support: full
    description: O(action=prune), O(action=pin) and O(action=unpin) report what they would change and change nothing; list and verify only read.
  diff_mode:
    support: full
    description: O(action=prune) shows the sets before and after; pin and unpin show the pin before and after.
options:
  action:
    description:
      - V(list) the sets, V(pin) or V(unpin) one set, V(prune) by the retention rules, V(verify) the sets' files.
    type: str
    choices: [list, pin, unpin, prune, verify]
    default: list
  cluster:
    description: Name of the cluster in the repository layout C(<cluster>/<backup_id>/).
    type: str
    required: true
  backup_id:
    description:
      - The set to pin or unpin (required there); with V(list) and V(verify), only this set.
    type: str
  kind:
    description:
      - Only sets of these kinds (incomplete and unreadable sets have no kind and are then left out).
      - With O(action=prune), only these kinds are pruned; incomplete sets are removed only when O(kind) is not given.
    type: list
    elements: str
    choices: [logical-db, logical-cluster, logical-table, base, probackup]
  since:
    description:
      - With V(list), only sets that finished at or after this time (an incomplete set - its last write).
      - A time (ISO 8601 such as C(2026-11-21T14:00:00Z) or C(2026-11-21 14:00), UTC unless an offset is given; a date;
        a backup id such as C(20261121T140000Z)) or a duration back from now such as C(7d), C(12h), C(1d12h).
    type: str
  until:
    description: With V(list), only sets that finished at or before this time; same forms as O(since).
    type: str
  newest_before:
    description:
      - With V(list), also pick the newest complete set (of O(kind)) that finished before this time, in RV(selected); the
        task fails when there is none. Same forms as O(since).
    type: str
  pin_expires:
    description:
      - With V(pin), when the pin ends - a time (same forms as O(since)) or a duration from now such as C(30d). Without it
        the set stays pinned until O(action=unpin).
      - A duration counts from when the pin was made - running the same task again changes nothing while the pin holds.
        To move an expiry, give another value.
    type: str
  keep_last:
    description: With V(prune), keep the N newest complete sets of each kind. At least 1.
    type: int
  keep_within:
    description: With V(prune), keep every complete set that finished within this duration before now, e.g. C(14d), C(12h).
    type: str
  incomplete_grace:
    description:
      - With V(prune), an incomplete set (no manifest) whose last write is older than this is removed. A younger one may
        be a backup still running and is never touched. Make it longer than your longest backup run.
    type: str
    default: 1d
  max_age:
    description:
      - With V(verify), fail when the newest set that verified good finished longer ago than this (e.g. C(26h) for a
        daily backup), or when no set verified good - a stale-backup alarm.
    type: str
notes:
  - O(archive) is read here (listed, and with O(action=prune) deleted from), never configured; only types V(local), V(sftp)
    and V(s3) can be read. The module lists it from where it runs, like the repository. Encryption options are not needed.
  - The WAL segment size is the one a set's manifest records (C(physical.wal_segment_size)), else PostgreSQL's default 16 MiB.
    Later timelines (after a promotion) are not followed by O(action=verify).
  - Retention rules apply per kind - a logical-db set never pushes a base set out. A set is kept if any rule keeps it
    (O(keep_last) or O(keep_within)), and a pinned set always. The newest complete set of each kind is never pruned,
    even if the rules would remove it. A kept incremental base set keeps every set of its chain.
  - Sets whose manifest is C(unreadable) are never pruned; they fail O(action=verify).
  - The files of a plain base set's data directory are listed in PostgreSQL's C(backup_manifest), not in the set's
    manifest; O(action=verify) hashes C(backup_manifest) but not them - use M(pgdr.backup.pg_basebackup) with O(pgdr.backup.pg_basebackup#module:action=verify).
  - Times are compared in UTC. The time of a set is its manifest's C(finished_at).
seealso:
  - module: pgdr.backup.pg_logical_dump
  - module: pgdr.backup.pg_basebackup
  - module: pgdr.backup.restore_cluster
"""

EXAMPLES = r"""
- name: Every set of db1 in the S3 repository
  pgdr.backup.backup_catalog:
    cluster: db1
    repository:
      type: s3
      endpoint_url: https://s3.example.com
      bucket: pg-backups
      access_key: "{{ vault_s3_access_key }}"
      secret_key: "{{ vault_s3_secret_key }}"
  register: catalog

- name: The logical dump a restore to yesterday 18:00 would use
  pgdr.backup.backup_catalog:
    cluster: db1
    kind: [logical-db]
    newest_before: "2026-11-21T18:00:00Z"
    repository: {type: local, path: /var/backups/pgdr}
  register: found

- name: Keep the base backup before the upgrade for 90 days
  pgdr.backup.backup_catalog:
    action: pin
    cluster: db1
    backup_id: 20261121T020000Z
    pin_expires: 90d
    repository: {type: local, path: /var/backups/pgdr}

- name: Keep the last 7 sets of each kind and everything of the last 14 days
  pgdr.backup.backup_catalog:
    action: prune
    cluster: db1
    keep_last: 7
    keep_within: 14d
    repository: {type: sftp, host: vault.example.com, path: /srv/pgdr}

- name: Keep the last 2 base sets, and the WAL archive from the first segment the older one needs
  pgdr.backup.backup_catalog:
    action: prune
    cluster: db1
    kind: [base]
    keep_last: 2
    repository: {type: local, path: /var/backups/pgdr}
    archive: {type: local, path: /var/backups/pgdr-wal/db1}

- name: Every base set's files, and the archive holds all WAL from each set's start on
  pgdr.backup.backup_catalog:
    action: verify
    cluster: db1
    kind: [base]
    repository: {type: local, path: /var/backups/pgdr}
    archive: {type: local, path: /var/backups/pgdr-wal/db1}

- name: Re-hash every set; fail if the newest good one is older than 26 hours
  pgdr.backup.backup_catalog:
    action: verify
    cluster: db1
    max_age: 26h
    repository: {type: local, path: /var/backups/pgdr}
"""

RETURN = r"""
sets:
  description:
    - The sets of the cluster (after the filters), oldest first by backup id. With V(prune), every set with its verdict.
    - C(status) is C(complete), C(incomplete) (no manifest) or C(unreadable) (a manifest that cannot be read or checked, see C(problem)).
    - C(size) is the bytes of the set's files (for an incomplete set - what is stored); C(files) their number.
    - C(start_lsn), C(stop_lsn), C(timeline) and C(chain) (an incremental chain, oldest first) are set for base backups.
    - C(last_activity) is the newest write into an incomplete set. With V(prune), C(keep) and C(reasons) say what happens and why.
    - C(wal) (base sets, else null) is the WAL the set needs - C(first) and C(last) segment (of C(start_lsn) and C(stop_lsn)),
      C(timeline), C(history) (the timeline's history file, null on timeline 1), C(segment_size).
  returned: with list and prune
  type: list
  elements: dict
  sample:
    - backup_id: 20261121T020000Z
      kind: base
      status: complete
      complete: true
      started_at: "2026-11-21T02:00:00Z"
      finished_at: "2026-11-21T02:04:11.5Z"
      duration_seconds: 251.5
      start_lsn: 0/2000028
      stop_lsn: 0/2000100
      timeline: 1
      size: 23500000
      files: 3
      tool: pg_basebackup 15.8
      database: null
      format: tar
      chain: [20261121T020000Z]
      pinned: true
      pin_expires: "2027-02-19T09:12:00Z"
      last_activity: null
      problem: null
      wal: {first: "000000010000000000000002", last: "000000010000000000000002", timeline: 1, history: null, segment_size: 16777216}
      location: /var/backups/pgdr/db1/20261121T020000Z
selected:
  description: The set O(newest_before) picked (an element of RV(sets), ignoring O(since) and O(until)).
  returned: with list and newest_before
  type: dict
pin:
  description: The pin of the set after the task (C(pinned_at), C(expires) - null for no expiry, C(requested) - the pin_expires given); null after unpin.
  returned: with pin and unpin
  type: dict
  sample: {pinned_at: "2026-11-21T09:12:00Z", expires: "2027-02-19T09:12:00Z", requested: 90d}
deleted:
  description: Backup ids removed by the prune (in check mode - that would be removed), oldest first.
  returned: with prune
  type: list
  elements: str
kept:
  description: Backup ids the prune keeps.
  returned: with prune
  type: list
  elements: str
spared:
  description: Sets the prune meant to remove but left, because they changed since they were listed (C(backup_id), C(reason)).
  returned: with prune
  type: list
  elements: dict
verified:
  description:
    - One result per set checked - C(backup_id), C(kind), C(finished_at), C(ok), C(files_checked), C(bytes_checked),
      C(missing) (paths), C(damaged) (C(path), C(problem) - size or sha256 differs), C(extra) (files not in the manifest),
      C(problem) (one line, null when ok), C(seconds).
    - With O(archive), base sets also have C(wal) - C(ok), C(first) (the first segment needed), C(newest) (the newest segment
      archived on the set's timeline), C(checked) (segments looked for), C(gaps) (C(first), C(last), C(count) of each run of
      missing segments), C(history_missing), C(problem).
  returned: with verify
  type: list
  elements: dict
wal_pruned:
  description:
    - What the prune removed from O(archive) (in check mode - would remove) - C(boundary) (the first segment the oldest kept
      base set needs; everything below it goes), C(count), C(first) and C(last) (names of the files removed, in name order),
      C(reason) (why nothing was removed, e.g. no kept base set; else null).
  returned: with prune and archive
  type: dict
  sample: {boundary: "000000010000000000000009", count: 6, first: "000000010000000000000003", last: "000000010000000000000008", reason: null}
newest_good:
  description: The backup id of the newest set that verified good (null if none).
  returned: with verify
  type: str
newest_good_age_seconds:
  description: Seconds since the newest good set finished.
  returned: with verify, when a set verified good
  type: int
"""

import dataclasses
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import catalog, retention
from ansible_collections.pgdr.backup.plugins.module_utils.catalog.timespec import iso, parse_moment, parse_positive_duration
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
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


def run(module):
    options = typed(CatalogOptions, module.params)
    check_options(options)
    now = catalog.utc_now()
    repo = open_repository(typed(RepositoryOptions, module.params["repository"]))
    try:
        if options.action == "list":
            return list_sets(options, repo, now)
        if options.action == "pin":
            return pin_set(module, options, repo, now)
        if options.action == "unpin":
            return unpin_set(module, options, repo)
        if options.action == "prune":
            return prune(module, options, repo, now)
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


def pin_set(module, options, repo, now):
    done = catalog.pin(repo, options.cluster, options.backup_id, options.pin_expires, now, module.check_mode)
    return dict(changed=done["changed"], pin=done["pin"], diff=dict(before=_pin_text(done["before"]), after=_pin_text(done["pin"])))


def unpin_set(module, options, repo):
    done = catalog.unpin(repo, options.cluster, options.backup_id, module.check_mode)
    return dict(changed=done["changed"], pin=None, diff=dict(before=_pin_text(done["before"]), after=_pin_text(None)))


def _set_line(entry):
    return "%s %s %s%s\n" % (entry["backup_id"], entry["kind"] or entry["status"], entry["finished_at"] or entry["last_activity"] or "-",
                             " pinned" if entry["pinned"] else "")


def prune(module, options, repo, now):
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
    if module.check_mode:
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
        wal_pruned = prune_wal(options, [entry for entry in entries if entry["backup_id"] not in gone], names, module.check_mode)
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


def main():
    run_module(argument_spec(), run, needs_psycopg=False,  # reads the repository only, never a server
               required_if=[("action", "pin", ("backup_id",)), ("action", "unpin", ("backup_id",))])


if __name__ == "__main__":
    main()
