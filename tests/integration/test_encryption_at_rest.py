"""Encryption at rest (issue 11 item 17): gpg-encrypted base sets and WAL archives, and S3 server-side encryption.

Base sets are taken on the replica host of a pair (the repository is reached from there), restored into a scratch
folder on that host and started on a port of its own beside the live cluster, which no test here stops or replaces.
"""

import base64
import json
import os
import time
import uuid

import botocore.exceptions
import pytest

from tests.manifest_schema import assert_valid_manifest
from tests.phases import ON_PG15, ON_PG18
from tests.sql_text import ident

BASEBACKUP = "pgdr.backup.pg_basebackup"
RESTORE = "pgdr.backup.restore_cluster"
WAL = "pgdr.backup.wal_archive_config"
PAIRS = {15: ("primary15", "replica15"), 18: ("primary18", "replica18")}
SCRATCH_PORT = 5437  # h5's scratch servers: a port no other test uses
PASSPHRASE = "h5 correct horse battery staple"
# what a plain tar of a data directory (or its backup_manifest) holds in clear
CLEAR_MARKS = (b"PG_VERSION", b"backup_label", b"pg_control", b"PostgreSQL-Backup-Manifest")
OPENPGP_FIRST_BYTES = (0x8C, 0x8D, 0x8E, 0xC3)


class Pair:
    def __init__(self, lab, major):
        primary, replica = PAIRS[major]
        self.lab, self.major = lab, major
        self.primary, self.replica = lab.host(primary), lab.host(replica)
        self.backup1 = lab.host("backup1")
        self.suffix = uuid.uuid4().hex[:6]
        self.db = "h5_enc_" + self.suffix
        self.cluster = "h5-enc-%s-%s" % (major, self.suffix)
        self.sftp_path = "/var/backups/h5-enc-%s" % self.suffix
        self.home = "/var/lib/postgresql/%d" % major
        self.scratch = "%s/h5-scratch-%s" % (self.home, self.suffix)
        self.s3_prefix = "h5-enc-%s" % self.suffix
        self.sse_key = base64.b64encode(os.urandom(32)).decode()
        self.slot = None

    def connection(self, host, port=5432):
        return dict(login_host=host.address, login_port=port, login_user="postgres", login_password=self.lab.pg_password)

    def s3(self, what, sse=True):
        s3 = self.lab.s3
        spec = {"type": "s3", "endpoint_url": s3["endpoint"], "region": s3["region"], "bucket": s3["bucket"],
                "prefix": "%s/%s" % (self.s3_prefix, what), "access_key": s3["access_key"], "secret_key": s3["secret_key"]}
        if sse:
            spec["sse"] = {"mode": "sse-c", "customer_key": self.sse_key}
        return spec

    def sse_args(self):
        return dict(SSECustomerAlgorithm="AES256", SSECustomerKey=base64.b64decode(self.sse_key))

    def s3_keys(self, what):
        s3 = self.lab.s3_client()
        prefix = "%s/%s/" % (self.s3_prefix, what)
        return [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix=prefix)
                for item in page.get("Contents", [])]

    def stop_scratch(self):
        self.replica.run([self.replica.pg_bin_dir + "/pg_ctl", "-D", self.scratch, "-m", "immediate", "-w", "stop"], user="postgres", check=False)

    def scratch_rows(self):
        return self.replica.run([self.replica.pg_bin_dir + "/psql", "-X", "-At", "-h", "/run/postgresql", "-p", str(SCRATCH_PORT), "-U", "postgres",
                                 "-d", self.db, "-c", "SELECT string_agg(n::text, ',' ORDER BY n) FROM t"], user="postgres").stdout.strip()

    def cleanup(self):
        self.stop_scratch()
        self.primary.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(self.db))
        self.replica.run(["rm", "-rf", self.scratch, self.scratch + ".pgdr-new"])
        self.backup1.run(["rm", "-rf", self.sftp_path])
        for host in (self.primary, self.replica):
            host.run(["rm", "-rf", "/etc/pgdr/wal/h5-%s.json" % self.suffix, "/etc/pgdr/wal/restore-%s.json" % self.cluster,
                      "/var/spool/pgdr/restore-%s" % self.cluster])
        s3 = self.lab.s3_client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix=self.s3_prefix + "/"):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=self.lab.s3["bucket"], Key=item["Key"])


