"""pg_logical_dump and restore_cluster when things go wrong: real kills, a real object store outage,
hostile names, concurrent runs, wrong secrets and bad input, all through ansible-playbook on the lab hosts.

The slow cases (a database of ~160 MB that takes pg_dump several seconds) run on primary15 only;
the cheap ones on primary15 and primary18.
"""

import os
import signal
import threading
import time
import uuid

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import locks
from tests.integration.test_logical_backup import DUMP, RESTORE, Source, assert_ok, repositories
from tests.sql_text import ident, literal

BIG_ROWS = 1_200_000  # three md5s a row: ~160 MB on disk; pg_dump (gzip) needs several seconds for it on the lab
HOSTILE = 'Shop "x" ü; drop'


# ---------------------------------------------------------------- helpers


def one_line(result):
    """A failure's message: present, one line, no traceback."""
    assert result["_status"] == "failed", result
    msg = result.get("msg") or ""
    assert msg and "\n" not in msg.strip() and "Traceback" not in msg, msg
    assert "exception" not in result or "Traceback" not in str(result["exception"]), result["exception"]
    return msg


def dump_args(database, cluster, repository, **args):
    return dict(database=database, cluster=cluster, repository=repository, **args)


def restore_args(cluster, repository, **args):
    return dict(cluster=cluster, repository=repository, **args)


def db_exists(host, name):
    return host.psql("SELECT count(*) FROM pg_database WHERE datname = %s" % literal(name)).strip() == "1"


def host_path_exists(host, path):
    return host.run(["test", "-e", path], check=False).returncode == 0


class Background:
    """One ansible-playbook run in a thread, so the test can act on the host while the module runs."""

    def __init__(self, ansible, host, module, args, task="under test", **play_kwargs):
        self.host, self.task = host, task
        self.run = None
        self.error = None
        tasks = [{"name": task, module: args, "ignore_errors": True}]
        self.thread = threading.Thread(target=self._play, args=(ansible, host.name, tasks, play_kwargs), daemon=True)
        self.thread.start()

    def _play(self, ansible, host_name, tasks, play_kwargs):
        try:
            self.run = ansible.play(host_name, tasks, **play_kwargs)
        except Exception as exc:  # reported by result()
            self.error = exc

    def running(self):
        return self.thread.is_alive()

    def result(self, timeout=300):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "ansible-playbook still running after %ss" % timeout
        if self.error:
            raise self.error
        return self.run.result(self.task, self.host.name)


def tool_pids(host, tool, database):
    """pids of `tool` working on `database` in `host`.

    Lab hosts share the machine's pid namespace (they are network, mount and UTS namespaces), so a
    `pkill -x pg_dump` inside one would kill every pg_dump on the machine, other tests' too. This finds
    exactly ours: the tool's name, the host's network namespace, and PGDATABASE (how the module names
    the database to its children) in its environment.
    """
    netns = os.stat("/proc/%d/ns/net" % host.holder_pid).st_ino
    wanted = ("PGDATABASE=%s" % database).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as f:
                if f.read().strip() != tool:
                    continue
            if os.stat("/proc/%s/ns/net" % entry).st_ino != netns:
                continue
            with open("/proc/%s/environ" % entry, "rb") as f:
                if wanted not in f.read().split(b"\0"):
                    continue
        except OSError:  # gone meanwhile
            continue
        found.append(int(entry))
    return found


