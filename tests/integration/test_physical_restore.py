"""Physical restores through ansible-playbook: the three practice exercises of seed 004 on 15 and 18, and the refusals.

Each test backs up a primary with pgdr.backup.pg_basebackup, changes the primary, restores onto the replica host of
the same major version with pgdr.backup.restore_cluster, and proves the exact state the restore must have.
The replica's own cluster is replaced by every restore; it is left running (a restored copy of the primary).
"""

import os
import time
import uuid

import pytest

from tests.phases import ON_PG15, ON_PG18, one_per_version
from tests.sql_text import ident, literal

# replaces the replicas' clusters and restarts the primaries (archive_mode)
pytestmark = pytest.mark.exclusive

BASEBACKUP = "pgdr.backup.pg_basebackup"
RESTORE = "pgdr.backup.restore_cluster"
WAL = "pgdr.backup.wal_archive_config"
PAIRS = {"15": ("primary15", "replica15"), "18": ("primary18", "replica18")}


class Pair:
    """A primary, the replica host restores go to, and a scratch database on the primary (dropped afterwards)."""

    def __init__(self, lab, primary, replica):
        self.lab, self.primary, self.replica = lab, lab.host(primary), lab.host(replica)
        self.backup1 = lab.host("backup1")
        self.suffix = uuid.uuid4().hex[:6]
        self.db = "pitr_" + self.suffix
        self.cluster = "phys-%s-%s" % (primary, self.suffix)
        self.repo_path = "/var/backups/pgdr-phys-%s" % self.suffix
        self.wal_path = "/var/backups/pgdr-wal-%s" % self.suffix

    def connection(self, host):
        return dict(login_host=host.address, login_port=5432, login_user="postgres", login_password=self.lab.pg_password)

    def sftp(self, host, path):
        return self.lab.sftp_repository(host, path)

    def s3(self, what):
        s3 = self.lab.s3
        return {"type": "s3", "endpoint_url": s3["endpoint"], "region": s3["region"], "bucket": s3["bucket"],
                "prefix": "phys-%s/%s" % (self.suffix, what), "access_key": s3["access_key"], "secret_key": s3["secret_key"]}

    def rows(self, host, db=None):
        return host.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t", db=db or self.db).strip()

    def has_db(self, host):
        return host.psql("SELECT count(*) FROM pg_database WHERE datname = %s" % literal(self.db)).strip() == "1"

    def cleanup(self):
        self.primary.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(self.db))
        self.backup1.run(["rm", "-rf", self.repo_path, self.wal_path])
        self.replica.run(["rm", "-rf", self.repo_path])
        self.primary.run(["rm", "-rf", self.wal_path])
        # the helper configurations and read-ahead spools the restores installed (/etc and /var/spool are shared by
        # the lab hosts)
        self.replica.run(["rm", "-rf", "/etc/pgdr/wal/restore-%s.json" % self.cluster, "/var/spool/pgdr/restore-%s" % self.cluster])
        s3 = self.lab.s3_client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix="phys-%s/" % self.suffix):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=self.lab.s3["bucket"], Key=item["Key"])


@pytest.fixture(params=one_per_version(sorted(PAIRS)))
def pair(request, lab):
    made = Pair(lab, *PAIRS[request.param])
    yield made
    made.cleanup()


@pytest.fixture
def pair15(lab):
    made = Pair(lab, *PAIRS["15"])
    yield made
    made.cleanup()


def ok(result):
    assert result["_status"] == "ok", result.get("msg")
    return result


def base_backup(ansible, pair, host, repository, **args):
    """pg_basebackup run on ``host`` (the one holding the repository), over the replication protocol."""
    task = dict(cluster=pair.cluster, repository=repository, checkpoint="fast", **pair.connection(pair.primary), **args)
    return ansible.module(host.name, BASEBACKUP, task, become_postgres=False)


def restore(ansible, pair, repository, **args):
    replica = pair.replica
    task = dict(cluster=pair.cluster, repository=repository, pg_data=replica.pg_data, pg_bin_dir=replica.pg_bin_dir, force=True,
                **pair.connection(replica))
    task.update(args)
    return ansible.module(replica.name, RESTORE, task, become_postgres=False)


def assert_running(host):
    assert host.run([host.pg_bin_dir + "/pg_isready", "-q", "-h", "/run/postgresql"], check=False).returncode == 0


# --- exercise 1: standalone base backup ------------------------------------------------


