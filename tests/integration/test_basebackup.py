"""pg_basebackup through ansible-playbook: run on backup1 against primary15 / primary18 over the replication protocol."""

import hashlib
import json
import os
import signal
import threading
import time
import uuid

import pytest

from tests.manifest_schema import assert_valid_manifest

BASE = "pgdr.backup.pg_basebackup"


def one_line(result):
    """A failure's message: present, one line, no traceback."""
    assert result["_status"] == "failed", result
    msg = result.get("msg") or ""
    assert msg and "\n" not in msg.strip() and "Traceback" not in msg, msg
    return msg


def assert_ok(result):
    assert result["_status"] == "ok", result.get("msg")
    return result


class Repo:
    """Local, SFTP (backup1 to itself) and S3 repositories for one test, removed afterwards."""

    def __init__(self, lab):
        self.lab = lab
        self.backup1 = lab.host("backup1")
        self.suffix = uuid.uuid4().hex[:6]
        self.path = "/var/backups/pgdr-bb-%s" % self.suffix
        self.backup1.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.path])

    def spec(self, kind):
        if kind == "local":
            return {"type": "local", "path": self.path}
        if kind == "sftp":
            return self.lab.sftp_repository(self.backup1, self.path + "-sftp")
        s3 = self.lab.s3
        return {
            "type": "s3",
            "endpoint_url": s3["endpoint"],
            "region": s3["region"],
            "bucket": s3["bucket"],
            "prefix": "bb-%s" % self.suffix,
            "access_key": s3["access_key"],
            "secret_key": s3["secret_key"],
        }

    def ls(self, relpath):
        done = self.backup1.run(["ls", "-A", "%s/%s" % (self.path, relpath)], check=False)
        return sorted(done.stdout.split()) if done.returncode == 0 else None

    def cleanup(self):
        self.backup1.run(["rm", "-rf", self.path, self.path + "-sftp"])
        s3 = self.lab.s3_client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.lab.s3["bucket"], Prefix="bb-%s/" % self.suffix):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=self.lab.s3["bucket"], Key=item["Key"])


@pytest.fixture
def repo(lab):
    made = Repo(lab)
    yield made
    made.cleanup()


def conn_args(lab, source):
    return dict(login_host=source.address, login_user="postgres", login_password=lab.pg_password, checkpoint="fast")


def base(ansible, lab, source, repository, cluster, **args):
    return ansible.module("backup1", BASE, dict(conn_args(lab, source), cluster=cluster, repository=repository, **args))


def staging_leftovers(lab):
    return lab.host("backup1").run(["sh", "-c", "ls -d /var/tmp/pgdr-basebackup-* 2>/dev/null || true"]).stdout.split()


def system_identifier(source):
    return source.psql("SELECT system_identifier::text FROM pg_control_system()").strip()