def wait_for(predicate, timeout, what, interval=0.1, while_running=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if while_running is not None and not while_running.running():
            pytest.fail("the run ended before %s: %s" % (what, while_running.result()))
        time.sleep(interval)
    pytest.fail("timed out after %ss waiting for %s" % (timeout, what))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def big(lab):
    """A database on primary15 big enough that pg_dump runs for several seconds."""
    made = Source(lab, lab.host("primary15"))
    try:
        # unlogged: quick to make, no WAL for the replica to replay; pg_dump and the fingerprints read it as any table
        made.sql("CREATE UNLOGGED TABLE public.big AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) || md5((g * 7)::text) AS pad "
                 "FROM generate_series(1, %d) g" % BIG_ROWS)
        yield made
    finally:
        made.cleanup()


def test_big_source_takes_pg_dump_seconds(big):
    """The kill and outage tests below mean something only if the dump takes long enough to be caught mid-run."""
    size = int(big.sql("SELECT pg_database_size(current_database())"))
    assert size > 150 * 1024 * 1024


# ---------------------------------------------------------------- 1. pg_dump killed mid-run


def test_pg_dump_killed_mid_run_fails_clearly_and_leaves_no_set(ansible, lab, big):
    host = big.host
    repository = repositories(lab, "local", big.suffix)
    cluster, backup_id = "killed-" + big.suffix, "20260301T000000Z"
    set_dir = "%s/%s/%s" % (repository["path"], cluster, backup_id)
    args = dump_args(big.name, cluster, repository, backup_id=backup_id)

    run = Background(ansible, host, DUMP, args)
    pids = wait_for(lambda: tool_pids(host, "pg_dump", big.name), 120, "pg_dump to start", while_running=run)

    def dump_file_written():
        return host.run(["sh", "-c", "ls %s/db_* 2>/dev/null" % set_dir], check=False).stdout.strip()

    # let it write for a while: the set has data in it when the kill comes
    wait_for(dump_file_written, 30, "the dump file to appear", while_running=run)
    time.sleep(1)
    assert run.running(), "the dump finished before it could be killed: make the big database bigger"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    failed = run.result()
    msg = one_line(failed)
    assert msg.startswith("pg_dump failed (killed by signal 9)"), msg

    assert not host_path_exists(host, set_dir + "/manifest.json")
    assert not host_path_exists(host, set_dir), host.run(["find", set_dir], check=False).stdout  # the partial set was removed

    target = "never_" + big.suffix
    run = ansible.play(host.name, [
        {"name": "latest", RESTORE: restore_args(cluster, repository, database=target), "ignore_errors": True},
        {"name": "named", RESTORE: restore_args(cluster, repository, database=target, backup_id=backup_id), "ignore_errors": True},
        {"name": "rerun", DUMP: args, "ignore_errors": True},
    ])
    assert "no complete backup set for cluster %s" % cluster in one_line(run.result("latest", host.name))
    assert "backup set %s/%s does not exist" % (cluster, backup_id) in one_line(run.result("named", host.name))
    assert not db_exists(host, target)

    rerun = assert_ok(run.result("rerun", host.name))
    assert rerun["changed"] is True and rerun["backup_id"] == backup_id
    rows = {(t["schema"], t["table"]): t["rows"] for t in rerun["tables"]}
    assert rows[("public", "big")] == BIG_ROWS
    assert host_path_exists(host, set_dir + "/manifest.json")


# ---------------------------------------------------------------- 2. object store down mid-upload


def s3_listing(lab, prefix):
    s3 = lab.s3_client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=lab.s3["bucket"], Prefix=prefix + "/"):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    uploads = s3.list_multipart_uploads(Bucket=lab.s3["bucket"], Prefix=prefix + "/").get("Uploads", [])
    return keys, [upload["Key"] for upload in uploads]