def test_standalone_backup_restores_without_the_later_change(ansible, pair):
    """Seed 004 practice 3: a base backup with WAL inside; a change made afterwards must be absent on the restored replica."""
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3);", db=pair.db)
    if pair.primary.major == 15:  # tar through SFTP: taken on the backup host, restored by the replica from there
        repository = pair.sftp(pair.backup1, pair.repo_path)
        made = ok(base_backup(ansible, pair, pair.backup1, dict(repository, type="local"), format="tar", wal_method="stream",
                              compression={"method": "gzip", "location": "client"}))
    else:  # plain: taken on the replica host into its own local repository
        repository = {"type": "local", "path": pair.repo_path}
        made = ok(base_backup(ansible, pair, pair.replica, repository, format="plain", wal_method="stream"))
    assert made["verified"] is True
    pair.primary.psql("DELETE FROM t", db=pair.db)

    checked = ok(ansible.module(pair.replica.name, RESTORE, dict(cluster=pair.cluster, repository=repository, pg_data=pair.replica.pg_data,
                                                                 force=True, **pair.connection(pair.replica)),
                                become_postgres=False, check=True))
    assert checked["plan"]["was_running"] is True and checked["plan"]["chain"] == [made["backup_id"]]
    assert not pair.has_db(pair.replica)  # check mode changed nothing

    done = ok(restore(ansible, pair, repository))
    assert done["state"] == "promoted" and done["backup_id"] == made["backup_id"]
    assert done["previous_data_dir"] is None
    assert done["wal_files_restored"] == 0  # standalone: the WAL inside the backup, nothing from an archive
    assert set(done["timings"]) >= {"deploy_seconds", "verify_backup_seconds", "recovery_seconds", "total_seconds"}
    assert pair.rows(pair.replica) == "1,2,3"  # the DELETE made after the backup is absent
    assert pair.rows(pair.primary) == ""
    assert pair.replica.psql("SHOW archive_mode").strip() == "off"
    assert pair.replica.run(["ls", "/var/lib/postgresql/%d" % pair.replica.major]).stdout.split() == ["main", "postgresql.log"]


# --- exercise 2: archive_command archive + base backup without WAL + PITR ----------------


@pytest.fixture
def archived(ansible, pair):
    """The primary archives to S3 through pgdr-wal; settings are put back (and the server restarted) afterwards."""
    archive = pair.s3("wal")
    result = ok(ansible.module(pair.primary.name, WAL, dict(archive_mode="on", archive=archive, restart=True, verify=True,
                                                            pg_data=pair.primary.pg_data, **pair.connection(pair.primary)),
                               become_postgres=False))
    assert result["archiver"]["archived_count"] >= 1
    yield archive
    pair.primary.psql("ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")
    pair.primary.run([pair.primary.pg_bin_dir + "/pg_ctl", "-D", pair.primary.pg_data, "-l", "/var/lib/postgresql/%d/postgresql.log"
                      % pair.primary.major, "-w", "restart", "-m", "fast"], user="postgres")


def test_archive_restores_to_a_named_point_and_to_a_time(ansible, pair, archived):
    """Seed 004: base backup without WAL, then a database and table; restore to a restore point and to a time, exactly."""
    made = ok(base_backup(ansible, pair, pair.backup1, pair.s3("sets"), format="tar", wal_method="none"))
    assert made["verified"] is True
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3);", db=pair.db)
    pair.primary.psql("SELECT pg_create_restore_point('before_four')")
    pair.primary.psql("INSERT INTO t VALUES (4)", db=pair.db)
    time.sleep(1.2)
    moment = pair.primary.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'").strip()
    time.sleep(1.2)
    pair.primary.psql("INSERT INTO t VALUES (5)", db=pair.db)
    ok(ansible.module(pair.primary.name, WAL, dict(archive_mode="on", archive=archived, verify=True, pg_data=pair.primary.pg_data,
                                                   **pair.connection(pair.primary)), become_postgres=False))

    named = ok(restore(ansible, pair, pair.s3("sets"), archive=archived, recovery_target_name="before_four"))
    assert named["state"] == "promoted" and named["wal_files_restored"] >= 1
    assert pair.rows(pair.replica) == "1,2,3"

    future = restore(ansible, pair, pair.s3("sets"), archive=archived, recovery_target_time="2099-01-01 00:00:00+00")
    assert future["_status"] == "failed" and "lies after the newest archived WAL" in future["msg"], future["msg"]
    beyond = restore(ansible, pair, pair.s3("sets"), archive=archived, recovery_target_lsn="FFF/0")
    assert beyond["_status"] == "failed" and "lies after the newest archived WAL" in beyond["msg"], beyond["msg"]

    timed = ok(restore(ansible, pair, pair.s3("sets"), archive=archived, recovery_target_time=moment, keep_previous=True))
    assert pair.rows(pair.replica) == "1,2,3,4"
    assert timed["reached_time"] is not None and timed["reached_time"] < moment.replace(" ", "T").replace("+00", "+00:00")
    assert timed["previous_data_dir"].endswith(".pgdr-previous-" + made["backup_id"])
    pair.replica.run(["rm", "-rf", timed["previous_data_dir"]])


# --- exercise 3: pg_receivewal streaming archive with a slot and the .partial segment ---