def test_plain_stream_to_local_verified_then_corruption_found_by_reverify(ansible, lab, repo):
    source = lab.host("primary18")
    cluster = "p18-" + repo.suffix
    marker = "bb_%s" % repo.suffix
    source.psql("CREATE TABLE %s AS SELECT 42 AS answer" % marker)
    try:
        done = assert_ok(base(ansible, lab, source, repo.spec("local"), cluster, format="plain", backup_id="full1"))
    finally:
        source.psql("DROP TABLE %s" % marker)
    manifest = assert_valid_manifest(done["manifest"])
    physical = manifest["physical"]
    assert done["changed"] is True and done["verified"] is True and physical["verified"] is True
    assert done["verified_with"] == "pg_verifybackup" and done["verify_seconds"] > 0
    assert manifest["kind"] == "base" and manifest["source"]["major"] == 18
    assert manifest["source"]["system_identifier"] == system_identifier(source)
    assert [f["path"] for f in manifest["files"]] == ["data/backup_manifest"]
    assert manifest["files"][0]["role"] == "backup-manifest" and manifest["files"][0]["format"] == "json"
    assert physical["format"] == "plain" and physical["data_dir"] == "data" and physical["wal_included"] is True
    assert physical["backup_label"]["start_wal_location"] == manifest["start_lsn"]
    assert physical["backup_label"]["label"] == "pgdr.backup %s/full1" % cluster
    assert physical["chain"] == ["full1"] and physical["incremental_from"] is None
    assert "--checkpoint=fast" in manifest["tool"]["argv"] and not any(lab.pg_password in a for a in manifest["tool"]["argv"])
    assert lab.pg_password not in json.dumps(done)
    assert done["progress"]["percent"] == 100 and done["progress"]["total_bytes"] > 1_000_000
    assert done["summary"]["start_lsn"] == manifest["start_lsn"] and done["summary"]["timeline"] >= 1
    files = repo.ls("%s/full1/data" % cluster)
    assert {"PG_VERSION", "backup_label", "backup_manifest", "pg_wal", "global"} <= set(files)
    assert repo.ls("%s/full1/data/pg_wal" % cluster), "stream put the backup's WAL into data/pg_wal"
    assert repo.ls("%s/full1" % cluster) == ["data", "manifest.json"]

    again = assert_ok(base(ansible, lab, source, repo.spec("local"), cluster, format="plain", backup_id="full1"))
    assert again["changed"] is False and again["manifest"] == manifest

    # a data file damaged on disk after the backup: re-verification finds it and the set becomes incomplete
    relfile = next(
        p["Path"]
        for p in json.loads(repo.backup1.run(["cat", "%s/%s/full1/data/backup_manifest" % (repo.path, cluster)]).stdout)["Files"]
        if p["Path"].startswith("base/") and p["Size"] > 8192
    )
    repo.backup1.run(["dd", "if=/dev/urandom", "of=%s/%s/full1/data/%s" % (repo.path, cluster, relfile), "bs=512", "count=1", "seek=3", "conv=notrunc"])
    failed = ansible.module("backup1", BASE, dict(action="verify", cluster=cluster, backup_id="full1", repository=repo.spec("local")))
    msg = one_line(failed)
    assert msg.startswith("backup set %s/full1 failed verification: " % cluster) and "checksum mismatch" in msg and relfile in msg
    assert repo.ls("%s/full1" % cluster) == ["data", "verify-failed.json"]
    status = ansible.module("backup1", BASE, dict(action="verify", cluster=cluster, backup_id="full1", repository=repo.spec("local")))
    assert "is incomplete (no manifest.json)" in one_line(status)


def test_tar_server_zstd_to_s3(ansible, lab, repo):
    source = lab.host("primary15")
    cluster = "p15-" + repo.suffix
    done = assert_ok(base(ansible, lab, source, repo.spec("s3"), cluster, backup_id="zst", compression=dict(method="zstd", level=3, location="server")))
    manifest = assert_valid_manifest(done["manifest"])
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"base.tar.zst", "pg_wal.tar", "backup_manifest"}
    assert files["base.tar.zst"]["compression"]["method"] == "zstd" and files["pg_wal.tar"]["compression"]["method"] == "none"
    assert files["base.tar.zst"]["role"] == "base" and files["pg_wal.tar"]["role"] == "wal"
    assert files["backup_manifest"]["role"] == "backup-manifest" and files["backup_manifest"]["format"] == "json"
    assert manifest["physical"]["compression"] == {"algorithm": "zstd", "level": 3, "location": "server"}
    assert manifest["source"]["major"] == 15 and manifest["source"]["system_identifier"] == system_identifier(source)
    assert done["verified"] is True and done["upload_seconds"] is not None
    assert "--compress=server-zstd:3" in done["cmd"]
    s3 = lab.s3_client()
    body = s3.get_object(Bucket=lab.s3["bucket"], Key="bb-%s/%s/zst/base.tar.zst" % (repo.suffix, cluster))["Body"].read()
    assert hashlib.sha256(body).hexdigest() == files["base.tar.zst"]["sha256"] and body[:4] == b"\x28\xb5\x2f\xfd"
    assert json.loads(s3.get_object(Bucket=lab.s3["bucket"], Key="bb-%s/%s/zst/manifest.json" % (repo.suffix, cluster))["Body"].read()) == manifest
    assert staging_leftovers(lab) == []