@pytest.mark.alone  # stops the object store every other test uses
def test_object_store_stopped_mid_upload_fails_clearly_and_leaves_nothing_complete(ansible, lab, big):
    host = big.host
    repository = dict(repositories(lab, "s3", big.suffix), part_size_mb=5)
    prefix = repository["prefix"]
    cluster, backup_id = "outage-" + big.suffix, "20260302T000000Z"
    set_prefix = "%s/%s/%s/" % (prefix, cluster, backup_id)
    args = dump_args(big.name, cluster, repository, backup_id=backup_id)

    run = Background(ansible, host, DUMP, args)
    wait_for(lambda: s3_listing(lab, prefix)[1], 120, "a multipart upload under %s" % prefix, interval=0.2, while_running=run)
    assert run.running()
    with lab.objstore_outage():
        failed = run.result(timeout=240)  # the module gives up while the store is still down
        assert not tool_pids(host, "pg_dump", big.name)  # pg_dump did not outlive the failure
    msg = one_line(failed)
    assert msg.startswith("cannot reach s3://%s/%s" % (lab.s3["bucket"], prefix)) and "while uploading" in msg, msg
    assert lab.s3["secret_key"] not in str(failed)

    keys, uploads = s3_listing(lab, prefix)
    assert not [k for k in keys if k.endswith("manifest.json")], keys
    assert not [k for k in keys if k.startswith(set_prefix) and not k.endswith("/")], keys  # no data object looks complete
    # the writer could not abort its multipart upload with the store down: an unfinished upload (never an object)
    # may remain, of a data file only; the message says so, and the rerun below must remove it
    assert uploads and all(k.startswith(set_prefix) and not k.endswith("manifest.json") for k in uploads), uploads
    assert msg.endswith("a rerun with backup_id %s removes them" % backup_id), msg

    run = ansible.play(host.name, [
        {"name": "latest", RESTORE: restore_args(cluster, repository, database="never_" + big.suffix), "ignore_errors": True},
        {"name": "rerun", DUMP: args, "ignore_errors": True},
    ])
    assert "no complete backup set for cluster %s" % cluster in one_line(run.result("latest", host.name))
    rerun = assert_ok(run.result("rerun", host.name))
    assert rerun["changed"] is True and rerun["backup_id"] == backup_id
    keys, uploads = s3_listing(lab, prefix)
    assert set_prefix + "manifest.json" in keys and not uploads
    assert sorted(k[len(set_prefix):] for k in keys if k.startswith(set_prefix) and not k.endswith("/")) == sorted(
        [f["path"] for f in rerun["manifest"]["files"]] + ["manifest.json"])


# ---------------------------------------------------------------- 3. hostile database name


@pytest.fixture(params=["primary15", "primary18"])
def hostile(request, lab):
    suffix = uuid.uuid4().hex[:6]
    made = Source(lab, lab.host(request.param), name="%s_%s" % (HOSTILE, suffix))
    yield made
    made.cleanup()


def test_hostile_database_name_dumps_and_restores_in_custom_and_plain(ansible, lab, hostile):
    host = hostile.host
    repository = repositories(lab, "local", hostile.suffix)
    tasks, targets = [], {}
    for number, fmt in enumerate(["custom", "plain"]):
        backup_id = "2026010%dT000000Z" % (number + 1)
        targets[fmt] = 'Rëst "%s" ü; drop_%s' % (fmt, hostile.suffix)
        hostile.forget(host, targets[fmt])
        tasks.append({"name": "dump " + fmt, DUMP: dump_args(hostile.name, hostile.cluster, repository, format=fmt, backup_id=backup_id),
                      "ignore_errors": True})
        tasks.append({"name": "restore " + fmt, RESTORE: restore_args(hostile.cluster, repository, backup_id=backup_id,
                                                                      database=targets[fmt]), "ignore_errors": True})
    run = ansible.play(host.name, tasks)
    for fmt, target in targets.items():
        dumped = assert_ok(run.result("dump " + fmt, host.name))
        assert dumped["databases"] == [hostile.name] and dumped["manifest"]["source"]["database"] == hostile.name
        restored = assert_ok(run.result("restore " + fmt, host.name))
        (outcome,) = restored["databases"]
        assert outcome["target"] == target and outcome["verification"]["verified"] is True
        assert outcome["verification"]["tables"] == len(dumped["tables"]) > 0
        assert hostile.sql("SELECT count(*) FROM %s" % ident("Mixed Case ü", 'we"ird table'), db=target) == "3"
        assert hostile.sql("SELECT count(*) FROM public.events", db=target) == "366"