def test_streaming_archive_restores_from_the_partial_segment(ansible, pair):
    slot = "pgdr_" + pair.suffix
    receiver = dict(state="present", directory=pair.wal_path, slot=slot)
    started = ok(ansible.module(pair.backup1.name, WAL, dict(receiver=receiver, pg_bin_dir=pair.primary.pg_bin_dir,
                                                             **pair.connection(pair.primary)), become_postgres=False))
    try:
        assert started["changed"] is True
        made = ok(base_backup(ansible, pair, pair.backup1, {"type": "local", "path": pair.repo_path}, format="tar", wal_method="none"))
        pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
        pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3);", db=pair.db)
        # no WAL switch: the new rows are only in the segment pg_receivewal is still writing (.partial)
        wanted = pair.primary.psql("SELECT pg_current_wal_lsn()").strip()
        deadline = time.monotonic() + 30
        # the slot advances only when a segment is fsynced; what was written shows in pg_stat_replication
        while pair.primary.psql("SELECT write_lsn >= %s::pg_lsn FROM pg_stat_replication WHERE pid = "
                                "(SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s)" % (literal(wanted), literal(slot))).strip() != "t":
            assert time.monotonic() < deadline, "pg_receivewal did not receive up to %s" % wanted
            time.sleep(0.3)
        listing = pair.backup1.run(["ls", pair.wal_path]).stdout.split()
        assert any(name.endswith(".partial") for name in listing), listing

        done = ok(restore(ansible, pair, pair.sftp(pair.backup1, pair.repo_path), archive=pair.sftp(pair.backup1, pair.wal_path)))
        assert done["backup_id"] == made["backup_id"]
        assert pair.rows(pair.replica) == "1,2,3"
    finally:
        stopped = ok(ansible.module(pair.backup1.name, WAL, dict(receiver=dict(receiver, state="absent"), pg_bin_dir=pair.primary.pg_bin_dir,
                                                                 **pair.connection(pair.primary)), become_postgres=False))
    assert stopped["changed"] is True
    assert pair.primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s" % literal(slot)).strip() == "0"


# --- refusals: nothing changes on the target, whose cluster keeps running ----------------


@ON_PG15
def test_refusals_leave_the_target_cluster_running_and_unchanged(ansible, lab, pair15):
    pair = pair15
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (7);", db=pair.db)
    made = ok(base_backup(ansible, pair, pair.backup1, {"type": "local", "path": pair.repo_path}, format="tar", wal_method="stream"))
    repository = pair.sftp(pair.backup1, pair.repo_path)
    marker = "refusal_marker_" + pair.suffix
    pair.replica.psql("CREATE TABLE IF NOT EXISTS %s (x int)" % ident(marker))
    replica18 = lab.host("replica18")
    replica18.psql("CREATE TABLE IF NOT EXISTS %s (x int)" % ident(marker))

    def still_there(host):
        assert_running(host)
        assert host.psql("SELECT to_regclass(%s) IS NOT NULL" % literal(marker)).strip() == "t"

    # a PostgreSQL 15 backup onto the 18 cluster
    wrong = ansible.module("replica18", RESTORE, dict(cluster=pair.cluster, repository=repository, pg_data=replica18.pg_data, force=True,
                                                      **pair.connection(replica18)), become_postgres=False)
    assert wrong["_status"] == "failed"
    assert "is of PostgreSQL 15 but the cluster in %s is PostgreSQL 18" % replica18.pg_data in wrong["msg"]
    still_there(replica18)
    replica18.psql("DROP TABLE %s" % ident(marker))

    # a running server without force
    unforced = restore(ansible, pair, repository, force=False)
    assert unforced["_status"] == "failed" and "is running; set force: true" in unforced["msg"]
    # a target before the backup's end, and one the backup alone cannot reach
    early = restore(ansible, pair, repository, recovery_target_time="2000-01-01 00:00:00+00")
    assert early["_status"] == "failed" and "lies before the end of backup %s" % made["backup_id"] in early["msg"]
    unreachable = restore(ansible, pair, repository, recovery_target_name="nowhere")
    assert unreachable["_status"] == "failed" and "give archive" in unreachable["msg"]
    still_there(pair.replica)

    # a target PostgreSQL cannot reach: the restored cluster fails to start and the previous one comes back
    empty_archive = {"type": "local", "path": "/var/backups/pgdr-empty-%s" % pair.suffix}
    pair.replica.run(["install", "-d", "-o", "postgres", "-m", "0700", empty_archive["path"]])
    try:
        missed = restore(ansible, pair, repository, archive=empty_archive, recovery_target_name="nowhere", recovery_timeout=60)
    finally:
        pair.replica.run(["rm", "-rf", empty_archive["path"]])
    assert missed["_status"] == "failed"
    assert "recovery ended before configured recovery target was reached" in missed["msg"], missed["msg"]
    assert "the previous data directory was put back and started" in missed["msg"]
    still_there(pair.replica)
    assert pair.replica.run(["ls", "/var/lib/postgresql/15"]).stdout.split() == ["main", "postgresql.log"]

    # one flipped byte near the end of the base tar (damaged after the backup): the tar is hashed while it is extracted into
    # the scratch folder, so nearly all of it is deployed before the digest differs; refused naming the file, the scratch
    # copy removed, the running server never stopped
    tar = "%s/%s/%s/base.tar.gz" % (pair.repo_path, pair.cluster, made["backup_id"])
    if pair.backup1.run(["test", "-e", tar], check=False).returncode != 0:
        tar = tar[: -len(".gz")]
    pair.backup1.run(["python3", "-c", "import os, sys; f = open(sys.argv[1], 'r+b'); at = os.path.getsize(sys.argv[1]) - 1500; "
                      "f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1])); f.close()", tar])
    started = pair.replica.psql("SELECT pg_postmaster_start_time()")
    corrupt = restore(ansible, pair, repository)
    assert corrupt["_status"] == "failed"
    assert "base.tar" in corrupt["msg"] and "does not match its manifest" in corrupt["msg"], corrupt["msg"]
    assert "nothing was changed on the target" in corrupt["msg"]
    still_there(pair.replica)
    assert pair.replica.psql("SELECT pg_postmaster_start_time()") == started, "the running server was restarted"
    assert pair.replica.run(["ls", "/var/lib/postgresql/15"]).stdout.split() == ["main", "postgresql.log"]
    pair.replica.psql("DROP TABLE %s" % ident(marker))


