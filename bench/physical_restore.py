"""Physical restore: restore_cluster vs the raw steps (fetch + extract + start + recovery), and WAL replay speed.

The replica host of BENCH_HOST is the target. A base backup (tar, WAL streamed, no compression) of BENCH_HOST
is taken once into a local repository on the replica host itself, and once into one on backup1:

- local (the ratio's target, <= 1.1): raw `tar -x` of base.tar and pg_wal.tar into an empty data directory, chown,
  pg_ctl -w start, wait until recovery has ended — the seed's hand-run restore; then restore_cluster from the local
  repository with ``verify: false``, and with the default ``verify: true`` (pg_verifybackup's added cost);
- over SSH: raw `ssh backup1 cat base.tar | tar -x` (OpenSSH) against restore_cluster with an SFTP repository on
  backup1 (paramiko's SFTP over OpenSSH's client where ssh is installed, as on the lab hosts), ``verify: false``;
- from S3: the same set, also taken into the lab's object store (staged upload, on backup1), restored with
  ``verify: false``, against the local repository's restore (target <= 1.2).

SFTP read throughput (once per bench): one file of BENCH_SFTP_MB (default 256) MB on backup1 read to the end from the
replica host by `ssh cat`, by the SFTP repository as modules open it, and by the repository on paramiko's own
transport (bench/sftp_read.py, the fastest of three interleaved reads each; target: the repository >= 0.8 x ssh cat).

WAL replay: archiving to a folder on BENCH_HOST is switched on, a base backup without WAL taken, pgbench writes WAL
for BENCH_WAL_SECONDS (default 20), and restore_cluster replays the whole archive (no target) over SFTP twice: with
the read-ahead its restore_command does (`fetch --prefetch 8`), then with it off (restore_command overridden through
server_settings); the result's recovery time and the number of segments recovery fetched from the archive
(wal_files_restored) give seconds per segment.
The replica's own data directory is put back at the end, and the source's archive settings reset.
"""

import json
import os
import sys
import time
import uuid

from bench import dataset
from tests.lab.hosts import POSTGRES_KNOWN_HOSTS, POSTGRES_SSH_KEY

BASE = "pgdr.backup.pg_basebackup"
RESTORE = "pgdr.backup.restore_cluster"
WAL = "pgdr.backup.wal_archive_config"
BACKUP_HOST = "backup1"


def restore_command_string(archive, name, prefetch):
    """The collection's own restore_command for the ``archive`` dict, so the bench writes it exactly as the module does."""
    collections = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
    from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive as wal_archive

    return wal_archive.restore_command_string(typed(wal_archive.ArchiveOptions, archive), name, prefetch=prefetch)


