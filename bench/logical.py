"""Logical dump and restore: pgdr.backup modules vs the raw PostgreSQL tools, in one run on one host.

Each measurement is one sample; `run_round` takes one sample of every measurement the chosen
comparisons need, in an order that reads the source database first (the fingerprint SQL) so every
dump sees the same warm cache.
"""

import os
import re
import sys
import threading
import time
import uuid

from bench import dataset
from bench.playbook import PROJECT_DIR

DUMP = "pgdr.backup.pg_logical_dump"
RESTORE = "pgdr.backup.restore_cluster"
COMPRESSION = {"method": "gzip", "level": 1}  # the module's gzip:1 is pg_dump's -Z1: the same compression both ways

# boto3's upload_file as anyone would script it on the host (multipart, its default threads)
UPLOAD_PY = (
    "import sys, boto3\n"
    "from botocore.config import Config\n"
    "endpoint, region, path, bucket, key = sys.argv[1:6]\n"
    "s3 = boto3.client('s3', endpoint_url=endpoint, region_name=region, config=Config(s3={'addressing_style': 'path'}))\n"
    "s3.upload_file(path, bucket, key)\n"
)

_TIME_RE = re.compile(r"^Time: ([0-9.]+) ms")


def _fingerprint_module():
    """The collection's own fingerprint code, so the separately timed SQL is exactly what the module runs."""
    collections = os.path.join(PROJECT_DIR, ".collections")
    if collections not in sys.path:
        sys.path.insert(0, collections)
    from ansible_collections.pgdr.backup.plugins.module_utils.sets import fingerprint

    return fingerprint


def fingerprint_script(host):
    """psql script: the module's fingerprint transaction for every table of the bench database, with \\timing."""
    from psycopg import sql

    fingerprint = _fingerprint_module()
    listed = host.psql(fingerprint._LIST_TABLES, db=dataset.DATABASE).strip().splitlines()
    tables = [tuple(line.split("|")[:2]) for line in listed if line]
    settings = ", ".join(
        "pg_catalog.set_config(%s, %s, true)" % (sql.Literal(name).as_string(None), sql.Literal(value).as_string(None))
        for name, value in fingerprint.SESSION_SETTINGS
    )
    lines = ["\\timing on", "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;", "SELECT %s;" % settings]
    for schema, table in tables:  # the by-name method (the default since hash64-sum-v2) needs the table's column names
        found = host.psql(fingerprint._COLUMNS % (sql.Literal(schema).as_string(None), sql.Literal(table).as_string(None)),
                          db=dataset.DATABASE).split()
        lines.append("%s;" % fingerprint.fingerprint_query(schema, table, columns=found).as_string(None))
    lines.append("COMMIT;")
    return tables, "\n".join(lines) + "\n"


def breakdown_script(host, tables):
    """psql script timing, on the largest table, each part of the fingerprint expression and two cheaper hashes."""
    from psycopg import sql

    fingerprint = _fingerprint_module()
    sizes = {}
    for schema, table in tables:
        name = sql.Identifier(schema, table).as_string(None)
        sizes[(schema, table)] = int(host.psql("SELECT pg_catalog.pg_relation_size(%s)" % sql.Literal(name).as_string(None),
                                               db=dataset.DATABASE).strip())
    schema, table = max(sizes, key=sizes.get)
    relation = sql.Identifier(schema, table).as_string(None)
    parts = [
        ("scan only: count(*)", "SELECT count(*) FROM ONLY %s AS t" % relation),
        ("+ row as text", "SELECT count(*), sum(length((t.*)::text)) FROM ONLY %s AS t" % relation),
        ("+ md5 of the row text", "SELECT count(*), count(md5((t.*)::text)) FROM ONLY %s AS t" % relation),
        ("the module's %s (hashtextextended -> numeric sum)" % fingerprint.METHOD, fingerprint.fingerprint_query(schema, table).as_string(None)),
        ("the older md5-sum64-v1 (md5 -> bit(64) -> numeric sum)", fingerprint.fingerprint_query(schema, table, "md5-sum64-v1").as_string(None)),
        ("for comparison: sum(hash_record_extended(row, 0)::numeric)",
         "SELECT count(*), sum(hash_record_extended(t.*, 0)::numeric) FROM ONLY %s AS t" % relation),
    ]
    script = "\\timing on\n" + "".join("%s;\n" % statement for _label, statement in parts)
    return "%s.%s" % (schema, table), [label for label, _statement in parts], script