# --- incremental chain (PostgreSQL 17+) ---------------------------------------------------


@pytest.fixture
def pair18(lab):
    made = Pair(lab, *PAIRS["18"])
    made.primary.psql("ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();")
    yield made
    made.primary.psql("ALTER SYSTEM RESET summarize_wal; SELECT pg_reload_conf();")
    made.cleanup()


@ON_PG18
def test_incremental_chain_restores_with_pg_combinebackup(ansible, pair18):
    pair = pair18
    repository = {"type": "local", "path": pair.repo_path}
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1);", db=pair.db)
    full = ok(base_backup(ansible, pair, pair.replica, repository, format="plain", wal_method="stream"))
    pair.primary.psql("INSERT INTO t VALUES (2)", db=pair.db)
    first = ok(base_backup(ansible, pair, pair.replica, repository, format="tar", wal_method="stream", incremental_from=full["backup_id"]))
    pair.primary.psql("INSERT INTO t VALUES (3)", db=pair.db)
    second = ok(base_backup(ansible, pair, pair.replica, repository, format="plain", wal_method="stream", incremental_from=first["backup_id"]))
    pair.primary.psql("INSERT INTO t VALUES (4)", db=pair.db)

    done = ok(restore(ansible, pair, repository, backup_id=second["backup_id"]))
    assert done["plan"]["chain"] == [full["backup_id"], first["backup_id"], second["backup_id"]]
    assert pair.rows(pair.replica) == "1,2,3"


# --- an archive outage: WAL is kept, archiving catches up, PITR into the outage works ---