class PhysicalRestoreBench:
    def __init__(self, lab, host, playbooks, log, samples, wal_seconds=20):
        self.lab, self.host, self.playbooks, self.log, self.samples = lab, host, playbooks, log, samples
        self.wal_seconds = wal_seconds
        self.backup1 = lab.host(BACKUP_HOST)
        self.replica = next(h for h in lab.hosts.values() if h.upstream == host.name)
        self.suffix = uuid.uuid4().hex[:6]
        self.repo_path = "/var/backups/pgdr-bench-restore-%s" % self.suffix  # on backup1, and on the replica host
        self.wal_path = "/var/backups/pgdr-bench-wal-%s" % self.suffix
        self.cluster = "bench-restore-%s" % host.name
        self.s3_prefix = "pgdr-bench-restore-%s" % self.suffix
        self.saved = self.replica.pg_data + ".bench-saved"
        self.backup_id = None
        for target in (self.backup1, self.replica):
            target.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.repo_path])
        # the replica's own cluster is kept aside for the whole bench and put back by cleanup()
        self._pg_ctl(self.replica, "stop", "-m", "fast")
        self.replica.run(["mv", self.replica.pg_data, self.saved])

    # ---- helpers ----------------------------------------------------------------------------------------------

    def _pg_ctl(self, host, *args):
        log_file = "/var/lib/postgresql/%d/postgresql.log" % host.major
        return host.run([host.pg_bin_dir + "/pg_ctl", "-D", host.pg_data, "-l", log_file, "-w", *args], user="postgres", check=False)

    def _connection(self, host):
        return dict(login_host=host.address, login_user="postgres", login_password=self.lab.pg_password)

    def _sftp(self, host, path):
        return self.lab.sftp_repository(host, path)

    def _s3(self):
        s3 = self.lab.s3
        return {"type": "s3", "endpoint_url": s3["endpoint"], "region": s3["region"], "bucket": s3["bucket"], "prefix": self.s3_prefix,
                "access_key": s3["access_key"], "secret_key": s3["secret_key"]}

    def _repository(self, where):
        if where == "local":
            return {"type": "local", "path": self.repo_path}
        return self._s3() if where == "s3" else self._sftp(self.backup1, self.repo_path)

    def _base_backup(self, backup_id, wal_method, on=BACKUP_HOST, where="local"):
        task = dict(
            cluster=self.cluster,
            backup_id=backup_id,
            format="tar",
            wal_method=wal_method,
            checkpoint="fast",
            verify=False,
            repository=self._repository(where),
            **self._connection(self.host),
        )
        self.playbooks.run(on, [{"name": "base", BASE: task}], become_postgres=False)

    def _clear_target(self):
        self._pg_ctl(self.replica, "stop", "-m", "immediate")
        self.replica.run(["rm", "-rf", self.replica.pg_data])

    def _restore(self, backup_id, where="sftp", **args):
        task = dict(
            cluster=self.cluster,
            backup_id=backup_id,
            pg_data=self.replica.pg_data,
            force=True,
            repository=self._repository(where),
            **self._connection(self.replica),
            **args,
        )
        wall, results = self.playbooks.run(self.replica.name, [{"name": "restore", RESTORE: task}], become_postgres=False)
        return wall, results["restore"]

    # ---- one round ---------------------------------------------------------------------------------------------

    def prepare(self):
        self.backup_id = "bench-%s" % self.suffix
        started = time.monotonic()
        self._base_backup(self.backup_id, "stream")
        self._base_backup(self.backup_id, "stream", on=self.replica.name)
        self._base_backup(self.backup_id, "stream", where="s3")
        self.log("  base backups for the restores (%.1f s)" % (time.monotonic() - started))

    def raw(self, local):
        folder = "%s/%s/%s" % (self.repo_path, self.cluster, self.backup_id)
        ssh = "ssh -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes root@%s" % (
            POSTGRES_SSH_KEY, POSTGRES_KNOWN_HOSTS, self.backup1.address)
        fetch = "cat" if local else "%s cat" % ssh
        data, bin_dir = self.replica.pg_data, self.replica.pg_bin_dir
        script = " && ".join([
            "install -d -o postgres -g postgres -m 0700 %s" % data,
            "%s %s/base.tar | tar -x -f - -C %s" % (fetch, folder, data),
            "%s %s/pg_wal.tar | tar -x -f - -C %s/pg_wal" % (fetch, folder, data),
            "chown -R postgres: %s" % data,
            "runuser -u postgres -- %s/pg_ctl -D %s -l /var/lib/postgresql/%d/postgresql.log -w start >/dev/null" % (bin_dir, data, self.replica.major),
            "until [ \"$(runuser -u postgres -- %s/psql -h /run/postgresql -XAtc 'SELECT pg_is_in_recovery()')\" = f ]; do sleep 0.2; done" % bin_dir,
        ])  # fmt: skip
        started = time.monotonic()
        self.replica.run(["sh", "-c", script], timeout=7200)
        self.samples.add("raw_physical_restore" + ("" if local else "_ssh"), time.monotonic() - started)
        self._clear_target()

    def module(self, verify, where="local"):
        key = "module_physical_restore" + ("_verify" if verify else "") + ("" if where == "local" else "_" + where)
        wall, result = self._restore(self.backup_id, where=where, verify=verify)
        self.samples.add(key, wall)
        self.samples.add(key + "_total", result["timings"]["total_seconds"])
        self.samples.add(key + "_deploy", result["timings"]["deploy_seconds"])
        self.samples.add(key + "_recovery", result["timings"]["recovery_seconds"])
        if verify:
            self.samples.add("module_physical_restore_verify_backup", result["timings"]["verify_backup_seconds"])
        self._clear_target()

    def sftp_read(self):
        """SFTP read throughput of one file on backup1 (once per bench): ssh cat, the repository as modules open it, paramiko's transport.

        The file is BENCH_SFTP_MB (default 256) MB of random bytes, whatever the scale, so that the SSH handshake each
        reader pays (about 0.2-0.4 s) does not decide the figure.
        """
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sftp_read.py")
        megabytes = int(os.environ.get("BENCH_SFTP_MB", "256"))
        self.backup1.run(["sh", "-c", 'head -c "$1"M /dev/urandom > "$2"', "sh", str(megabytes), self.repo_path + "/sftp-read.bin"], timeout=600)
        done = self.replica.run(["/usr/bin/python3", script, self.backup1.address, POSTGRES_SSH_KEY, POSTGRES_KNOWN_HOSTS, self.repo_path,
                                 "sftp-read.bin"], timeout=1800)
        self.backup1.run(["rm", "-f", self.repo_path + "/sftp-read.bin"])
        found = json.loads(done.stdout)
        megabytes = found["bytes"] / 1e6
        for label, seconds in found["seconds"].items():
            self.samples.add("sftp_read_mbs_" + label, megabytes / seconds)
        self.samples.add("sftp_read_mb", megabytes)
        self.log("  SFTP read of %.0f MB (best of 3): ssh cat %.0f MB/s, repository (%s) %.0f MB/s, paramiko's transport %.0f MB/s"
                 % (megabytes, self.samples["sftp_read_mbs_ssh_cat"][-1], found["auto_transport"], self.samples["sftp_read_mbs_auto"][-1],
                    self.samples["sftp_read_mbs_paramiko"][-1]))

    def wal_replay(self):
        """Seconds per WAL segment replayed from an archive (once per bench, not per round)."""
        settings = dict(
            archive_mode="on",
            archive={"type": "local", "path": self.wal_path},
            archive_name="bench-%s" % self.suffix,
            pg_data=self.host.pg_data,
            **self._connection(self.host),
        )
        self.host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.wal_path])
        self.playbooks.run(self.host.name, [{"name": "wal", WAL: dict(settings, restart=True, verify=True)}], become_postgres=False)
        backup_id = "bench-wal-%s" % self.suffix
        self._base_backup(backup_id, "none")
        dataset.open_(self.host)
        try:
            self.host.run(
                [self.host.pg_bin_dir + "/pgbench", "-h", "/run/postgresql", "-n", "-c", "4", "-j", "2", "-T", str(self.wal_seconds), dataset.DATABASE],
                user="postgres",
                timeout=600,
            )
        finally:
            dataset.park(self.host)
        self.playbooks.run(self.host.name, [{"name": "wal", WAL: dict(settings, verify=True)}], become_postgres=False)
        archive = self._sftp(self.host, self.wal_path)
        # the same replay twice: as the module writes restore_command (read-ahead), then with read-ahead off
        without = restore_command_string(archive, "restore-%s" % self.cluster, prefetch=0)
        for label, extra in (("", {}), ("_no_prefetch", {"server_settings": {"restore_command": without}})):
            wall, result = self._restore(backup_id, archive=archive, verify=False, **extra)
            self.samples.add("wal_replay_segments" + label, result["wal_files_restored"])
            self.samples.add("wal_replay_seconds" + label, result["timings"]["recovery_seconds"])
            self._clear_target()

    def run_round(self, round_no):
        if self.backup_id is None:
            self.prepare()
        for label, step in (
            ("raw tar -x (local) + start + recovery", lambda: self.raw(True)),
            ("module restore_cluster local, verify=false", lambda: self.module(False)),
            ("module restore_cluster local, verify=true", lambda: self.module(True)),
            ("raw ssh cat | tar -x + start + recovery", lambda: self.raw(False)),
            ("module restore_cluster SFTP, verify=false", lambda: self.module(False, where="sftp")),
            ("module restore_cluster S3, verify=false", lambda: self.module(False, where="s3")),
        ):
            started = time.monotonic()
            step()
            self.log("  round %d: %s (%.1f s)" % (round_no, label, time.monotonic() - started))
        if round_no == 1:
            self.sftp_read()
            started = time.monotonic()
            self.wal_replay()
            self.log(
                "  WAL replay: %d segments in %.1f s, without read-ahead %d in %.1f s (%.1f s in all)"
                % (self.samples["wal_replay_segments"][-1], self.samples["wal_replay_seconds"][-1],
                   self.samples["wal_replay_segments_no_prefetch"][-1], self.samples["wal_replay_seconds_no_prefetch"][-1],
                   time.monotonic() - started)
            )

    def cleanup(self):
        problems = []
        steps = [
            ("reset archiving on %s" % self.host.name, lambda: self.host.psql("ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")),
            ("restart %s" % self.host.name, lambda: self._pg_ctl(self.host, "restart", "-m", "fast")),
            ("put %s's cluster back" % self.replica.name, self._put_back),
            ("remove the repository on %s" % BACKUP_HOST, lambda: self.backup1.run(["rm", "-rf", self.repo_path])),
            ("remove the repository on %s" % self.replica.name, lambda: self.replica.run(["rm", "-rf", self.repo_path])),
            ("remove the set in S3", self._remove_s3),
            ("remove the archive", lambda: self.host.run(["rm", "-rf", self.wal_path])),
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every cleanup step runs; problems are reported
                problems.append("%s: %s" % (label, exc))
        return problems

    def _remove_s3(self):
        client, bucket = self.lab.s3_client(), self.lab.s3["bucket"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.s3_prefix + "/"):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])

    def _put_back(self):
        self._clear_target()
        self.replica.run(["mv", self.saved, self.replica.pg_data])
        self._pg_ctl(self.replica, "start")