@pytest.fixture
def pair15(lab):
    made = Pair(lab, 15)
    yield made
    made.cleanup()


@pytest.fixture
def pair18(lab):
    made = Pair(lab, 18)
    yield made
    made.cleanup()


def ok(result):
    assert result["_status"] == "ok", "%s\n%s" % (result.get("msg"), (result.get("server_log") or "")[-3000:])
    return result


def one_line(result):
    assert result["_status"] == "failed", result
    msg = result.get("msg") or ""
    assert msg and "\n" not in msg.strip() and "Traceback" not in msg, msg
    return msg


def base_backup(ansible, pair, repository, **args):
    task = dict(cluster=pair.cluster, repository=repository, checkpoint="fast", format="tar", **pair.connection(pair.primary), **args)
    return ansible.module(pair.replica.name, BASEBACKUP, task, become_postgres=False)


def scratch_restore(ansible, pair, repository, check=False, **args):
    """The pair's set restored into a scratch folder on the replica host, started on SCRATCH_PORT beside the live cluster."""
    task = dict(cluster=pair.cluster, repository=repository, pg_data=pair.scratch, pg_bin_dir=pair.replica.pg_bin_dir,
                recovery_target="immediate", server_settings={"port": SCRATCH_PORT}, **pair.connection(pair.replica, SCRATCH_PORT))
    task.update(args)
    task = {key: value for key, value in task.items() if value is not None}  # None: leave the option out
    return ansible.module(pair.replica.name, RESTORE, task, become_postgres=False, check=check)


def make_db(pair, rows):
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t SELECT unnest(ARRAY[%s]);" % ",".join(str(n) for n in rows), db=pair.db)


def assert_ciphertext(data, what):
    assert data[:1] and data[0] in OPENPGP_FIRST_BYTES, (what, data[:16])
    for mark in CLEAR_MARKS:
        assert mark not in data, (what, mark)


def assert_encrypted_set(manifest):
    assert_valid_manifest(manifest)
    assert manifest["encryption"] == {"method": "gpg-symmetric-aes256"}
    assert sorted(f["role"] for f in manifest["files"]) == ["backup-manifest", "base", "wal"]
    for entry in manifest["files"]:
        assert entry["path"].endswith(".gpg") and entry["encryption"] == {"method": "gpg-symmetric-aes256"}, entry


def refusals_leave_nothing(ansible, pair, repository):
    """No passphrase, or a wrong one: one line naming encryption.passphrase, and nothing made on the target."""
    missing = one_line(scratch_restore(ansible, pair, repository))
    assert "is encrypted (gpg): give encryption.passphrase" in missing, missing
    wrong = one_line(scratch_restore(ansible, pair, repository, encryption={"passphrase": "not the passphrase"}))
    assert wrong.startswith("cannot decrypt the backup: gpg says ") and "check encryption.passphrase" in wrong, wrong
    assert "not the passphrase" not in wrong
    assert not any(os.path.basename(pair.scratch) in name for name in pair.replica.run(["ls", "-A", pair.home]).stdout.split())