@ON_PG15
def test_archive_outage_keeps_wal_and_pitr_into_the_outage_succeeds(ansible, pair15):
    pair = pair15
    archive = {"type": "local", "path": pair.wal_path}
    pair.primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", pair.wal_path])
    settings = dict(archive_mode="on", archive=archive, pg_data=pair.primary.pg_data, **pair.connection(pair.primary))
    ok(ansible.module(pair.primary.name, WAL, dict(settings, restart=True, verify=True), become_postgres=False))
    try:
        made = ok(base_backup(ansible, pair, pair.backup1, {"type": "local", "path": pair.repo_path}, format="tar", wal_method="none"))
        pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
        pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1);", db=pair.db)
        failed_before = int(pair.primary.psql("SELECT failed_count FROM pg_stat_archiver").strip())

        pair.primary.run(["chmod", "0500", pair.wal_path])  # the archive becomes unwritable for postgres
        try:
            for n in range(2, 7):
                pair.primary.psql("INSERT INTO t SELECT %d FROM generate_series(1, 1); SELECT pg_switch_wal();" % n, db=pair.db)
                if n == 4:
                    time.sleep(1.2)
                    moment = pair.primary.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'").strip()
                    time.sleep(1.2)
            deadline = time.monotonic() + 30
            while int(pair.primary.psql("SELECT failed_count FROM pg_stat_archiver").strip()) <= failed_before:
                assert time.monotonic() < deadline, "the archiver never reported a failure"
                time.sleep(0.5)
            waiting = pair.primary.run(["sh", "-c", "ls %s/pg_wal/archive_status | grep -c '\\.ready$'" % pair.primary.pg_data]).stdout
            assert int(waiting) >= 4, "WAL waiting for the archive must stay on the primary (found %s .ready)" % waiting.strip()
            health = ok(ansible.module(pair.primary.name, WAL, dict(settings, verify=False), become_postgres=False))
            assert health["archiver"]["failed_count"] > failed_before
        finally:
            pair.primary.run(["chmod", "0700", pair.wal_path])
        caught_up = ok(ansible.module(pair.primary.name, WAL, dict(settings, verify=True), become_postgres=False))
        assert caught_up["changed"] is False

        done = ok(restore(ansible, pair, pair.sftp(pair.backup1, pair.repo_path), archive=pair.sftp(pair.primary, pair.wal_path),
                          recovery_target_time=moment))
        assert done["backup_id"] == made["backup_id"]
        assert pair.rows(pair.replica) == "1,2,3,4"  # everything up to the moment inside the outage, nothing after
        # restore_command read ahead: its background prefetcher spooled the following segments over one SSH session
        spool_log = pair.replica.run(["cat", "/var/spool/pgdr/restore-%s/.prefetch.log" % pair.cluster], check=False).stdout
        assert "fetched 0000000" in spool_log, spool_log

        # a segment lost from the middle of the archive: replaying "everything" would stop at the gap and promote
        # there, silently early; the restore fails instead and the previous cluster comes back
        segments = sorted(n for n in pair.primary.run(["ls", pair.wal_path]).stdout.split() if len(n) == 24)
        lost = segments[-2]
        pair.primary.run(["mv", "%s/%s" % (pair.wal_path, lost), "%s/%s.lost" % (pair.wal_path, lost)])
        try:
            gap = restore(ansible, pair, pair.sftp(pair.backup1, pair.repo_path), archive=pair.sftp(pair.primary, pair.wal_path))
        finally:
            pair.primary.run(["mv", "%s/%s.lost" % (pair.wal_path, lost), "%s/%s" % (pair.wal_path, lost)])
        assert gap["_status"] == "failed"
        assert "before the newest archived segment %s" % segments[-1] in gap["msg"], gap["msg"]
        assert gap["msg"].endswith("the previous data directory was put back and started")
        assert pair.rows(pair.replica) == "1,2,3,4"  # the cluster restored before, running again
    finally:
        pair.primary.psql("ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")
        pair.primary.run([pair.primary.pg_bin_dir + "/pg_ctl", "-D", pair.primary.pg_data, "-l", "/var/lib/postgresql/15/postgresql.log",
                          "-w", "restart", "-m", "fast"], user="postgres")


# --- a streaming standby built from a base backup -------------------------------------------


@ON_PG15
def test_standby_from_a_base_backup_streams_from_its_primary_through_a_slot(ansible, pair15):
    pair = pair15
    slot = "standby_" + pair.suffix
    pair.primary.psql("SELECT pg_create_physical_replication_slot(%s)" % literal(slot))
    try:
        made = ok(base_backup(ansible, pair, pair.backup1, {"type": "local", "path": pair.repo_path}, format="tar", wal_method="stream"))
        conninfo = "host=%s port=5432 user=postgres password=%s application_name=pgdr_standby" % (pair.primary.address, pair.lab.pg_password)
        done = ok(restore(ansible, pair, pair.sftp(pair.backup1, pair.repo_path), standby={"primary_conninfo": conninfo, "slot": slot}))
        assert done["state"] == "standby" and done["backup_id"] == made["backup_id"]
        assert pair.lab.pg_password not in str(done)
        pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
        pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (42);", db=pair.db)
        deadline = time.monotonic() + 30
        while not (pair.has_db(pair.replica) and pair.replica.psql("SELECT to_regclass('t') IS NOT NULL", db=pair.db).strip() == "t"
                   and pair.rows(pair.replica) == "42"):
            assert time.monotonic() < deadline, "the standby did not replay the primary's change"
            time.sleep(0.3)
        assert pair.replica.psql("SELECT status FROM pg_stat_wal_receiver").strip() == "streaming"
        assert pair.primary.psql("SELECT active FROM pg_replication_slots WHERE slot_name = %s" % literal(slot)).strip() == "t"
    finally:
        # the replica stops being a standby, so the slot is free to drop
        pair.replica.run([pair.replica.pg_bin_dir + "/pg_ctl", "-D", pair.replica.pg_data, "-w", "promote"], user="postgres", check=False)
        deadline = time.monotonic() + 30
        while pair.primary.psql("SELECT active FROM pg_replication_slots WHERE slot_name = %s" % literal(slot)).strip() == "t":
            assert time.monotonic() < deadline, "the slot stayed active after the standby was promoted"
            time.sleep(0.3)
        pair.primary.psql("SELECT pg_drop_replication_slot(%s)" % literal(slot))


# --- a tar set with a tablespace, restored with tablespace_mapping -----------------------


