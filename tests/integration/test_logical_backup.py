"""pg_logical_dump and logical restore_cluster through ansible-playbook, on the lab's 15 and 18 hosts."""

import uuid

import pytest

from tests.manifest_schema import assert_valid_manifest
from tests.sql_text import ident, literal

DUMP = "pgdr.backup.pg_logical_dump"
RESTORE = "pgdr.backup.restore_cluster"

DATA_SQL = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA {schema};
CREATE TABLE {schema}.{table} (id serial PRIMARY KEY, note text, ci citext, at timestamptz, f float8, n numeric,
                               b bytea, j jsonb, arr int[]);
INSERT INTO {schema}.{table} (note, ci, at, f, n, b, j, arr) VALUES
  (NULL, 'A', '2026-01-01 12:00+02', 0.1, 1.50, '\\x00ff', '{{"k": [1, 2]}}', '{{1,2}}'),
  ('', 'b', NULL, 1e-300, -0, '\\x', 'null', '{{}}'),
  ('ünïcødé "quoted"; text', NULL, '1999-12-31 23:59:59.999999+00', 'NaN', 12345678901234567890.123, NULL, NULL, NULL);
CREATE TABLE public.events (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.events SELECT d::date, (random() * 100)::int FROM generate_series('2025-06-01'::date, '2026-06-01', '1 day') d;
CREATE SEQUENCE public.counter START 42;
SELECT setval('public.counter', 100);
CREATE TABLE public.docs (id int, body oid);
INSERT INTO public.docs VALUES (1, lo_from_bytea(0, 'large object payload'));
"""


class Source:
    """A database with awkward data on a lab host, dropped afterwards (with its restored copies)."""

    def __init__(self, lab, host, name=None):
        self.lab, self.host = lab, host
        self.suffix = uuid.uuid4().hex[:6]
        self.name = name or ("shop_" + self.suffix)
        self.cluster = "test-%s-%s" % (host.name, self.suffix)
        self.cleanup_dbs = {(host, self.name)}
        # the local repository: a folder the backup user owns, as an admin would prepare it
        self.local_path = "/var/backups/pgdr-test-%s" % self.suffix
        host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.local_path])
        host.psql("CREATE DATABASE %s" % ident(self.name))
        host.psql(DATA_SQL.format(schema=ident("Mixed Case ü"), table=ident('we"ird table')), db=self.name)

    def sql(self, statement, host=None, db=None):
        return (host or self.host).psql(statement, db=db or self.name).strip()

    def forget(self, host, db):
        self.cleanup_dbs.add((host, db))

    def cleanup(self):
        for host, db in self.cleanup_dbs:
            host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(db))
        self.host.run(["rm", "-rf", self.local_path])
        # the SFTP and S3 repositories of repositories(): on the backup host and in the bucket
        self.lab.host("backup1").run(["rm", "-rf", "/var/backups/pgdr-test-%s" % self.suffix])
        s3 = self.lab.s3_client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix="test-%s/" % self.suffix):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=self.lab.s3["bucket"], Key=item["Key"])


@pytest.fixture
def source(lab, host):
    made = Source(lab, host)
    yield made
    made.cleanup()


def repositories(lab, kind, suffix):
    """Repository options for each backend, as the module takes them."""
    if kind == "local":
        return {"type": "local", "path": "/var/backups/pgdr-test-%s" % suffix}
    if kind == "sftp":
        return lab.sftp_repository("backup1", "/var/backups/pgdr-test-%s" % suffix)
    return {"type": "s3", "endpoint_url": lab.s3["endpoint"], "region": lab.s3["region"], "bucket": lab.s3["bucket"],
            "prefix": "test-%s" % suffix, "access_key": lab.s3["access_key"], "secret_key": lab.s3["secret_key"]}


def dump(ansible, host, source, repository, **args):
    return ansible.module(host.name, DUMP, dict(database=source.name, cluster=source.cluster, repository=repository, **args))


def restore(ansible, host, source, repository, **args):
    return ansible.module(host.name, RESTORE, dict(cluster=source.cluster, repository=repository, **args))


def assert_ok(result):
    assert result["_status"] == "ok", result.get("msg")
    return result


@pytest.mark.parametrize("fmt,backend,compression,encrypted", [
    ("custom", "local", {"method": "gzip", "level": 5}, False),
    ("plain", "sftp", {"method": "zstd", "level": 3}, True),
    ("directory", "s3", {"method": "gzip"}, True),
    ("tar", "s3", {"method": "lz4"}, False),
    ("custom", "sftp", {"method": "none"}, False),
])
def test_round_trip_restores_exactly_what_was_dumped(ansible, lab, host, source, fmt, backend, compression, encrypted):
    repository = repositories(lab, backend, source.suffix)
    encryption = {"method": "gpg", "passphrase": "pass-" + source.suffix} if encrypted else {"method": "none"}
    args = dict(format=fmt, compression=compression, encryption=encryption)
    if fmt == "directory":
        args["jobs"] = 2
    dumped = assert_ok(dump(ansible, host, source, repository, **args))
    assert dumped["changed"] is True
    manifest = assert_valid_manifest(dumped["manifest"])
    assert manifest["kind"] == "logical-db" and manifest["source"]["major"] == host.major
    counts = {(t["schema"], t["table"]): t["rows"] for t in dumped["tables"]}
    assert counts[("Mixed Case ü", 'we"ird table')] == 3
    assert counts[("public", "events_2025")] + counts[("public", "events_2026")] == 366
    assert ("public", "events") not in counts  # the partitioned parent holds no rows itself
    assert all(f["sha256"] and f["size"] > 0 for f in manifest["files"])
    if encrypted:
        assert all(f["path"].endswith(".gpg") for f in manifest["files"])

    again = assert_ok(dump(ansible, host, source, repository, backup_id=dumped["backup_id"], **args))
    assert again["changed"] is False and again["manifest"]["files"] == manifest["files"]

    target = "restored_" + source.suffix
    source.forget(host, target)
    restored = assert_ok(restore(ansible, host, source, repository, database=target,
                                 encryption={"passphrase": encryption.get("passphrase")} if encrypted else None))
    assert restored["changed"] is True and restored["checked_files"] == len(manifest["files"])
    (outcome,) = restored["databases"]
    assert outcome["target"] == target and outcome["verification"]["verified"] is True
    assert outcome["verification"]["tables"] == len(dumped["tables"])
    assert source.sql("SELECT count(*) FILTER (WHERE note IS NULL), count(*) FILTER (WHERE note = '') FROM %s"
                      % ident("Mixed Case ü", 'we"ird table'), db=target) == "1|1"
    assert source.sql("SELECT last_value FROM public.counter", db=target) == "100"
    assert source.sql("SELECT convert_from(lo_get(body), 'UTF8') FROM public.docs", db=target) == "large object payload"


@pytest.mark.alone  # pg_dumpall and every database of primary15, restored into replica18
def test_cluster_set_from_15_restores_globals_and_databases_into_18(ansible, lab):
    source = Source(lab, lab.host("primary15"))
    target = lab.host("replica18")
    role = "pgdr_app_" + source.suffix
    source.sql("CREATE ROLE %s LOGIN PASSWORD 'x'; ALTER DATABASE %s OWNER TO %s" % (ident(role), ident(source.name), ident(role)),
               db="postgres")
    source.forget(target, source.name)
    try:
        repository = repositories(lab, "s3", source.suffix)
        cluster_dump = dict(mode="cluster", cluster=source.cluster, repository=repository, parallel=2)
        dumped = assert_ok(ansible.module(source.host.name, DUMP, cluster_dump))
        assert_valid_manifest(dumped["manifest"])
        names = {f["database"] for f in dumped["manifest"]["files"] if f["role"] == "database"}
        assert source.name in names and "postgres" in names
        assert any(f["role"] == "globals" for f in dumped["manifest"]["files"])

        cluster_restore = dict(cluster=source.cluster, repository=repository, databases=[source.name])
        restored = assert_ok(ansible.module(target.name, RESTORE, cluster_restore))
        assert restored["globals_restored"] is True
        assert restored["databases"][0]["verification"]["verified"] is True
        assert source.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s" % literal(source.name),
                          host=target, db="postgres") == role
        assert source.sql("SELECT count(*) FROM public.events", host=target) == "366"
    finally:
        source.cleanup()
        for host in (source.host, target):
            host.psql("DROP ROLE IF EXISTS %s" % ident(role))


def test_existing_database_rename_replace_and_fail(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    dumped = assert_ok(dump(ansible, host, source, repository))
    refused = restore(ansible, host, source, repository)
    assert refused["_status"] == "failed"
    assert 'database "%s" exists on the target; set if_exists' % source.name in refused["msg"]

    renamed = assert_ok(restore(ansible, host, source, repository, if_exists="rename"))
    copy = "%s_restored_%s" % (source.name, dumped["backup_id"])
    source.forget(host, copy)
    assert renamed["databases"][0]["target"] == copy and renamed["databases"][0]["verification"]["verified"]

    source.sql("DELETE FROM public.events WHERE v < 50")
    replaced = assert_ok(restore(ansible, host, source, repository, if_exists="replace"))
    assert replaced["databases"][0]["action"] == "replace"
    assert source.sql("SELECT count(*) FROM public.events") == "366"
    assert source.sql("SELECT count(*) FROM pg_database WHERE datname LIKE %s" % literal(source.name + "\\_p%"), db="postgres") == "0"


def test_corrupted_file_is_refused_and_the_target_untouched(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    dumped = assert_ok(dump(ansible, host, source, repository))
    (entry,) = [f for f in dumped["manifest"]["files"] if f["role"] == "database"]
    path = "%s/%s/%s/%s" % (repository["path"], source.cluster, dumped["backup_id"], entry["path"])
    host.run(["python3", "-c", "import sys; f = open(sys.argv[1], 'r+b'); f.seek(100); b = f.read(1); f.seek(100); "
              "f.write(bytes([b[0] ^ 1])); f.close()", path])
    target = "never_" + source.suffix
    refused = restore(ansible, host, source, repository, database=target)
    assert refused["_status"] == "failed"
    assert entry["path"] in refused["msg"] and "corrupt" in refused["msg"]
    assert source.sql("SELECT count(*) FROM pg_database WHERE datname = %s" % literal(target), db="postgres") == "0"


def test_interrupted_dump_leaves_no_set_and_the_next_run_succeeds(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    backup_id = "20260101T000000Z"
    base = "%s/%s/%s" % (repository["path"], source.cluster, backup_id)
    # what a run killed mid-dump leaves: data, no manifest
    host.run(["mkdir", "-p", base], user="postgres")
    host.run(["sh", "-c", "head -c 1000 /dev/urandom > %s/db_partial.dump" % base], user="postgres")
    latest = restore(ansible, host, source, repository, database="never_" + source.suffix)
    assert latest["_status"] == "failed" and "no complete backup set" in latest["msg"]
    named = restore(ansible, host, source, repository, backup_id=backup_id, database="never_" + source.suffix)
    assert named["_status"] == "failed" and "incomplete" in named["msg"]
    rerun = assert_ok(dump(ansible, host, source, repository, backup_id=backup_id))
    assert rerun["changed"] is True
    assert host.run(["ls", base]).stdout.split() == sorted([f["path"] for f in rerun["manifest"]["files"]] + ["manifest.json"])


def test_check_mode_writes_nothing(ansible, lab, host, source):
    repository = repositories(lab, "local", source.suffix)
    checked = assert_ok(ansible.module(host.name, DUMP, dict(database=source.name, cluster=source.cluster, repository=repository,
                                                             backup_id="20260202T000000Z"), check=True))
    assert checked["changed"] is True and checked["estimated_bytes"] > 0
    listed = {(t["schema"], t["table"]) for t in checked["tables"]}
    assert {("Mixed Case ü", 'we"ird table'), ("public", "events_2025"), ("public", "docs")} <= listed
    assert ("public", "events") not in listed  # the partitioned parent holds no rows
    assert host.run(["test", "-e", "%s/%s" % (repository["path"], source.cluster)], check=False).returncode != 0


def test_export_user_with_logical_grants_can_dump(ansible, lab, host, source):
    exporter, password = "exporter_" + source.suffix, "Exp-" + source.suffix
    source.sql("CREATE ROLE %s LOGIN PASSWORD %s" % (ident(exporter), literal(password)), db="postgres")
    try:
        assert_ok(ansible.module(host.name, "pgdr.backup.role_grants", dict(name=exporter, profile=["logical"])))
        repository = repositories(lab, "local", source.suffix)
        as_exporter = dict(database=source.name, cluster=source.cluster, repository=repository,
                           login_host="127.0.0.1", login_user=exporter, login_password=password)
        # pg_read_all_data does not reach large objects (documented): a clear failure, no set left behind
        refused = ansible.module(host.name, DUMP, as_exporter, become_postgres=False)
        assert refused["_status"] == "failed" and "permission denied for large object" in refused["msg"]
        assert host.run(["ls", "%s/%s" % (repository["path"], source.cluster)], check=False).stdout.strip() == ""
        dumped = assert_ok(ansible.module(host.name, DUMP, dict(as_exporter, extra_args=["--no-blobs"]), become_postgres=False))
        assert dumped["changed"] is True
        assert {(t["schema"], t["table"]) for t in dumped["tables"]} >= {("public", "docs"), ("public", "events_2025")}
    finally:
        source.sql("DROP OWNED BY %s; DROP ROLE %s" % (ident(exporter), ident(exporter)), db="postgres")


def test_wrong_password_is_clear_and_never_shown(ansible, lab, host, source):
    secret = "Wr0ng-" + uuid.uuid4().hex
    task = "dump with a wrong password"
    run = ansible.play(host.name, [{"name": task, DUMP: dict(
        database=source.name, cluster=source.cluster, repository=repositories(lab, "local", source.suffix),
        login_host="127.0.0.1", login_user="postgres", login_password=secret,
        encryption={"method": "gpg", "passphrase": secret}), "ignore_errors": True}], become_postgres=False, verbosity=3)
    result = run.result(task, host.name)
    assert result["_status"] == "failed" and result["msg"].startswith("cannot connect to postgres@127.0.0.1")
    assert secret not in run.output