@ON_PG15
def test_encrypted_base_set_on_s3_with_sse_c_restores_only_with_its_passphrase(ansible, lab, pair15):
    pair = pair15
    make_db(pair, [1, 2])
    repository = pair.s3("sets")
    done = ok(base_backup(ansible, pair, repository, encryption={"method": "gpg", "passphrase": PASSPHRASE}, compression={"method": "gzip"}))
    manifest = done["manifest"]
    assert_encrypted_set(manifest)
    assert PASSPHRASE not in json.dumps(done) and pair.sse_key not in json.dumps(done)
    s3, bucket = lab.s3_client(), lab.s3["bucket"]
    keys = pair.s3_keys("sets")
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted([f["path"] for f in manifest["files"]] + ["manifest.json"])
    for key in keys:
        # every object the collection wrote is SSE-C: the store reports it, and without the key it cannot be read
        head = s3.head_object(Bucket=bucket, Key=key, **pair.sse_args())
        assert head["SSECustomerAlgorithm"] == "AES256", key
        with pytest.raises(botocore.exceptions.ClientError):
            s3.get_object(Bucket=bucket, Key=key)
        if not key.endswith("manifest.json"):
            assert_ciphertext(s3.get_object(Bucket=bucket, Key=key, **pair.sse_args())["Body"].read(), key)

    # re-verification decrypts the stored files (with the passphrase) and runs pg_verifybackup
    verify = dict(action="verify", cluster=pair.cluster, backup_id=manifest["backup_id"], repository=repository)
    assert "give encryption.passphrase to verify it" in one_line(ansible.module(pair.replica.name, BASEBACKUP, verify, become_postgres=False))
    checked = ok(ansible.module(pair.replica.name, BASEBACKUP, dict(verify, encryption={"passphrase": PASSPHRASE}), become_postgres=False))
    assert checked["verified"] is True

    # the SSE-C key is needed to read the set at all
    no_key = one_line(scratch_restore(ansible, pair, pair.s3("sets", sse=False), encryption={"passphrase": PASSPHRASE}))
    assert "customer key (SSE-C)" in no_key, no_key
    refusals_leave_nothing(ansible, pair, repository)

    pair.primary.psql("INSERT INTO t VALUES (3)", db=pair.db)  # after the backup: must not be in the restored copy
    restored = ok(scratch_restore(ansible, pair, repository, encryption={"passphrase": PASSPHRASE}))
    assert restored["state"] == "promoted" and restored["plan"]["encrypted"] is True
    assert pair.scratch_rows() == "1,2"


@ON_PG18
def test_encrypted_base_set_on_sftp_holds_no_clear_data_and_restores_with_its_passphrase(ansible, lab, pair18):
    pair = pair18
    make_db(pair, [7])
    repository = lab.sftp_repository(pair.backup1, pair.sftp_path)
    pair.backup1.run(["install", "-d", "-m", "0700", pair.sftp_path])
    done = ok(base_backup(ansible, pair, repository, encryption={"method": "gpg", "passphrase": PASSPHRASE}))
    manifest = done["manifest"]
    assert_encrypted_set(manifest)
    folder = "%s/%s/%s" % (pair.sftp_path, pair.cluster, manifest["backup_id"])
    stored = sorted(pair.backup1.run(["ls", "-A", folder]).stdout.split())
    assert stored == sorted([f["path"] for f in manifest["files"]] + ["manifest.json"])
    for entry in manifest["files"]:
        data = pair.backup1.run(["base64", "-w0", "%s/%s" % (folder, entry["path"])]).stdout
        assert_ciphertext(base64.b64decode(data), entry["path"])

    refusals_leave_nothing(ansible, pair, repository)
    checked = ok(scratch_restore(ansible, pair, repository, check=True, encryption={"passphrase": PASSPHRASE}))
    assert checked["plan"]["encrypted"] is True and checked["plan"]["existing"] == "absent"
    pair.primary.psql("INSERT INTO t VALUES (8)", db=pair.db)
    restored = ok(scratch_restore(ansible, pair, repository, encryption={"passphrase": PASSPHRASE}))
    assert restored["state"] == "promoted"
    assert pair.scratch_rows() == "7"


SOURCE_PORT = 5438  # h5's scratch source cluster, archiving through pgdr-wal


def start_source(pair):
    """A scratch cluster on the replica host (its own folder and port): the source whose archive_command is set, so
    no lab server is restarted."""
    replica, src = pair.replica, pair.source
    replica.run([replica.pg_bin_dir + "/initdb", "-D", src, "-U", "postgres", "--auth=trust"], user="postgres")
    settings = "port = %d\nlisten_addresses = ''\nunix_socket_directories = '/run/postgresql'\nwal_level = replica\n" % SOURCE_PORT
    replica.run(["sh", "-c", 'printf "%s" "$1" >> "$2/postgresql.conf"', "sh", settings, src], user="postgres")
    replica.run([replica.pg_bin_dir + "/pg_ctl", "-D", src, "-l", src + ".log", "-w", "-t", "60", "start"], user="postgres")


def source_sql(pair, sql, db="postgres"):
    return pair.replica.run([pair.replica.pg_bin_dir + "/psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", "/run/postgresql", "-p", str(SOURCE_PORT),
                             "-U", "postgres", "-d", db, "-c", sql], user="postgres").stdout.strip()


