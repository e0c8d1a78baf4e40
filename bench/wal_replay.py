"""WAL replay per segment: restore_cluster replaying the same archive from a local folder, from SFTP and from S3,
against the raw floor (restore_command ``cp``).

Archiving from BENCH_HOST into a folder on it is switched on, a base backup without WAL is taken into a local
repository on the replica host, and pgbench writes WAL for BENCH_WAL_SECONDS (default 20). The archive is then
copied into a folder on the replica host (local), a folder on backup1 (read over SFTP) and a prefix of the lab's
bucket (S3). restore_cluster restores the same base backup four times and replays the whole archive (no target):

- raw: restore_command ``cp <local folder>/%f %p`` (server_settings overrides the module's command): the floor;
- local, SFTP, S3: the restore_command the module writes (shell test-and-move from the spool, pgdr-wal fetch with
  its read-ahead behind it).

pgbench writes for BENCH_WAL_SECONDS (default 20), then ``pgbench -i`` into a scratch database tops the archive up
to BENCH_WAL_SEGMENTS segments (default 64). Seconds per segment = from "starting archive recovery" to the last
"restored log file" in the restored server's log, divided by the segments restored (the replay's pace, without the
server's start-up; the module's wal_files_restored is kept beside it); the targets: SFTP and S3 <= 0.1 s
per segment and <= 1.5 x local. The replica's own data directory is put back at the end, the source's archive
settings reset, the copies removed.
"""

import datetime
import os
import re
import shutil
import time
import uuid

from bench import dataset

BASE = "pgdr.backup.pg_basebackup"
RESTORE = "pgdr.backup.restore_cluster"
WAL = "pgdr.backup.wal_archive_config"
BACKUP_HOST = "backup1"
SOURCES = ("raw", "local", "sftp", "s3")
SCRATCH_DB = "pgdr_bench_walreplay"
# the restored server's log lines that time the replay (log_line_prefix '%m [%p] ', the lab's and Debian's default)
LOG_LINE = re.compile(
    r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ \[\d+\] LOG:  (starting (?:archive|point-in-time) recovery|restored log file "[0-9A-F]{24}")', re.M
)


