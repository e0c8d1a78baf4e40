#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: restore_drill
short_description: Prove on a drill host that a cluster's backups restore, in a scratch cluster beside what runs there
version_added: 0.1.0
description:
  - Runs one restore drill on the host the task runs on (a replica host or a scratch host) and returns its result as
    the drill report's C(drill) object (docs/drill-reports.md) - phases with times, RTO, RPO, the set restored, what was
    verified and how, and cleanup.
  - B(Nothing that runs on the drill host is replaced.) Each drill restores into a scratch cluster of its own under
    C(<drill_dir>/<cluster>-<drill>/) on O(port), listening on a socket in that 0700 folder only (no TCP), with
    C(archive_mode=off) so it never pushes WAL anywhere. Replacing a running cluster is what M(pgdr.backup.restore_cluster) does,
    not a drill.
  - O(drill=logical) (practice 1-2) dumps O(database) of the source (the primary named by the login options) into the
    drill's folder, restores it into a new scratch cluster (C(initdb)), and proves every table's row count and
    fingerprint equal to the manifest's, and every table readable end to end. Owners and privileges are not restored
    (the scratch cluster has none of the source's roles).
  - O(drill=standalone) (practice 3) writes a marker row on the source, takes a base backup with its WAL
    (C(wal_method=stream)), writes a second marker, restores the set into the scratch cluster and starts it; the first
    marker must be there, the second must not.
  - O(drill=pitr) (practice+) creates a physical slot on the source and streams its WAL with C(pg_receivewal) into the
    drill's folder, takes a base backup without WAL, writes a marker, creates a named restore point, writes a second
    marker, stops the receiver (the segment it was writing stays C(.partial)) and recovers the set through that archive
    to the restore point - the first marker present, the second absent, and the target shown to lie in the C(.partial) segment.
  - O(drill=latest) restores the newest complete set of O(cluster) already in O(repository) without taking a new one - a
    base set recovered through O(archive) to the end of the archive (O(latest_kind=base)), or a logical set
    (O(latest_kind=logical)).
  - Every physical drill also checks the restored cluster - the system identifier equal to the source's, C(pg_amcheck --all)
    clean (O(heapallindexed) adds C(--heapallindexed)), every table read end to end.
  - On the source a drill writes only rows in C(pgdr_drill.markers) (in the login database) and, for pitr, the slot
    C(pgdr_drill_<hash>); cleanup removes them, and the scratch cluster and its folder (unless O(keep)). A drill that was
    interrupted is cleaned up by the next drill of the same cluster and kind on the host.
  - A drill that does not pass fails the task with the reason in one line and still returns RV(drill), so a play can
    report every host (the role C(pgdr.backup.restore_drill) does, then fails at the end).
author:
  - pgdr.backup developers (@pgdr)
extends_documentation_fragment:
  - pgdr.backup.connection
  - pgdr.backup.storage
  - pgdr.backup.wal_archive
attributes:
  check_mode:
    support: full
    description: Checks the options and says which drill would run where; makes nothing, connects nowhere.
  diff_mode:
    support: none
    description: A drill changes nothing a diff could show (what it makes, it removes).
options:
  drill:
    description: The drill to run.
    type: str
    required: true
    choices: [logical, standalone, pitr, latest]
  cluster:
    description:
      - The cluster's name in the report, and where its sets are filed in O(repository) (O(drill=latest)). The drill's own
        sets are filed as C(<cluster>-drill) in its folder.
      - Defaults to O(login_host).
    type: str
  source_host:
    description: The source host's name in the report (the inventory name of the primary). Defaults to O(login_host).
    type: str
  drill_host:
    description: This host's name in the report. Defaults to its host name.
    type: str
  database:
    description: O(drill=logical) - the database to dump. Defaults to the login database.
    type: str
  repository:
    # the fragment's option, not required here: only O(drill=latest) reads a repository (the others take their own set)
    required: false
  latest_kind:
    description: O(drill=latest) - restore the newest C(base) set (with O(archive)) or the newest C(logical) set (one database or a whole cluster).
    type: str
    default: base
    choices: [base, logical]
  passphrase:
    description: The passphrase of encrypted sets (O(drill=latest)).
    type: str
  drill_dir:
    description: The folder the drills live in (one subfolder each), made for O(os_user) with mode 0700.
    type: path
    default: /var/lib/postgresql/pgdr-drill
  port:
    description: The scratch server's port; it listens on a socket in the drill's folder only. Must be free on the host.
    type: int
    default: 5499
  pg_bin_dir:
    description: Where the PostgreSQL binaries of the set's major version are (found in Debian's layout and PATH otherwise).
    type: path
  os_user:
    description: The OS user the scratch cluster runs as.
    type: str
    default: postgres
  heapallindexed:
    description: Run C(pg_amcheck) with C(--heapallindexed) (every heap tuple must have its index entries; slower).
    type: bool
    default: false
  keep:
    description: Leave the scratch cluster running (and its folder) for a person to look at; slots and markers are still removed.
    type: bool
    default: false
  recovery_timeout:
    description: Seconds recovery may take before the drill fails.
    type: int
    default: 600