# ---------------------------------------------------------------- 4. one run at a time


def test_second_run_for_the_same_source_and_repository_is_skipped_or_fails(ansible, lab, big):
    host = big.host
    repository = repositories(lab, "local", big.suffix)
    cluster = "locked-" + big.suffix
    args = dump_args(big.name, cluster, repository)

    first = Background(ansible, host, DUMP, dict(args, backup_id="20260303T000000Z"))
    pids = wait_for(lambda: tool_pids(host, "pg_dump", big.name), 120, "the first run's pg_dump", while_running=first)
    # the first run holds the lock while its pg_dump runs; pausing pg_dump keeps it holding it however slow the second is
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        second = ansible.play(host.name, [
            {"name": "skip", DUMP: dict(args, backup_id="20260303T000001Z", if_running="skip"), "ignore_errors": True},
            {"name": "fail", DUMP: dict(args, backup_id="20260303T000002Z", if_running="fail"), "ignore_errors": True},
        ])
        assert first.running()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    holder = "local:" + repository["path"]
    skipped = assert_ok(second.result("skip", host.name))
    assert skipped["changed"] is False and "manifest" not in skipped
    assert skipped["skipped_reason"].startswith("another backup of %s into %s is running" % (cluster, holder))
    refused = one_line(second.result("fail", host.name))
    assert refused.startswith("another backup of %s into %s is running" % (cluster, holder))
    assert refused.endswith("wait for it, or set if_running: skip")

    done = assert_ok(first.result())
    assert done["changed"] is True and done["backup_id"] == "20260303T000000Z"
    assert host.run(["ls", "%s/%s" % (repository["path"], cluster)]).stdout.split() == ["20260303T000000Z"]


def test_runs_as_root_then_as_postgres_share_the_lock_and_leave_no_lock_file(ansible, lab):
    """The lock is one file per source and repository in /run/lock: a run as root must not leave one (0600, root's)
    that a later run as postgres cannot open; each run removes its own."""
    source = Source(lab, lab.host("primary15"))
    try:
        host = source.host
        repository = repositories(lab, "s3", source.suffix)  # no local folder that root's run would own
        # the same connection both times (root has no peer login as postgres), so the same source
        args = dump_args(source.name, source.cluster, repository, login_host="127.0.0.1", login_user="postgres", login_password=lab.pg_password)
        # the module's lock key: the connection as describe() gives it, the cluster, the repository's describe()
        bucket, endpoint = repository["bucket"], repository["endpoint_url"]
        path = locks.lock_path("postgres@127.0.0.1:5432/postgres:%s" % source.cluster, "s3://%s/test-%s (endpoint %s)" % (bucket, source.suffix, endpoint))
        as_root = assert_ok(ansible.module(host.name, DUMP, dict(args, backup_id="20260404T000000Z"), become_postgres=False))
        assert as_root["changed"] is True
        assert not host_path_exists(host, path), "the run as root left its lock file %s" % path
        as_postgres = assert_ok(ansible.module(host.name, DUMP, dict(args, backup_id="20260404T000001Z")))
        assert as_postgres["changed"] is True and as_postgres["backup_id"] == "20260404T000001Z"
        assert not host_path_exists(host, path), "the run as postgres left its lock file %s" % path
    finally:
        source.cleanup()


# ---------------------------------------------------------------- 5. wrong passphrase


@pytest.fixture(params=["primary15", "primary18"])
def small(request, lab):
    made = Source(lab, lab.host(request.param))
    yield made
    made.cleanup()