@ON_PG15
def test_tar_set_with_a_tablespace_restores_into_the_mapped_folder(ansible, pair15):
    """base.tar of a tar set holds tablespace_map (the original locations); PostgreSQL would recreate the links from it at
    startup, undoing tablespace_mapping. The restored link must point at the mapped folder, with the table's rows in it."""
    pair = pair15
    space = "ts_" + pair.suffix
    original = "/var/lib/postgresql/pgdr-ts-%s" % pair.suffix
    mapped = "/var/lib/postgresql/pgdr-ts-restored-%s" % pair.suffix
    pair.primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", original])
    pair.primary.psql("CREATE TABLESPACE %s LOCATION %s" % (ident(space), literal(original)))
    try:
        pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
        pair.primary.psql("CREATE TABLE t (n int) TABLESPACE %s; INSERT INTO t VALUES (1), (2), (3);" % ident(space), db=pair.db)
        oid = pair.primary.psql("SELECT oid FROM pg_tablespace WHERE spcname = %s" % literal(space)).strip()
        repository = {"type": "local", "path": pair.repo_path}
        made = ok(base_backup(ansible, pair, pair.replica, repository, format="tar", wal_method="stream"))
        files = [f["path"] for f in made["manifest"]["files"]]
        assert any(name.startswith(oid + ".tar") for name in files), files
        pair.primary.psql("DELETE FROM t", db=pair.db)

        done = ok(restore(ansible, pair, repository, tablespace_mapping={original: mapped}))
        assert done["state"] == "promoted"
        link = pair.replica.run(["readlink", "%s/pg_tblspc/%s" % (pair.replica.pg_data, oid)]).stdout.strip()
        assert link == mapped
        assert pair.replica.psql("SELECT pg_tablespace_location(%s)" % oid).strip() == mapped
        assert pair.replica.run(["test", "-e", "%s/tablespace_map" % pair.replica.pg_data], check=False).returncode != 0
        assert pair.rows(pair.replica) == "1,2,3"
        assert pair.replica.run(["test", "-e", original], check=False).returncode != 0  # nothing written at the old place
    finally:
        for host in (pair.primary, pair.replica):
            host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(pair.db))
            host.psql("DROP TABLESPACE IF EXISTS %s" % ident(space))
        pair.primary.run(["rm", "-rf", original])
        pair.replica.run(["rm", "-rf", mapped, original])


# --- recovery_target_action shutdown, with the server's log elsewhere ---------------------


@ON_PG15
def test_shutdown_at_the_target_is_recognised_when_the_log_goes_to_the_logging_collector(ansible, pair15):
    """With logging_collector on, pg_ctl's log file never sees "recovery stopping": the control file decides."""
    pair = pair15
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2);", db=pair.db)
    repository = {"type": "local", "path": pair.repo_path}
    ok(base_backup(ansible, pair, pair.replica, repository, format="tar", wal_method="stream"))
    log = "/var/lib/postgresql/15/postgresql.log"
    offset = int(pair.replica.run(["stat", "-c", "%s", log]).stdout)
    try:
        done = ok(restore(ansible, pair, repository, recovery_target="immediate", recovery_target_action="shutdown",
                          server_settings={"logging_collector": "on"}))
        assert done["state"] == "shut down at target"
        controldata = pair.replica.run([pair.replica.pg_bin_dir + "/pg_controldata", "-D", pair.replica.pg_data],
                                       env={"LC_ALL": "C"}).stdout
        assert "Database cluster state:               shut down in recovery" in controldata
        written = pair.replica.run(["tail", "-c", "+%d" % (offset + 1), log]).stdout  # what this restore's server wrote there
        assert "logging collector" in written and "recovery stopping" not in written
    finally:
        # the replica's cluster back to a running restored copy (starting this one would shut down again)
        ok(restore(ansible, pair, repository))
    assert_running(pair.replica)
    assert pair.rows(pair.replica) == "1,2"


# --- a scratch restore beside the live cluster: recovery must be watched on the restored server ---


@ON_PG15
def test_a_scratch_restore_watched_over_the_live_servers_port_fails_and_leaves_nothing(ansible, pair15):
    """A copy restored into another folder with server_settings port 5433, but login_port left at 5432 (the live cluster,
    itself a restored copy of the primary: same system identifier, and it did run recovery once, so its replay LSN is not
    null). data_directory names the mistake: the restore fails saying so and removes the copy (without that check the live
    server's old replay LSN was blamed as a short recovery, or passed when it lay past the backup's end); with login_port
    5433 it passes."""
    pair = pair15
    scratch = "/var/lib/postgresql/15/scratch-%s" % pair.suffix
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (5);", db=pair.db)
    repository = {"type": "local", "path": pair.repo_path}
    ok(base_backup(ansible, pair, pair.replica, repository, format="tar", wal_method="stream"))
    task = dict(cluster=pair.cluster, repository=repository, pg_data=scratch, pg_bin_dir=pair.replica.pg_bin_dir,
                server_settings={"port": 5433}, **pair.connection(pair.replica))
    try:
        wrong = ansible.module(pair.replica.name, RESTORE, task, become_postgres=False)
        assert wrong["_status"] == "failed"
        assert "runs from %s, not from the restored cluster in %s" % (pair.replica.pg_data, scratch) in wrong["msg"], wrong["msg"]
        assert "point login_host and login_port at the restored server" in wrong["msg"]
        assert wrong["msg"].endswith("; the restored copy was removed")
        assert pair.replica.run(["ls", "/var/lib/postgresql/15"]).stdout.split() == ["main", "postgresql.log"]
        assert_running(pair.replica)

        right = ok(ansible.module(pair.replica.name, RESTORE, dict(task, login_port=5433), become_postgres=False))
        assert right["state"] == "promoted"
        assert pair.replica.psql("SHOW data_directory").strip() == pair.replica.pg_data  # the live cluster, untouched
        copy = pair.replica.run([pair.replica.pg_bin_dir + "/psql", "-X", "-At", "-h", "/run/postgresql", "-p", "5433", "-U", "postgres",
                                 "-d", pair.db, "-c", "SELECT n FROM t"], user="postgres").stdout.strip()
        assert copy == "5"
    finally:
        pair.replica.run([pair.replica.pg_bin_dir + "/pg_ctl", "-D", scratch, "-m", "immediate", "-w", "stop"], user="postgres", check=False)
        pair.replica.run(["rm", "-rf", scratch])