def test_tar_client_gzip_to_sftp(ansible, lab, repo):
    source = lab.host("primary18")
    cluster = "p18-" + repo.suffix
    done = assert_ok(base(ansible, lab, source, repo.spec("sftp"), cluster, backup_id="gz", compression=dict(method="gzip", level=1)))
    manifest = assert_valid_manifest(done["manifest"])
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"base.tar.gz", "pg_wal.tar.gz", "backup_manifest"}
    assert all(files[n]["compression"]["method"] == "gzip" for n in ("base.tar.gz", "pg_wal.tar.gz"))
    assert done["verified"] is True and done["verified_with"] == "pg_verifybackup --format=tar + pg_waldump"
    stored = repo.backup1.run(["sha256sum", "%s-sftp/%s/gz/base.tar.gz" % (repo.path, cluster)]).stdout.split()[0]
    assert stored == files["base.tar.gz"]["sha256"]
    assert staging_leftovers(lab) == []


def test_wal_method_none_tar_local(ansible, lab, repo):
    source = lab.host("primary15")
    cluster = "p15-" + repo.suffix
    done = assert_ok(base(ansible, lab, source, repo.spec("local"), cluster, backup_id="nowal", wal_method="none"))
    manifest = assert_valid_manifest(done["manifest"])
    assert [f["path"] for f in manifest["files"]] == ["backup_manifest", "base.tar"]
    assert manifest["physical"]["wal_included"] is False and manifest["physical"]["wal_method"] == "none"
    assert manifest["physical"]["wal_segment_size"] == 16 * 1024 * 1024  # the lab's clusters use the default
    assert done["verified"] is True and "pg_waldump" not in done["verified_with"]
    assert "--wal-method=none" in done["cmd"]
    # the sums hashed while pg_basebackup wrote are those of the files as they are on disk
    out = repo.backup1.run(["sha256sum", "%s/%s/nowal/base.tar" % (repo.path, cluster)]).stdout.split()[0]
    assert out == next(f["sha256"] for f in manifest["files"] if f["path"] == "base.tar")


@pytest.fixture
def summarize_wal(lab):
    source = lab.host("primary18")
    source.psql("ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();")
    yield source
    source.psql("ALTER SYSTEM RESET summarize_wal; SELECT pg_reload_conf();")


def test_incremental_chain_on_18_combines(ansible, lab, repo, summarize_wal):
    source = summarize_wal
    cluster = "inc-" + repo.suffix
    local = repo.spec("local")
    full = assert_ok(base(ansible, lab, source, local, cluster, format="plain", backup_id="b0"))
    source.psql("CREATE TABLE IF NOT EXISTS bb_inc_probe (v int); INSERT INTO bb_inc_probe VALUES (1); SELECT pg_switch_wal();")
    try:
        first = assert_ok(base(ansible, lab, source, local, cluster, format="plain", backup_id="b1", incremental_from="b0"))
        source.psql("INSERT INTO bb_inc_probe VALUES (2)")
        second = assert_ok(base(ansible, lab, source, local, cluster, format="plain", backup_id="b2", incremental_from="b1"))
    finally:
        source.psql("DROP TABLE IF EXISTS bb_inc_probe")
    for done, chain, parent in ((full, ["b0"], None), (first, ["b0", "b1"], "b0"), (second, ["b0", "b1", "b2"], "b1")):
        physical = assert_valid_manifest(done["manifest"])["physical"]
        assert physical["chain"] == chain and physical["incremental_from"] == parent and done["verified"] is True
    assert first["manifest"]["physical"]["backup_label"]["incremental_from_lsn"] is not None
    assert any(a.startswith("--incremental=") for a in second["cmd"])
    # the chain is usable: pg_combinebackup builds a full data directory that passes pg_verifybackup
    b18 = "/usr/lib/postgresql/18/bin/"
    out = "/var/tmp/pgdr-bb-combined-%s" % repo.suffix
    dirs = ["%s/%s/%s/data" % (repo.path, cluster, b) for b in ("b0", "b1", "b2")]
    try:
        repo.backup1.run([b18 + "pg_combinebackup", "-o", out] + dirs, user="postgres")
        repo.backup1.run([b18 + "pg_verifybackup", "--no-parse-wal", out], user="postgres")
    finally:
        repo.backup1.run(["rm", "-rf", out])


