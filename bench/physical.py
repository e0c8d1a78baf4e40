"""Physical base backup: pg_basebackup through the module vs raw pg_basebackup with the same options, in one run.

Both run on backup1 (the repository host) against BENCH_HOST over the replication protocol: tar format,
WAL streamed, fast checkpoint, no compression, into a local folder. The module runs once with
``verify: false`` (the ratio's target, <= 1.05) and once with ``verify: true`` (verify's added cost).
"""

import time
import uuid

BASE = "pgdr.backup.pg_basebackup"
BACKUP_HOST = "backup1"


class PhysicalBench:
    def __init__(self, lab, host, playbooks, log, samples):
        self.lab, self.host, self.playbooks, self.log, self.samples = lab, host, playbooks, log, samples
        self.backup1 = lab.host(BACKUP_HOST)
        self.suffix = uuid.uuid4().hex[:6]
        self.repo_path = "/var/backups/pgdr-bench-phys-%s" % self.suffix
        self.raw_dir = "/var/backups/pgdr-bench-phys-raw-%s" % self.suffix
        self.cluster = "bench-phys-%s" % host.name
        for folder in (self.repo_path, self.raw_dir):
            self.backup1.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", folder])

    def _args(self, backup_id, verify):
        return dict(
            login_host=self.host.address,
            login_user="postgres",
            login_password=self.lab.pg_password,
            cluster=self.cluster,
            backup_id=backup_id,
            format="tar",
            wal_method="stream",
            checkpoint="fast",
            verify=verify,
            repository={"type": "local", "path": self.repo_path},
        )

    def raw(self, round_no):
        target = "%s/r%d" % (self.raw_dir, round_no)
        argv = [
            "/usr/lib/postgresql/%d/bin/pg_basebackup" % self.host.major,
            "-h",
            self.host.address,
            "-U",
            "postgres",
            "--pgdata=%s" % target,
            "--format=tar",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-password",
            "--progress",
            "--verbose",
            "--manifest-checksums=CRC32C",
        ]
        started = time.monotonic()
        self.backup1.run(argv, user="postgres", env={"PGPASSWORD": self.lab.pg_password}, timeout=7200)
        self.samples.add("raw_pg_basebackup", time.monotonic() - started)
        size = self.backup1.run(["du", "-sb", target]).stdout.split()[0]
        self.samples.add("raw_pg_basebackup_bytes", int(size))
        self.backup1.run(["rm", "-rf", target])

    def module(self, round_no, verify):
        key = "module_basebackup_verify" if verify else "module_basebackup"
        backup_id = "r%d-%s" % (round_no, "v" if verify else "n")
        wall, results = self.playbooks.run(BACKUP_HOST, [{"name": "base", BASE: self._args(backup_id, verify)}])
        result = results["base"]
        self.samples.add(key, wall)
        self.samples.add(key + "_duration", result["duration"])
        self.samples.add(key + "_backup_seconds", result["backup_seconds"])
        if verify:
            self.samples.add("module_basebackup_verify_seconds", result["verify_seconds"])
        self.backup1.run(["rm", "-rf", "%s/%s/%s" % (self.repo_path, self.cluster, backup_id)])

    def run_round(self, round_no):
        for label, step in (
            ("raw pg_basebackup", lambda: self.raw(round_no)),
            ("module pg_basebackup verify=false", lambda: self.module(round_no, False)),
            ("module pg_basebackup verify=true", lambda: self.module(round_no, True)),
        ):
            started = time.monotonic()
            step()
            self.log("  round %d: %s (%.1f s)" % (round_no, label, time.monotonic() - started))

    def cleanup(self):
        problems = []
        for folder in (self.repo_path, self.raw_dir):
            try:
                self.backup1.run(["rm", "-rf", folder])
            except Exception as exc:
                problems.append("rm %s on %s: %s" % (folder, BACKUP_HOST, exc))
        return problems