# --- what pg_data holds is replaced only with force, and kept aside until the restored cluster verified ---------

SCRATCH_PORT = 5433
PG15_HOME = "/var/lib/postgresql/15"


def scratch_restore(ansible, pair, repository, pg_data, check=False, **args):
    """A restore of the pair's set into ``pg_data`` on the replica, started on SCRATCH_PORT beside the live cluster, to the backup's end."""
    task = dict(cluster=pair.cluster, repository=repository, pg_data=pg_data, pg_bin_dir=pair.replica.pg_bin_dir, recovery_target="immediate",
                server_settings={"port": SCRATCH_PORT}, **dict(pair.connection(pair.replica), login_port=SCRATCH_PORT))
    task.update(args)
    return ansible.module(pair.replica.name, RESTORE, task, become_postgres=False, check=check)


def stop_scratch(pair, pg_data):
    pair.replica.run([pair.replica.pg_bin_dir + "/pg_ctl", "-D", pg_data, "-m", "immediate", "-w", "stop"], user="postgres", check=False)


def scratch_rows(pair):
    return pair.replica.run([pair.replica.pg_bin_dir + "/psql", "-X", "-At", "-h", "/run/postgresql", "-p", str(SCRATCH_PORT), "-U", "postgres",
                             "-d", pair.db, "-c", "SELECT string_agg(n::text, ',' ORDER BY n) FROM t"], user="postgres").stdout.strip()


def small_set(ansible, pair):
    """A database with one row on the primary, and a tar base backup of it in a local repository on the replica."""
    pair.primary.psql("CREATE DATABASE %s" % ident(pair.db))
    pair.primary.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (5);", db=pair.db)
    repository = {"type": "local", "path": pair.repo_path}
    return repository, ok(base_backup(ansible, pair, pair.replica, repository, format="tar", wal_method="stream"))


def listing(host, folder):
    return host.run(["ls", "-A", folder]).stdout.split()


@ON_PG15
def test_a_folder_that_holds_no_cluster_is_replaced_only_with_force_and_kept_until_verified(ansible, pair15):
    """Issue 11 item 1: a non-empty pg_data that is not a cluster was wiped without force. Now it is refused without force (in
    check mode too) and left exactly as it was; with force it is kept aside, put back when the restore fails, kept with
    keep_previous, and removed only after the restored cluster verified."""
    pair, replica = pair15, pair15.replica
    repository, made = small_set(ansible, pair)
    folders = ["%s/notacluster-%s" % (PG15_HOME, pair.suffix), "%s/notacluster2-%s" % (PG15_HOME, pair.suffix)]
    for folder in folders:
        replica.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", folder])
        replica.run(["sh", "-c", 'echo "keep me" > "$1/important.txt"', "sh", folder], user="postgres")
    scratch, other = folders
    before = listing(replica, PG15_HOME)

    def important(folder):
        return replica.run(["cat", folder + "/important.txt"], check=False).stdout

    try:
        for check in (True, False):
            refused = scratch_restore(ansible, pair, repository, scratch, check=check)
            assert refused["_status"] == "failed", refused
            assert refused["msg"].startswith("pg_data %s is not empty and holds no PostgreSQL cluster (important.txt); " % scratch), refused["msg"]
            assert "set force: true to replace what is there (it is kept as %s.pgdr-previous-%s" % (scratch, made["backup_id"]) in refused["msg"]
        assert important(scratch) == "keep me\n" and listing(replica, scratch) == ["important.txt"]
        assert listing(replica, PG15_HOME) == before

        # with force, watched over the live server's port: the restore fails after the swap and the folder comes back
        failed = scratch_restore(ansible, pair, repository, scratch, force=True, login_port=5432)
        assert failed["_status"] == "failed" and "not from the restored cluster in %s" % scratch in failed["msg"], failed["msg"]
        assert failed["msg"].endswith("; the previous data directory was put back"), failed["msg"]
        assert important(scratch) == "keep me\n" and listing(replica, scratch) == ["important.txt"]
        assert listing(replica, PG15_HOME) == before
        assert_running(replica)

        kept = ok(scratch_restore(ansible, pair, repository, scratch, force=True, keep_previous=True))
        assert kept["plan"]["existing"] == "other" and kept["state"] == "promoted"
        assert kept["previous_data_dir"] == "%s.pgdr-previous-%s" % (scratch, made["backup_id"])
        assert important(kept["previous_data_dir"]) == "keep me\n"
        assert scratch_rows(pair) == "5"
        stop_scratch(pair, scratch)

        removed = ok(scratch_restore(ansible, pair, repository, other, force=True))
        assert removed["previous_data_dir"] is None and scratch_rows(pair) == "5"
        assert not [name for name in listing(replica, PG15_HOME) if name.startswith(os.path.basename(other) + ".")]
        assert important(other) == ""  # the restored cluster is there now, the folder it replaced is gone
    finally:
        for folder in folders:
            stop_scratch(pair, folder)
        replica.run(["sh", "-c", 'rm -rf "$1" "$1".pgdr-* "$2" "$2".pgdr-*', "sh", scratch, other])