def test_incremental_refused_on_15_and_check_mode_writes_nothing(ansible, lab, repo):
    source = lab.host("primary15")
    cluster = "p15-" + repo.suffix
    refused = one_line(base(ansible, lab, source, repo.spec("local"), cluster, format="plain", backup_id="x", incremental_from="b0"))
    assert refused.startswith("incremental backups need PostgreSQL 17 or later") and "this is 15" in refused
    plain_s3 = one_line(base(ansible, lab, source, repo.spec("s3"), cluster, format="plain", backup_id="y"))
    assert plain_s3 == "format plain writes a data directory; use format: tar for sftp/s3"
    checked = assert_ok(
        ansible.module(
            "backup1",
            BASE,
            dict(conn_args(lab, source), cluster=cluster, backup_id="z", repository=repo.spec("local"), slot="bb_" + repo.suffix, max_rate="10M"),
            check=True,
        )
    )
    assert checked["changed"] is True and checked["create_slot"] is True
    assert checked["cmd"][0] == "pg_basebackup" and "--slot=bb_%s" % repo.suffix in checked["cmd"] and "--create-slot" in checked["cmd"]
    assert "--max-rate=10M" in checked["cmd"] and lab.pg_password not in json.dumps(checked)
    assert repo.ls(cluster) is None
    assert source.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bb_%s'" % repo.suffix).strip() == "0"