def test_restore_with_a_wrong_passphrase_fails_clearly_and_creates_nothing(ansible, lab, small):
    host = small.host
    repository = repositories(lab, "local", small.suffix)
    right, wrong = "Right-" + uuid.uuid4().hex, "Wrong-" + uuid.uuid4().hex
    target = "wrongpass_" + small.suffix
    small.forget(host, target)
    # the passphrases come from variables, as from a vault: at -vvv Ansible quotes the playbook's own lines
    # around a failed task, and a secret written into the playbook would show there whatever the module does
    run = ansible.play(host.name, [
        {"name": "dump", DUMP: dump_args(small.name, small.cluster, repository, encryption={"method": "gpg", "passphrase": "{{ right }}"}),
         "ignore_errors": True},
        {"name": "wrong passphrase", RESTORE: restore_args(small.cluster, repository, database=target,
                                                           encryption={"passphrase": "{{ wrong }}"}), "ignore_errors": True},
        {"name": "no passphrase", RESTORE: restore_args(small.cluster, repository, database=target), "ignore_errors": True},
    ], verbosity=3, extra_vars={"right": right, "wrong": wrong})
    dumped = assert_ok(run.result("dump", host.name))
    assert dumped["manifest"]["encryption"]["method"].startswith("gpg")
    msg = one_line(run.result("wrong passphrase", host.name))
    assert msg.startswith("gpg failed (exit code 2): gpg: decryption failed") and "check encryption.passphrase" in msg, msg
    assert "is encrypted; give encryption.passphrase" in one_line(run.result("no passphrase", host.name))
    assert not db_exists(host, target)
    assert wrong not in run.output and right not in run.output


# ---------------------------------------------------------------- 6. bad input: one clear line


BAD_DUMPS = [
    ("jobs with custom", dict(format="custom", jobs=2), "jobs works only with format directory"),
    ("data_only and schema_only", dict(data_only=True, schema_only=True), "data_only and schema_only exclude each other"),
    ("backup_id with a slash", dict(backup_id="2026/01"), "backup_id '2026/01' cannot be used: it contains a slash"),
    ("compression level out of range", dict(compression={"method": "gzip", "level": 42}),
     "compression.level 42 is out of range for gzip (1 to 9)"),
    ("extra_args with --file", dict(extra_args=["--file=/tmp/elsewhere.dump"]), "extra_args may not contain --file"),
    ("extra_args with -f", dict(extra_args=["-f", "/tmp/elsewhere.dump"]), "extra_args may not contain -f"),
    ("s3 without bucket", dict(repository={"type": "s3", "endpoint_url": "http://127.0.0.1:9", "access_key": "AKIDEXAMPLE",
                                           "secret_key": "wJalrXUtnFEMI/K7MDENG"}),
     "repository.bucket is required for type s3"),
]


def test_bad_input_fails_with_one_clear_line(ansible, lab, small):
    host = small.host
    repository = repositories(lab, "local", small.suffix)
    tasks = []
    for name, args, _expected in BAD_DUMPS:
        task_args = dict(dump_args(small.name, small.cluster, repository), **args)
        tasks.append({"name": name, DUMP: task_args, "ignore_errors": True})
    tasks.append({"name": "restore of an unknown cluster", RESTORE: restore_args("nosuch-" + small.suffix, repository),
                  "ignore_errors": True})
    tasks.append({"name": "restore of an unknown backup_id", RESTORE: restore_args(small.cluster, repository, backup_id="20990101T000000Z"),
                  "ignore_errors": True})
    run = ansible.play(host.name, tasks)
    assert "Traceback" not in run.output
    for name, _args, expected in BAD_DUMPS:
        msg = one_line(run.result(name, host.name))
        assert expected in msg, (name, msg)
    unknown_cluster = one_line(run.result("restore of an unknown cluster", host.name))
    assert unknown_cluster.startswith("no complete backup set for cluster nosuch-%s in local:%s" % (small.suffix, repository["path"]))
    unknown_id = one_line(run.result("restore of an unknown backup_id", host.name))
    assert unknown_id.startswith("backup set %s/20990101T000000Z does not exist in local:%s" % (small.cluster, repository["path"]))
    assert host.run(["find", repository["path"], "-mindepth", "1"]).stdout == ""  # nothing was written
    assert host.run(["test", "-e", "/tmp/elsewhere.dump"], check=False).returncode != 0
