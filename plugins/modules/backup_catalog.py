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
  - O(action=prune) removes sets by O(keep_last) and O(keep_within), per kind (and per database for one-database dumps),
    and incomplete sets older than O(incomplete_grace). Each set's manifest goes first, then its files, so a half-deleted set is never offered for restore.
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
    description: With V(prune), keep the N newest complete sets of each kind (of each database, for C(logical-db) and C(logical-table) sets). At least 1.
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
  - Retention rules apply per kind, and per database for C(logical-db) and C(logical-table) sets - a logical-db set never
    pushes a base set out, nor the dumps of one database the only dump of another filed under the same cluster. A set is
    kept if any rule keeps it (O(keep_last) or O(keep_within)), and a pinned set always. The newest complete set of each
    kind (and database) is never pruned,
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

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions
from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module

# the run logic lives in module_utils so that pgdr-backup runs the same code outside Ansible; the spec is also
# read here (ansible-test, tests/unit/test_module_docs.py)
argument_spec = actions.argument_spec


def main():
    run_module(argument_spec(), lambda module: actions.run(*actions.options_from(module.params), check_mode=module.check_mode),
               needs_psycopg=False,  # reads the repository only, never a server
               **actions.ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