def basebackup_pids(label):
    """pids of the pg_basebackup whose --label is ours (the lab shares the machine's process list)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_basebackup") and ("--label=%s" % label).encode() in argv:
            found.append(int(entry))
    return found


def test_lock_skip_and_fail_and_a_killed_run_leaves_no_manifest(ansible, lab, repo):
    source = lab.host("primary18")
    cluster = "lock-" + repo.suffix
    args = dict(conn_args(lab, source), cluster=cluster, repository=repo.spec("local"), max_rate="32k")
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(result=ansible.module("backup1", BASE, dict(args, backup_id="slow"))), daemon=True)
    thread.start()
    label = "pgdr.backup %s/slow" % cluster
    deadline = time.monotonic() + 60
    while not basebackup_pids(label):
        assert time.monotonic() < deadline and thread.is_alive(), "the first run's pg_basebackup never started: %s" % holder
        time.sleep(0.1)
    try:
        second = ansible.play(
            "backup1",
            [
                {"name": "skip", BASE: dict(args, backup_id="other1", if_running="skip"), "ignore_errors": True},
                {"name": "fail", BASE: dict(args, backup_id="other2", if_running="fail"), "ignore_errors": True},
            ],
        )
    finally:
        for pid in basebackup_pids(label):
            os.kill(pid, signal.SIGKILL)
    skipped = assert_ok(second.result("skip", "backup1"))
    assert skipped["changed"] is False and skipped["skipped_reason"].startswith("another base backup of %s" % cluster)
    assert one_line(second.result("fail", "backup1")).endswith("wait for it, or set if_running: skip")
    thread.join(60)
    killed = one_line(holder["result"])
    assert killed.startswith("pg_basebackup failed (killed by signal 9)")
    assert repo.ls(cluster) == [] and staging_leftovers(lab) == []


def parent_and_streamer(label):
    """(pg_basebackup, its WAL-streaming child) of our --label once both run, else None."""
    pids = basebackup_pids(label)
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid in pids:
            return ppid, pid
    return None


def test_a_killed_pg_basebackup_fails_the_task_promptly_and_leaves_no_process_and_no_set(ansible, lab, repo):
    # issue 11: kill -9 of pg_basebackup during wal_method stream left its WAL streamer (reparented to init)
    # holding the task's stdout, and the task waited for that pipe's end for ever
    source = lab.host("primary15")
    cluster = "orphan-" + repo.suffix
    args = dict(conn_args(lab, source), cluster=cluster, repository=repo.spec("local"), backup_id="killed", wal_method="stream", max_rate="32k")
    label = "pgdr.backup %s/killed" % cluster
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(result=ansible.module("backup1", BASE, args)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while parent_and_streamer(label) is None:
        assert time.monotonic() < deadline and thread.is_alive(), "pg_basebackup and its WAL streamer never both ran: %s" % holder
        time.sleep(0.1)
    parent, streamer = parent_and_streamer(label)
    os.kill(parent, signal.SIGKILL)
    killed = time.monotonic()
    thread.join(60)
    hung = thread.is_alive()
    left = basebackup_pids(label)
    if hung:  # let the run end (and the test fail, not hang): kill what holds its pipe
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        thread.join(120)
    assert not hung, "the task still ran 60 s after pg_basebackup was killed; left running: %s (streamer %d)" % (left, streamer)
    assert time.monotonic() - killed < 30
    assert left == [], "pg_basebackup processes outlived the task: %s" % left
    msg = one_line(holder["result"])
    assert msg.startswith("pg_basebackup failed (killed by signal 9)"), msg
    assert repo.ls(cluster) == [] and staging_leftovers(lab) == []


def test_an_async_task_that_times_out_takes_its_pg_basebackup_with_it(ansible, lab, repo):
    # async's timeout SIGKILLs the module's process group; pg_basebackup runs in a group of its own (so that it can
    # be killed with its WAL streamer), which the module's guard process kills when the module dies
    source = lab.host("primary15")
    cluster = "async-" + repo.suffix
    work_dir = repo.path + "-work"  # the killed module cannot remove its staging folder: ours, not the shared /var/tmp
    args = dict(conn_args(lab, source), cluster=cluster, repository=repo.spec("local"), backup_id="timeout", max_rate="32k", work_dir=work_dir)
    label = "pgdr.backup %s/timeout" % cluster
    repo.backup1.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", work_dir])
    try:
        started = ansible.play("backup1", [{"name": "background", BASE: args, "async": 15, "poll": 0}])
        assert_ok(started.result("background", "backup1"))
        deadline = time.monotonic() + 60
        while parent_and_streamer(label) is None:
            assert time.monotonic() < deadline, "pg_basebackup and its WAL streamer never both ran"
            time.sleep(0.1)
        # two minutes: on a loaded 2-core CI machine, async's watchdog and the guard's start have been seen to take
        # over one (the test failed once so); a pg_basebackup the guard missed still outlives any wait
        deadline = time.monotonic() + 120
        while basebackup_pids(label) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = basebackup_pids(label)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], "pg_basebackup outlived its task's async timeout (15 s) by two minutes: %s" % left
        assert "manifest.json" not in (repo.ls("%s/timeout" % cluster) or [])
    finally:
        repo.backup1.run(["rm", "-rf", work_dir])


# --- streamed sets: SFTP and S3 get the archives while pg_basebackup writes them ---------------------------------------

RESTORE = "pgdr.backup.restore_cluster"
STREAM_PORT = 5441  # the scratch restore of a streamed set, beside the replica's own cluster


def stored(lab, repo, kind, key):
    """(size, sha256) of one stored file, read from the store itself."""
    if kind == "sftp":
        path = "%s-sftp/%s" % (repo.path, key)
        return int(repo.backup1.run(["stat", "-c", "%s", path]).stdout), repo.backup1.run(["sha256sum", path]).stdout.split()[0]
    body = lab.s3_client().get_object(Bucket=lab.s3["bucket"], Key="bb-%s/%s" % (repo.suffix, key))["Body"].read()
    return len(body), hashlib.sha256(body).hexdigest()


def store_listing(lab, repo, kind, cluster):
    """Every name under the cluster's folder in the store (temporary files and pending multipart uploads included)."""
    if kind == "sftp":
        done = repo.backup1.run(["find", "%s-sftp/%s" % (repo.path, cluster), "-type", "f"], check=False)
        return sorted(done.stdout.split())
    s3, prefix = lab.s3_client(), "bb-%s/%s/" % (repo.suffix, cluster)
    names = [item["Key"] for item in s3.list_objects_v2(Bucket=lab.s3["bucket"], Prefix=prefix).get("Contents", [])]
    names += ["upload:" + item["Key"] for item in s3.list_multipart_uploads(Bucket=lab.s3["bucket"], Prefix=prefix).get("Uploads", [])]
    return sorted(names)