class WalReplayBench:
    def __init__(self, lab, host, playbooks, log, samples, wal_seconds=None):
        self.lab, self.host, self.playbooks, self.log, self.samples = lab, host, playbooks, log, samples
        self.wal_seconds = int(wal_seconds or os.environ.get("BENCH_WAL_SECONDS") or 20)
        self.wal_segments = int(os.environ.get("BENCH_WAL_SEGMENTS") or 64)
        self.backup1 = lab.host(BACKUP_HOST)
        self.replica = next(h for h in lab.hosts.values() if h.upstream == host.name)
        self.suffix = uuid.uuid4().hex[:6]
        self.wal_path = "/var/backups/pgdr-bench-walreplay-%s" % self.suffix  # on the source, the replica and backup1
        self.repo_path = "/var/backups/pgdr-bench-walreplay-sets-%s" % self.suffix  # on the replica
        self.s3_prefix = "bench-walreplay-%s" % self.suffix
        self.cluster = "bench-walreplay-%s" % host.name
        self.backup_id = "bench-walreplay-%s" % self.suffix
        self.saved = self.replica.pg_data + ".bench-walreplay-saved"
        self.segments = 0
        self.archiving = False
        self.set_aside = False  # whether this part moved the replica's own cluster aside (prestore may have already)

    def _pg_ctl(self, host, *args):
        log_file = "/var/lib/postgresql/%d/postgresql.log" % host.major
        return host.run([host.pg_bin_dir + "/pg_ctl", "-D", host.pg_data, "-l", log_file, "-w", *args], user="postgres", check=False)

    def _connection(self, host):
        return dict(login_host=host.address, login_user="postgres", login_password=self.lab.pg_password)

    def _archive(self, source):
        if source in ("raw", "local"):
            return {"type": "local", "path": self.wal_path}
        if source == "sftp":
            return self.lab.sftp_repository(self.backup1, self.wal_path)
        s3 = self.lab.s3
        return {"type": "s3", "endpoint_url": s3["endpoint"], "region": s3["region"], "bucket": s3["bucket"], "prefix": self.s3_prefix,
                "access_key": s3["access_key"], "secret_key": s3["secret_key"]}

    def _seen(self, host):
        """The archive folder on ``host`` as the controller sees it (the lab binds <host dir>/var-backups there)."""
        return os.path.join(str(host.dir), "var-backups", os.path.relpath(self.wal_path, "/var/backups"))

    def _clear_target(self):
        self._pg_ctl(self.replica, "stop", "-m", "immediate")
        self.replica.run(["rm", "-rf", self.replica.pg_data])

    # ---- the archive, once --------------------------------------------------------------------------------------

    def prepare(self):
        # the replica's own cluster is kept aside for the whole part and put back by cleanup()
        if self.replica.run(["test", "-e", self.replica.pg_data], check=False).returncode == 0:
            self._pg_ctl(self.replica, "stop", "-m", "fast")
            self.replica.run(["mv", self.replica.pg_data, self.saved])
            self.set_aside = True
        settings = dict(archive_mode="on", archive={"type": "local", "path": self.wal_path}, archive_name="bench-walreplay-%s" % self.suffix,
                        pg_data=self.host.pg_data, **self._connection(self.host))
        for target in (self.host, self.replica, self.backup1):
            target.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.wal_path])
        self.replica.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.repo_path])
        self.archiving = True
        self.playbooks.run(self.host.name, [{"name": "wal", WAL: dict(settings, restart=True, verify=True)}], become_postgres=False)
        base = dict(cluster=self.cluster, backup_id=self.backup_id, format="tar", wal_method="none", checkpoint="fast", verify=False,
                    repository={"type": "local", "path": self.repo_path}, **self._connection(self.host))
        self.playbooks.run(self.replica.name, [{"name": "base", BASE: base}], become_postgres=False)
        start = self.host.psql("SELECT pg_current_wal_lsn()").strip()
        dataset.open_(self.host)
        try:
            self.host.run([self.host.pg_bin_dir + "/pgbench", "-h", "/run/postgresql", "-n", "-c", "4", "-j", "2", "-T", str(self.wal_seconds),
                           dataset.DATABASE], user="postgres", timeout=600)
        finally:
            dataset.park(self.host)
        # on a loaded machine the OLTP run writes only a few segments; pgbench -i into a scratch database (COPY, indexes)
        # tops them up to BENCH_WAL_SEGMENTS, so fixed costs do not hide the per-segment pace
        while float(self.host.psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s') / 16777216" % start).strip()) < self.wal_segments:
            self.host.psql('DROP DATABASE IF EXISTS "%s"' % SCRATCH_DB)
            self.host.psql('CREATE DATABASE "%s"' % SCRATCH_DB)
            self.host.run([self.host.pg_bin_dir + "/pgbench", "-h", "/run/postgresql", "-i", "-q", "-s", "5", SCRATCH_DB], user="postgres", timeout=600)
        self.host.psql('DROP DATABASE IF EXISTS "%s"' % SCRATCH_DB)
        self.playbooks.run(self.host.name, [{"name": "wal", WAL: dict(settings, verify=True)}], become_postgres=False)  # all archived
        # the same files everywhere, copied through the hosts' folders as the controller sees them (owner and mode kept)
        source = self._seen(self.host)
        names = sorted(os.listdir(source))
        client = self.lab.s3_client()
        for name in names:
            path = os.path.join(source, name)
            for target in (self.replica, self.backup1):
                shutil.copy2(path, os.path.join(self._seen(target), name))
                stat = os.stat(path)
                os.chown(os.path.join(self._seen(target), name), stat.st_uid, stat.st_gid)
            with open(path, "rb") as handle:
                client.put_object(Bucket=self.lab.s3["bucket"], Key="%s/%s" % (self.s3_prefix, name), Body=handle)
        self.segments = sum(1 for name in names if len(name) == 24)
        self.log("  walreplay: %d segments archived by pgbench in %d s, copied to %s, %s and S3"
                 % (self.segments, self.wal_seconds, self.replica.name, BACKUP_HOST))

    # ---- one replay ---------------------------------------------------------------------------------------------

    def replay(self, source):
        task = dict(cluster=self.cluster, backup_id=self.backup_id, pg_data=self.replica.pg_data, force=True, verify=False,
                    repository={"type": "local", "path": self.repo_path}, archive=self._archive(source), **self._connection(self.replica))
        if source == "raw":
            task["server_settings"] = {"restore_command": "cp %s/%%f %%p" % self.wal_path}
        log_file = os.path.join(os.path.dirname(self.replica.pg_data), "postgresql.log")  # restore_cluster's default server_log
        offset = int(self.replica.run(["sh", "-c", "cat %s 2>/dev/null | wc -c" % log_file]).stdout)
        wall, results = self.playbooks.run(self.replica.name, [{"name": "restore", RESTORE: task}], become_postgres=False)
        result = results["restore"]
        log = self.replica.run(["tail", "-c", "+%d" % (offset + 1), log_file]).stdout
        restored, seconds = replay_window(log)
        self.samples.add("walreplay_%s_module_count" % source, result["wal_files_restored"])  # the module's own count, for comparison
        self.samples.add("walreplay_%s_segments" % source, restored)
        self.samples.add("walreplay_%s_seconds" % source, seconds)
        self.samples.add("walreplay_%s_per_segment" % source, seconds / max(1, restored))
        self.samples.add("walreplay_%s_recovery_seconds" % source, result["timings"]["recovery_seconds"])
        if source != "raw":  # how often recovery outran the read-ahead (pgdr-wal fetch went to the store itself)
            spool_log = self.replica.run(["cat", "/var/spool/pgdr/restore-%s/.prefetch.log" % self.cluster], check=False).stdout
            self.samples.add("walreplay_%s_direct" % source, spool_log.count("came from the store directly"))
        self._clear_target()
        return restored, seconds

    def run_round(self, round_no):
        if not self.segments:
            self.prepare()
        for source in SOURCES:
            started = time.monotonic()
            restored, seconds = self.replay(source)
            direct = self.samples.get("walreplay_%s_direct" % source, [None])[-1]
            self.log("  round %d: walreplay %s: %d segments in %.2f s (%.3f s per segment; %.1f s in all)%s"
                     % (round_no, source, restored, seconds, seconds / max(1, restored), time.monotonic() - started,
                        "" if direct is None else "; %d fetched directly" % direct))

    def cleanup(self):
        problems = []
        steps = [
            ("drop the scratch database", lambda: self.host.psql('DROP DATABASE IF EXISTS "%s"' % SCRATCH_DB)),
            ("reset archiving on %s" % self.host.name,
             lambda: self.archiving and self.host.psql("ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")),
            ("restart %s" % self.host.name, lambda: self.archiving and self._pg_ctl(self.host, "restart", "-m", "fast")),
            ("put %s's cluster back" % self.replica.name, self._put_back),
            ("remove the archive copies", lambda: [h.run(["rm", "-rf", self.wal_path]) for h in (self.host, self.replica, self.backup1)]),
            ("remove the repository", lambda: self.replica.run(["rm", "-rf", self.repo_path])),
            ("remove the S3 copy", self._remove_s3),
            ("remove the archiving helper config", lambda: self.host.run(["rm", "-f", "/etc/pgdr/wal/bench-walreplay-%s.json" % self.suffix])),
            ("remove the restore's helper config and spool",
             lambda: self.replica.run(["rm", "-rf", "/etc/pgdr/wal/restore-%s.json" % self.cluster, "/var/spool/pgdr/restore-%s" % self.cluster])),
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every cleanup step runs; problems are reported
                problems.append("%s: %s" % (label, exc))
        return problems

    def _remove_s3(self):
        client = self.lab.s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix=self.s3_prefix + "/"):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=self.lab.s3["bucket"], Key=item["Key"])

    def _put_back(self):
        if not self.set_aside:
            return
        self._clear_target()
        self.replica.run(["mv", self.saved, self.replica.pg_data])
        self._pg_ctl(self.replica, "start")