@ON_PG15
def test_an_encrypted_wal_archive_stores_ciphertext_and_pitr_replays_it(ansible, lab, pair15):
    pair, replica = pair15, pair15.replica
    pair.source = "%s/h5-source-%s" % (pair.home, pair.suffix)
    name = "h5-%s" % pair.suffix
    archive = dict(pair.s3("wal"), encryption={"method": "gpg", "passphrase": PASSPHRASE})
    local = dict(login_host="/run/postgresql", login_port=SOURCE_PORT, login_user="postgres")
    try:
        start_source(pair)
        configured = ok(ansible.module(replica.name, WAL, dict(local, archive_mode="on", archive=archive, archive_name=name, restart=True, verify=True,
                                                               pg_data=pair.source, service_manager="pg_ctl"), become_postgres=False))
        assert configured["restarted"] is True and PASSPHRASE not in json.dumps(configured)
        # the passphrase is in the helper's 0600 config only: not in archive_command, not in postgresql.auto.conf
        config = "/etc/pgdr/wal/%s.json" % name
        assert replica.run(["stat", "-c", "%a %U", config]).stdout.split() == ["600", "postgres"]
        assert PASSPHRASE in replica.run(["cat", config]).stdout
        assert PASSPHRASE not in source_sql(pair, "SHOW archive_command")
        assert PASSPHRASE not in replica.run(["cat", pair.source + "/postgresql.auto.conf"]).stdout

        source_sql(pair, "CREATE DATABASE %s" % ident(pair.db))
        source_sql(pair, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)", db=pair.db)
        task = dict(cluster=pair.cluster, repository=pair.s3("sets"), checkpoint="fast", format="tar", wal_method="none", **local,
                    encryption={"method": "gpg", "passphrase": PASSPHRASE})
        ok(ansible.module(replica.name, BASEBACKUP, task, become_postgres=False))
        source_sql(pair, "INSERT INTO t VALUES (2)", db=pair.db)
        source_sql(pair, "SELECT pg_create_restore_point('h5_target')")
        source_sql(pair, "INSERT INTO t VALUES (3)", db=pair.db)
        switched = source_sql(pair, "SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 60
        while source_sql(pair, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < switched and time.monotonic() < deadline:
            time.sleep(0.5)
        assert source_sql(pair, "SELECT last_archived_wal FROM pg_stat_archiver") >= switched

        s3, bucket = lab.s3_client(), lab.s3["bucket"]
        segments = [key for key in pair.s3_keys("wal") if len(key.rsplit("/", 1)[1]) == 24]
        assert segments and switched in [key.rsplit("/", 1)[1] for key in segments]
        for key in segments:
            assert s3.head_object(Bucket=bucket, Key=key, **pair.sse_args())["SSECustomerAlgorithm"] == "AES256"
            data = s3.get_object(Bucket=bucket, Key=key, **pair.sse_args())["Body"].read()
            assert data[0] in OPENPGP_FIRST_BYTES and len(data) != 16 * 1024 * 1024, key  # gpg output, not a 16 MiB segment

        # the copy keeps the source's settings (listen_addresses ''): it is watched over the socket
        restore = dict(recovery_target=None, recovery_target_name="h5_target", login_host="/run/postgresql")
        wrong = one_line(scratch_restore(ansible, pair, pair.s3("sets"), encryption={"passphrase": PASSPHRASE}, **restore,
                                         archive=dict(archive, encryption={"passphrase": "not the passphrase"})))
        assert "check archive.encryption.passphrase" in wrong and "not the passphrase" not in wrong, wrong
        assert not any(os.path.basename(pair.scratch) in n for n in replica.run(["ls", "-A", pair.home]).stdout.split())
        restored = ok(scratch_restore(ansible, pair, pair.s3("sets"), encryption={"passphrase": PASSPHRASE}, archive=archive, **restore))
        assert restored["state"] == "promoted" and restored["wal_files_restored"] >= 1
        assert pair.scratch_rows() == "1,2"
    finally:
        replica.run([replica.pg_bin_dir + "/pg_ctl", "-D", pair.source, "-m", "immediate", "-w", "stop"], user="postgres", check=False)
        replica.run(["rm", "-rf", pair.source, pair.source + ".log", "/etc/pgdr/wal/%s.json" % name, "/var/spool/pgdr/%s" % name])
