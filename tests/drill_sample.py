"""A realistic fleet drill run with its history, made with report.py's real API and written into a report folder as a
drill run writes it: for the browser test of the HTML page and for its screenshot in the docs before a real run.

Four drill hosts, each restoring one production cluster (logical and PITR drills, a standalone and a latest on two
of them); this run's PITR drill of the ledger failed in recovery; nine earlier nightly runs, one of which lost a
logical drill, so the trend has a gap-free line per kind and a history worth a chart.
"""

from __future__ import annotations

import random
import time

from ansible_collections.pgdr.backup.plugins.module_utils.drill import report

# (cluster, source host, drill host, drills, database size in MiB)
FLEET = (
    ("orders", "pg-orders-1", "drill-eu-1", ("logical", "pitr", "latest"), 2300),
    ("billing", "pg-billing-1", "drill-eu-2", ("logical", "pitr"), 860),
    ("crm", "pg-crm-1", "drill-us-1", ("logical", "standalone", "pitr"), 410),
    ("ledger", "pg-ledger-1", "drill-us-2", ("logical", "pitr"), 1250),
)
EARLIER_RUNS = 9
FIRST_START = report.epoch_of("2026-11-28T02:00:00Z")  # nightly at 02:00 UTC; this run is the tenth
REPOSITORY = "s3://pg-backups/prod"
FAILED = ("ledger", "pitr")  # this run's failure
FAILED_REASON = ("recovery stopped before the restore point drill_20261207T020412Z: WAL 00000001000000A20000003F is not in "
                 "the archive; check pg_receivewal on pg-ledger-1")
EARLIER_FAILURE = (4, "crm", "logical", "pg_restore failed: could not connect to the scratch cluster on port 55432 (it did not start: "
                   "no space left on device)")


def _backup_id(epoch):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(epoch)))


def _drill(rng, started, cluster, source, drill_host, kind, size_mib, failure=""):
    """One drill's JSON object, its phase times scaled by the database's size and by the drill's kind."""
    scale = size_mib / 1000.0
    restore = ("fetch", "deploy", "recovery") if kind in ("pitr", "latest") else ("fetch", "deploy")
    seconds = dict(select=rng.uniform(0.2, 0.6), fetch=rng.uniform(6, 9) * scale, deploy=rng.uniform(14, 18) * scale,
                   recovery=rng.uniform(25, 40) * scale * (1.4 if kind == "latest" else 1.0), verify=rng.uniform(4, 7) * scale + 2,
                   cleanup=rng.uniform(1.5, 3.5))
    names = ("select",) + restore + ("verify", "cleanup")
    phases = []
    for name in names:
        result = "ok"
        if failure and name == "recovery":
            result, seconds[name] = "failed", 300.0  # recovery waited for a WAL segment until its time ran out
        elif failure and name == "verify":
            result, seconds[name] = "skipped", 0.0
        phases.append(dict(name=name, seconds=round(seconds[name], 2), result=result))
    took = sum(phase["seconds"] for phase in phases)
    rto = None if failure else round(took - seconds["cleanup"], 1)
    if kind == "logical":
        backup = dict(backup_id=_backup_id(started - 6 * 3600), kind="logical-db",
                      size_bytes=int(size_mib * 0.38 * 1048576), age_seconds=round(6 * 3600 + rng.uniform(1, 4), 1), repository=REPOSITORY)
        rpo = round(6 * 3600 + rng.uniform(1, 4), 1)
        verified = [dict(check="row counts and fingerprints", ok=True, detail="%d tables equal the manifest" % (12 + len(cluster)))]
    else:
        age = rng.uniform(8 * 3600, 20 * 3600) if kind == "standalone" else rng.uniform(3600, 5 * 3600)
        backup = dict(backup_id=_backup_id(started - age), kind="base",
                      size_bytes=int(size_mib * 1048576), age_seconds=round(age, 1), repository=REPOSITORY)
        rpo = round(age, 1) if kind == "standalone" else round(rng.uniform(0.3, 2.5) if kind == "pitr" else rng.uniform(2, 9), 1)
        verified = [dict(check="restore point reached" if kind == "pitr" else "recovery ended", ok=True,
                         detail="timeline 1, .partial segment used" if kind == "pitr" else "consistent at the newest WAL"),
                    dict(check="pg_amcheck", ok=True, detail="clean, %d databases" % (2 + len(cluster) % 3)),
                    dict(check="system identifier", ok=True, detail="equals the source's")]
    if failure:
        rpo, verified = None, []
    return dict(cluster=cluster, source_host=source, drill_host=drill_host, drill=kind, result="failed" if failure else "passed",
                reason=failure, started_at=report.utc_text(started), finished_at=report.utc_text(started + took), rto_seconds=rto,
                rpo_seconds=rpo, phases=phases, set=backup, verified=verified, cleanup="done")


def fleet_run(number, rng):
    """Run ``number`` (0 is the oldest) of the sample: a Report, its drills started one after another per host."""
    start = FIRST_START + number * 86400 + rng.uniform(0, 30)
    drills, finished = [], start
    for cluster, source, drill_host, kinds, size_mib in FLEET:
        at = start + rng.uniform(1, 4)
        for kind in kinds:
            failure = ""
            if number == EARLIER_RUNS and (cluster, kind) == FAILED:
                failure = FAILED_REASON
            elif (number, cluster, kind) == EARLIER_FAILURE[:3]:
                failure = EARLIER_FAILURE[3]
            drill = _drill(rng, at, cluster, source, drill_host, kind, size_mib * (1 + number * 0.01), failure)
            drills.append(drill)
            at = report.epoch_of(drill["finished_at"]) + rng.uniform(0.5, 2)
        finished = max(finished, at)
    run_id = report.new_run_id(start, token="%06x" % rng.getrandbits(24))
    return report.build_report(drills, run_id, start, finished + 1.5, "awx-ee-7f9c2")


def write_sample(folder, seed=13):
    """Write the earlier runs and this run into the report folder ``folder``; returns this run's Report."""
    rng = random.Random(seed)
    runs = [fleet_run(number, rng) for number in range(EARLIER_RUNS + 1)]
    for run in runs:
        report.write_run(str(folder), run)
    return runs[-1]