def replay_window(log):
    """(segments restored, seconds from the start of archive recovery to the last segment restored), from the server log:
    the replay's pace without the server's start-up, the same window for every source."""
    started, last, count = None, None, 0
    for stamp, what in LOG_LINE.findall(log):
        moment = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
        if what.startswith("starting"):
            started, last, count = moment, None, 0
        elif started is not None:
            last, count = moment, count + 1
    if started is None or last is None:
        raise RuntimeError("no archive recovery with restored segments in the server log")
    return count, (last - started).total_seconds()


def summary(medians):
    """s/segment per source and the ratios the issue sets targets for, from the samples' medians."""
    per = {source: medians.get("walreplay_%s_per_segment" % source) for source in SOURCES}
    local = per["local"] or float("nan")
    return dict(
        per_segment=per,
        segments={source: medians.get("walreplay_%s_segments" % source) for source in SOURCES},
        local_vs_raw=local / per["raw"] if per["raw"] else None,
        sftp_vs_local=per["sftp"] / local if per["sftp"] is not None else None,
        s3_vs_local=per["s3"] / local if per["s3"] is not None else None,
        met=dict(sftp=bool(per["sftp"] is not None and per["sftp"] <= 0.1 and per["sftp"] / local <= 1.5),
                 s3=bool(per["s3"] is not None and per["s3"] <= 0.1 and per["s3"] / local <= 1.5)),
    )


def note(medians):
    s = summary(medians)
    per, count = s["per_segment"], s["segments"]
    return ("walreplay: the same archive replayed (no target): raw cp %d segments %.3f s/segment; local %.3f; SFTP %.3f; S3 %.3f. "
            "local/raw %.2f, SFTP/local %.2f, S3/local %.2f (targets: <= 0.1 s/segment and <= 1.5 x local; met: SFTP %s, S3 %s)"
            % (count["raw"], per["raw"], per["local"], per["sftp"], per["s3"], s["local_vs_raw"], s["sftp_vs_local"], s["s3_vs_local"],
               "yes" if s["met"]["sftp"] else "NO", "yes" if s["met"]["s3"] else "NO"))