notes:
  - The module runs as root (become) on the drill host; the scratch server runs as O(os_user).
  - RPO is a reference time minus the commit time of the newest transaction the restore recovered
    (C(pg_last_xact_replay_timestamp()), or the newest marker or the dump's snapshot). The reference is the drill's start
    for O(drill=latest) (what a failure now would lose), the moment the new set was taken for logical and standalone, and
    the restore point for pitr.
seealso:
  - module: pgdr.backup.restore_cluster
  - module: pgdr.backup.backup_catalog
"""

EXAMPLES = r"""
- name: Prove on the replica that the newest base backup and the WAL archive restore
  pgdr.backup.restore_drill:
    drill: latest
    cluster: main
    source_host: db1
    repository: {type: s3, bucket: backups, endpoint_url: "https://s3.example.com", access_key: "{{ s3_key }}", secret_key: "{{ s3_secret }}"}
    archive: {type: s3, bucket: backups, prefix: wal/main, endpoint_url: "https://s3.example.com", access_key: "{{ s3_key }}", secret_key: "{{ s3_secret }}"}
  become: true

- name: Point-in-time drill against the primary, through a streaming archive and its .partial segment
  pgdr.backup.restore_drill:
    drill: pitr
    cluster: main
    login_host: db1.example.com
    login_user: drill
    login_password: "{{ drill_password }}"
  become: true
  register: pitr
"""

RETURN = r"""
drill:
  description: The drill's result, as the drill report holds it (docs/drill-reports.md, format 1).
  returned: when a drill ran (also when it failed)
  type: dict
  sample: {cluster: main, source_host: primary15, drill_host: replica15, drill: standalone, result: passed, reason: "",
           started_at: "2026-12-07T08:00:00Z", finished_at: "2026-12-07T08:00:09.412Z", rto_seconds: 5.2, rpo_seconds: 0.4,
           phases: [{name: select, seconds: 3.1, result: ok}], set: {backup_id: "20261207T080001Z", kind: base, size_bytes: 31457280,
           age_seconds: 1.2, repository: "local:/var/lib/postgresql/pgdr-drill/main-standalone/sets"},
           verified: [{check: markers, ok: true, detail: "marker rows before present, after absent"}], cleanup: done}
scratch:
  description: Where the scratch cluster was, and whether it is kept running (O(keep)).
  returned: when a drill ran
  type: dict
  sample: {pg_data: /var/lib/postgresql/pgdr-drill/main-standalone/data, port: 5499, kept: false}
would:
  description: In check mode, the drill that would run and where.
  returned: check mode
  type: dict
"""

from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.drill import engine

argument_spec = engine.argument_spec


def main():
    run_module(argument_spec(), lambda module: engine.run(*engine.options_from(module.params), check_mode=module.check_mode),
               **engine.ARGUMENT_RELATIONS)


if __name__ == "__main__":
    main()