@ON_PG15
def test_a_stopped_cluster_in_pg_data_is_replaced_only_with_force(ansible, pair15):
    """Issue 11 item 1: only a running server asked for force; a stopped cluster was replaced without it."""
    pair, replica = pair15, pair15.replica
    repository, _made = small_set(ansible, pair)
    scratch = "%s/stopped-%s" % (PG15_HOME, pair.suffix)
    try:
        first = ok(scratch_restore(ansible, pair, repository, scratch))  # a new folder: nothing to replace, no force needed
        assert first["state"] == "promoted"
        stop_scratch(pair, scratch)
        replica.run(["touch", scratch + "/still_here"], user="postgres")
        before, inside = listing(replica, PG15_HOME), listing(replica, scratch)

        for check in (True, False):
            refused = scratch_restore(ansible, pair, repository, scratch, check=check)
            assert refused["_status"] == "failed", refused
            assert refused["msg"].startswith("pg_data %s holds a stopped PostgreSQL 15 cluster; set force: true to replace it" % scratch), refused["msg"]
        assert listing(replica, PG15_HOME) == before and listing(replica, scratch) == inside
        status = replica.run([replica.pg_bin_dir + "/pg_ctl", "-D", scratch, "status"], user="postgres", check=False)
        assert status.returncode == 3  # still stopped

        forced = ok(scratch_restore(ansible, pair, repository, scratch, force=True))
        assert forced["plan"]["existing"] == "stopped cluster" and forced["previous_data_dir"] is None
        assert "still_here" not in listing(replica, scratch) and listing(replica, PG15_HOME) == before
        assert scratch_rows(pair) == "5"
    finally:
        stop_scratch(pair, scratch)
        replica.run(["sh", "-c", 'rm -rf "$1" "$1".pgdr-*', "sh", scratch])


@ON_PG15
def test_a_pg_data_whose_parent_does_not_exist_gets_folders_the_server_can_use(ansible, pair15):
    """Issue 11 item 3: the missing parent was made root:root 0755, the server could not create its log there and the task said
    "no server log output". Now the folders are made for postgres (0700) and the restored cluster starts; a folder the server
    cannot write its log in is refused before anything changes, naming the log, its folder's owner and mode."""
    pair, replica = pair15, pair15.replica
    repository, _made = small_set(ansible, pair)
    top = "%s/parent-%s" % (PG15_HOME, pair.suffix)
    pg_data = top + "/deep/data"
    rooted = "%s/rootowned-%s" % (PG15_HOME, pair.suffix)
    try:
        done = ok(scratch_restore(ansible, pair, repository, pg_data))
        assert done["state"] == "promoted" and done["plan"]["create_folders"] == [top, top + "/deep"] and done["plan"]["existing"] == "absent"
        owners = replica.run(["stat", "-c", "%U:%G %a", top, top + "/deep", top + "/deep/postgresql.log"]).stdout.split("\n")
        assert owners[:3] == ["postgres:postgres 700", "postgres:postgres 700", "postgres:postgres 600"], owners
        assert scratch_rows(pair) == "5"
        stop_scratch(pair, pg_data)

        replica.run(["install", "-d", "-o", "root", "-g", "root", "-m", "0755", rooted])
        refused = scratch_restore(ansible, pair, repository, rooted + "/data")
        assert refused["_status"] == "failed"
        assert refused["msg"].startswith("the server log %s/postgresql.log cannot be written by postgres, which runs the server (%s owned by "
                                         "root:root, mode 0755); give server_log" % (rooted, rooted)), refused["msg"]
        assert listing(replica, rooted) == []
    finally:
        stop_scratch(pair, pg_data)
        replica.run(["rm", "-rf", top, rooted])