@pytest.mark.parametrize("source_name,kind", [("primary15", "sftp"), ("primary15", "s3"), ("primary18", "sftp"), ("primary18", "s3")])
def test_a_streamed_set_is_the_one_pg_basebackup_wrote_and_restores(ansible, lab, repo, source_name, kind):
    source = lab.host(source_name)
    replica = lab.host(source_name.replace("primary", "replica"))
    cluster = "stream%d%s-%s" % (source.major, kind, repo.suffix)
    marker = "bb_stream_%s" % repo.suffix
    source.psql("CREATE TABLE %s AS SELECT 42 AS answer" % marker)
    try:
        done = assert_ok(base(ansible, lab, source, repo.spec(kind), cluster, backup_id="s1"))
    finally:
        source.psql("DROP TABLE %s" % marker)
    manifest = assert_valid_manifest(done["manifest"])
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"base.tar", "pg_wal.tar", "backup_manifest"}
    assert done["streamed_files"] == ["base.tar"] and done["verified"] is True
    for name, entry in files.items():
        assert stored(lab, repo, kind, "%s/s1/%s" % (cluster, name)) == (entry["size"], entry["sha256"]), name
    assert staging_leftovers(lab) == []

    scratch = "%s/stream-%s" % (os.path.dirname(replica.pg_data), repo.suffix)
    task = dict(cluster=cluster, repository=repo.spec(kind), pg_data=scratch, pg_bin_dir=replica.pg_bin_dir, recovery_target="immediate",
                server_settings={"port": STREAM_PORT}, login_host=replica.address, login_port=STREAM_PORT, login_user="postgres",
                login_password=lab.pg_password)
    try:
        restored = assert_ok(ansible.module(replica.name, RESTORE, task, become_postgres=False))
        assert restored["backup_id"] == "s1"
        answer = replica.run([replica.pg_bin_dir + "/psql", "-X", "-At", "-h", "/run/postgresql", "-p", str(STREAM_PORT), "-U", "postgres",
                              "-c", "SELECT answer FROM %s" % marker], user="postgres").stdout.strip()
        assert answer == "42"
    finally:
        replica.run([replica.pg_bin_dir + "/pg_ctl", "-D", scratch, "-m", "immediate", "-w", "stop"], user="postgres", check=False)
        replica.run(["rm", "-rf", scratch])


def test_a_stream_to_s3_whose_pg_basebackup_is_killed_leaves_nothing_in_the_store(ansible, lab, repo):
    source = lab.host("primary18")
    cluster = "skill-" + repo.suffix
    repository = dict(repo.spec("s3"), part_size_mb=5)
    args = dict(conn_args(lab, source), cluster=cluster, repository=repository, backup_id="k", max_rate="1M")
    label = "pgdr.backup %s/k" % cluster
    holder = {}
    thread = threading.Thread(target=lambda: holder.update(result=ansible.module("backup1", BASE, args)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(name.startswith("upload:") for name in store_listing(lab, repo, "s3", cluster)):  # a part is on its way
        assert time.monotonic() < deadline and thread.is_alive(), "no multipart upload of base.tar began while pg_basebackup ran: %s" % holder
        time.sleep(0.2)
    for pid in basebackup_pids(label):
        os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert one_line(holder["result"]).startswith("pg_basebackup failed (killed by signal 9)")
    assert store_listing(lab, repo, "s3", cluster) == [] and staging_leftovers(lab) == []
    listed = ansible.module("backup1", BASE, dict(action="verify", cluster=cluster, backup_id="k", repository=repository))
    assert "backup set %s/k" % cluster in one_line(listed)


def test_an_sftp_store_that_runs_out_of_space_stops_pg_basebackup_and_leaves_no_set(ansible, lab, repo):
    source = lab.host("primary15")  # about 100 MB: at 4 MB/s the whole backup would take over 20 s
    cluster = "sfull-" + repo.suffix
    store = repo.path + "-sftp"
    repo.backup1.run(["install", "-d", "-m", "0700", store])
    repo.backup1.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", store])
    label = "pgdr.backup %s/full" % cluster
    try:
        started = time.monotonic()
        failed = base(ansible, lab, source, repo.spec("sftp"), cluster, backup_id="full", max_rate="4M")
        took = time.monotonic() - started
        msg = one_line(failed)
        listing = store_listing(lab, repo, "sftp", cluster)
    finally:
        repo.backup1.run(["umount", store])
    assert "%s/full/base.tar" % cluster in msg, msg
    assert took < 20, "the task ran %.1f s: pg_basebackup was not stopped when the store failed" % took
    assert listing == [] and basebackup_pids(label) == [] and staging_leftovers(lab) == []
