"""Physical base backup: pg_basebackup through the module vs raw pg_basebackup with the same options, in one run.

Both run on backup1 (the repository host) against BENCH_HOST over the replication protocol: tar format,
WAL streamed, fast checkpoint, no compression, into a local folder. The module runs once with
``verify: false`` (the ratio's target, <= 1.05) and once with ``verify: true`` (verify's added cost). Then the
module with ``verify: false`` into the lab's S3 store (the archives streamed while pg_basebackup writes them)
against the same into the local repository (the ratio's target, <= 1.1).
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

    def _args(self, backup_id, verify, repository=None):
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
            repository=repository or {"type": "local", "path": self.repo_path},
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

    def s3(self, round_no):
        """The module with verify: false into S3: the archives streamed while written, pg_wal.tar and backup_manifest after."""
        s3 = self.lab.s3
        prefix = "pgdr-bench-phys-%s" % self.suffix
        repository = {"type": "s3", "endpoint_url": s3["endpoint"], "region": s3["region"], "bucket": s3["bucket"], "prefix": prefix,
                      "access_key": s3["access_key"], "secret_key": s3["secret_key"]}
        wall, results = self.playbooks.run(BACKUP_HOST, [{"name": "base", BASE: self._args("r%d-s3" % round_no, False, repository)}])
        result = results["base"]
        self.samples.add("module_basebackup_s3", wall)
        self.samples.add("module_basebackup_s3_duration", result["duration"])
        self.samples.add("module_basebackup_s3_backup_seconds", result["backup_seconds"])
        self.samples.add("module_basebackup_s3_upload_seconds", result["upload_seconds"])
        self._empty_s3(prefix)

    def _empty_s3(self, prefix):
        client = self.lab.s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix=prefix + "/"):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=self.lab.s3["bucket"], Key=item["Key"])

    def run_round(self, round_no):
        for label, step in (
            ("raw pg_basebackup", lambda: self.raw(round_no)),
            ("module pg_basebackup verify=false", lambda: self.module(round_no, False)),
            ("module pg_basebackup verify=true", lambda: self.module(round_no, True)),
            ("module pg_basebackup verify=false into S3", lambda: self.s3(round_no)),
        ):
            started = time.monotonic()
            step()
            self.log("  round %d: %s (%.1f s)" % (round_no, label, time.monotonic() - started))

    def cleanup(self):
        problems = []
        try:
            self._empty_s3("pgdr-bench-phys-%s" % self.suffix)
        except Exception as exc:
            problems.append("emptying the bench's S3 prefix: %s" % exc)
        for folder in (self.repo_path, self.raw_dir):
            try:
                self.backup1.run(["rm", "-rf", folder])
            except Exception as exc:
                problems.append("rm %s on %s: %s" % (folder, BACKUP_HOST, exc))
        return problems