class Samples(dict):
    """name -> list of values, one per round."""

    def add(self, name, value):
        self.setdefault(name, []).append(value)


class LogicalBench:
    def __init__(self, lab, host, playbooks, log):
        self.lab, self.host, self.playbooks, self.log = lab, host, playbooks, log
        self.suffix = uuid.uuid4().hex[:6]
        self.repo_path = "/var/backups/pgdr-bench-%s" % self.suffix  # the module's local repository
        self.raw_dir = "/var/backups/pgdr-bench-raw-%s" % self.suffix  # raw pg_dump output
        self.cluster = "bench-%s" % host.name
        self.s3_prefix = "pgdr-bench-%s" % self.suffix
        self.restored = set()
        self.samples = Samples()
        self.info = {}
        self.raw_file = self.fp_file = self.fp_set = None
        self.fp_tables, self.fp_script = fingerprint_script(host)
        for folder in (self.repo_path, self.raw_dir):  # what the module and the raw tools write into, as an admin prepares it
            host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", folder])

    # ---- helpers ----------------------------------------------------------------------------------------------

    def _timed(self, argv, user="postgres", env=None):
        started = time.monotonic()
        self.host.run(argv, user=user, env=env, timeout=7200)
        return time.monotonic() - started

    def _bin(self, name):
        return "%s/%s" % (self.host.pg_bin_dir, name)

    def _local_repo(self):
        return {"type": "local", "path": self.repo_path}

    def _s3_repo(self):
        # credentials from the inventory, as a user's playbook takes them from vars or a vault
        return {"type": "s3", "endpoint_url": "{{ lab_s3_endpoint }}", "region": "{{ lab_s3_region }}", "bucket": "{{ lab_s3_bucket }}",
                "prefix": self.s3_prefix, "access_key": "{{ lab_s3_access_key }}", "secret_key": "{{ lab_s3_secret_key }}"}

    def _module(self, module, args):
        wall, results = self.playbooks.run(self.host.name, [{"name": "under test", module: args}])
        return wall, results["under test"]

    def _raw_dump(self, path):
        return self._timed([self._bin("pg_dump"), "-Fc", "-Z1", "-h", self.host.pg_socket_dir, "-f", path, dataset.DATABASE])

    def _drop(self, name):
        self.host.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        self.restored.discard(name)

    # ---- measurements -----------------------------------------------------------------------------------------

    def overhead(self):
        """ansible-playbook's fixed cost: start-up alone, and start-up plus connecting and running a trivial module."""
        self.samples.add("playbook_startup", self.playbooks.run(self.host.name, [{"name": "noop", "ansible.builtin.meta": "noop"}])[0])
        self.samples.add("playbook_ping", self.playbooks.run(self.host.name, [{"name": "ping", "ansible.builtin.ping": {}}])[0])

    def fingerprint_sql(self, db=dataset.DATABASE, key="fingerprint_sql"):
        """The module's fingerprint SQL alone, per table, in one REPEATABLE READ transaction (as the module runs it)."""
        started = time.monotonic()
        out = self.host.psql(self.fp_script, db=db, timeout=7200)
        wall = time.monotonic() - started
        times = [float(m.group(1)) / 1000 for m in map(_TIME_RE.match, out.splitlines()) if m]
        per_table = dict(zip(["%s.%s" % t for t in self.fp_tables], times[2:2 + len(self.fp_tables)], strict=False))
        self.samples.add(key, wall)
        self.samples.add(key + "_tables", per_table)
        return wall

    def fingerprint_breakdown(self):
        """Where the fingerprint's time goes, on the largest table: scan, row to text, md5, the sum; and cheaper hashes."""
        table, labels, script = breakdown_script(self.host, self.fp_tables)
        out = self.host.psql(script, db=dataset.DATABASE, timeout=7200)
        times = [float(m.group(1)) / 1000 for m in map(_TIME_RE.match, out.splitlines()) if m]
        self.info["fingerprint_breakdown_table"] = table
        self.samples.add("fingerprint_breakdown", dict(zip(labels, times[:len(labels)], strict=False)))

    def raw_dump(self, round_no):
        """a: raw pg_dump -Fc -Z1 to a file (also the file the raw restore of d reads)."""
        path = "%s/raw-%d.dump" % (self.raw_dir, round_no)
        self.samples.add("raw_pg_dump", self._raw_dump(path))
        self.samples.add("raw_pg_dump_bytes", int(self.host.run(["stat", "-c", "%s", path]).stdout))
        self.raw_file = path

    def module_dump_local(self, round_no, fingerprint):
        """a (fingerprint off) and b (on): pg_logical_dump into the local repository."""
        key = "module_dump_local_fp" if fingerprint else "module_dump_local"
        backup_id = "%s-%d" % ("fp" if fingerprint else "nofp", round_no)
        wall, result = self._module(DUMP, dict(database=dataset.DATABASE, cluster=self.cluster, backup_id=backup_id, format="custom",
                                               compression=COMPRESSION, fingerprint=fingerprint, repository=self._local_repo()))
        self.samples.add(key, wall)
        self.samples.add(key + "_duration", result["duration"])
        self.samples.add(key + "_bytes", result["bytes"])
        if fingerprint:
            self.fp_set = backup_id
            self.info["fingerprinted_tables"] = len(result.get("tables") or [])
            self.fp_file = "%s/%s/%s/%s" % (self.repo_path, self.cluster, backup_id, result["manifest"]["files"][0]["path"])

    def dump_with_fingerprint_raw(self, round_no):
        """pg_dump and the fingerprint SQL at the same time, as two raw processes: what the hardware allows for b."""
        path = "%s/raw-concurrent-%d.dump" % (self.raw_dir, round_no)
        times, errors = {}, []

        def fp():
            try:
                started = time.monotonic()
                self.host.psql(self.fp_script, db=dataset.DATABASE, timeout=7200)
                times["fp"] = time.monotonic() - started
            except Exception as exc:  # re-raised below
                errors.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=fp)
        thread.start()
        times["dump"] = self._raw_dump(path)
        thread.join()
        wall = time.monotonic() - started
        if errors:
            raise errors[0]
        self.host.run(["rm", "-f", path])
        self.samples.add("raw_pg_dump_and_fingerprint_concurrent", wall)
        self.samples.add("raw_pg_dump_and_fingerprint_concurrent_parts", times)

    def dump_s3(self, round_no):
        backup_id = "s3-%d" % round_no
        wall, result = self._module(DUMP, dict(database=dataset.DATABASE, cluster=self.cluster, backup_id=backup_id, format="custom",
                                               compression=COMPRESSION, fingerprint=False, repository=self._s3_repo()))
        self.samples.add("module_dump_s3", wall)
        self.samples.add("module_dump_s3_duration", result["duration"])
        self.samples.add("module_dump_s3_bytes", result["bytes"])

        path = "%s/raw-upload-%d.dump" % (self.raw_dir, round_no)
        dump = self._raw_dump(path)
        s3 = self.lab.s3
        env = {"AWS_ACCESS_KEY_ID": s3["access_key"], "AWS_SECRET_ACCESS_KEY": s3["secret_key"]}
        upload = self._timed(["python3", "-c", UPLOAD_PY, s3["endpoint"], s3["region"], path, s3["bucket"],
                              "%s/raw/raw-upload-%d.dump" % (self.s3_prefix, round_no)], user=None, env=env)
        self.host.run(["rm", "-f", path])
        self.samples.add("raw_pg_dump_then_upload", dump + upload)
        self.samples.add("raw_pg_dump_then_upload_parts", {"pg_dump": dump, "upload": upload})

    def restore_d(self, round_no):
        target = "pgdr_bench_restored_%s_%d" % (self.suffix, round_no)
        self.restored.add(target)
        wall, result = self._module(RESTORE, dict(cluster=self.cluster, backup_id=self.fp_set, database=target, verify=True,
                                                  repository=self._local_repo()))
        db = result["databases"][0]
        if not (db.get("verification") or {}).get("verified"):
            raise RuntimeError("restore_cluster did not verify %s: %s" % (target, db))
        self.samples.add("module_restore", wall)
        self.samples.add("module_restore_seconds", db["seconds"])
        self.info["restore_verified_tables"] = db["verification"]["tables"]
        self._drop(target)

        raw = "pgdr_bench_raw_%s_%d" % (self.suffix, round_no)
        self.restored.add(raw)
        createdb = self._timed([self._bin("createdb"), "-h", self.host.pg_socket_dir, "-T", "template0", raw])
        pg_restore = self._timed([self._bin("pg_restore"), "-h", self.host.pg_socket_dir, "-d", raw, self.raw_file])
        self.samples.add("raw_restore", createdb + pg_restore)
        # what the module does on top of createdb + pg_restore, each timed alone, in the module's order, on the raw copy:
        # the sha256 read-back of the set, the fingerprint SQL on freshly restored tables (the verify), ANALYZE
        sha = self._timed(["sha256sum", self.fp_file])
        verify = self.fingerprint_sql(db=raw, key="fingerprint_sql_restored")
        started = time.monotonic()
        self.host.psql("ANALYZE", db=raw, timeout=7200)
        analyze = time.monotonic() - started
        self.samples.add("raw_restore_parts", {"createdb": createdb, "pg_restore": pg_restore, "sha256_readback": sha,
                                               "fingerprint_restored": verify, "analyze": analyze})
        self._drop(raw)

    def run_round(self, round_no, only):
        """One sample of every measurement the comparisons in ``only`` (a, b, c, d, fp) need, in a fixed order."""
        need = set(only)
        steps = [("ansible-playbook overhead", True, self.overhead),
                 ("fingerprint SQL alone (also warms the cache)", need & {"b", "d", "fp"}, self.fingerprint_sql),
                 ("fingerprint cost breakdown", need & {"fp"}, self.fingerprint_breakdown),
                 ("raw pg_dump", need & {"a", "b", "d"}, lambda: self.raw_dump(round_no)),
                 ("module dump, local, fingerprint off", need & {"a", "c"}, lambda: self.module_dump_local(round_no, False)),
                 ("module dump, local, fingerprint on", need & {"b", "d"}, lambda: self.module_dump_local(round_no, True)),
                 ("raw pg_dump + fingerprint SQL concurrently", need & {"b"}, lambda: self.dump_with_fingerprint_raw(round_no)),
                 ("module dump to S3, raw pg_dump then upload", need & {"c"}, lambda: self.dump_s3(round_no)),
                 ("restore_cluster verify, raw createdb + pg_restore", need & {"d"}, lambda: self.restore_d(round_no))]
        for label, wanted, step in steps:
            if not wanted:
                continue
            started = time.monotonic()
            step()
            self.log("  round %d: %s (%.1f s)" % (round_no, label, time.monotonic() - started))
        if self.raw_file:
            self.host.run(["rm", "-f", self.raw_file])
            self.raw_file = None

    # ---- cleanup ------------------------------------------------------------------------------------------------

    def cleanup(self):
        """Remove every set, file and database this run made (the pgbench source database stays)."""
        problems = []
        for name in sorted(self.restored):
            try:
                self._drop(name)
            except Exception as exc:
                problems.append("drop %s: %s" % (name, exc))
        for folder in (self.repo_path, self.raw_dir):
            try:
                self.host.run(["rm", "-rf", folder])
            except Exception as exc:
                problems.append("rm %s: %s" % (folder, exc))
        try:
            client = self.lab.s3_client()
            bucket = self.lab.s3["bucket"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.s3_prefix + "/"):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        except Exception as exc:
            problems.append("s3 %s: %s" % (self.s3_prefix, exc))
        for problem in problems:
            self.log("cleanup: " + problem)
        return problems
