"""backup_catalog through ansible-playbook on backup1, against a local folder, SFTP (backup1) and S3 (the lab's store).

The sets are written from the controller with the same SetWriter the backups use (``make_set``: a month of sets with
past times), so the retention verdicts are known exactly; the module reads, pins, prunes and verifies them as a user's
playbook would. Every repository is this test's own (``/var/backups/pgdr-h6-*``, S3 prefix ``h6-*``), removed afterwards.
"""

import datetime
import os
import subprocess
import time
import uuid

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import walrange
from ansible_collections.pgdr.backup.plugins.module_utils.catalog.catalog import PIN_NAME
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set as bs
from tests.integration.test_storage import s3_repository, sftp_repository
from tests.unit.test_catalog import make_incomplete, make_set

pytestmark = pytest.mark.lab

CATALOG = "pgdr.backup.backup_catalog"
CLUSTER = "h6db"
DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)
GRACE_SECONDS = 75  # long enough that the "fresh" sets stay younger than it while the prune play runs on a loaded CI machine
KINDS = ("local", "sftp", "s3")


class Repos:
    """The three repositories of one test: ``spec(kind)`` as the module takes it, ``writer(kind)`` on the controller."""

    def __init__(self, lab):
        self.lab = lab
        self.backup1 = lab.host("backup1")
        self.suffix = uuid.uuid4().hex[:8]
        self.local_path = "/var/backups/pgdr-h6-%s" % self.suffix
        self.sftp_path = "/var/backups/pgdr-h6-%s-sftp" % self.suffix
        self.prefix = "h6-%s" % self.suffix
        self.writers = {
            # the local repository is written over SFTP as root, then handed to postgres (the module's user)
            "local": sftp_repository(lab, self.local_path),
            "sftp": sftp_repository(lab, self.sftp_path),
            "s3": s3_repository(lab, self.prefix),
        }

    def spec(self, kind):
        if kind == "local":
            return {"type": "local", "path": self.local_path}
        if kind == "sftp":
            return self.lab.sftp_repository(self.backup1, self.sftp_path)
        s3 = self.lab.s3
        return {"type": "s3", "endpoint_url": s3["endpoint"], "region": s3["region"], "bucket": s3["bucket"], "prefix": self.prefix,
                "access_key": s3["access_key"], "secret_key": s3["secret_key"]}

    def hand_local_to_postgres(self):
        self.backup1.run(["chown", "-R", "postgres:postgres", self.local_path])

    def cleanup(self):
        for repo in self.writers.values():
            repo.close()
        self.backup1.run(["rm", "-rf", self.local_path, self.sftp_path])
        with s3_repository(self.lab, "") as root:
            root.delete_tree(self.prefix)


@pytest.fixture
def repos(lab):
    made = Repos(lab)
    yield made
    made.cleanup()


def task(name, **args):
    check = args.pop("check_mode", False)
    diff = args.pop("diff", False)
    return {"name": name, CATALOG: dict(cluster=CLUSTER, **args), "ignore_errors": True, "check_mode": check, "diff": diff}


def ok(run, name, host="backup1"):
    result = run.result(name, host)
    assert result["_status"] == "ok", (name, result.get("msg"))
    return result


def one_line_failure(run, name):
    result = run.result(name, "backup1")
    assert result["_status"] == "failed", (name, result)
    assert result["msg"] and "\n" not in result["msg"].strip() and "Traceback" not in result["msg"], result["msg"]
    return result


def write_month(repo, now):
    """12 nightly dumps, 3 base sets, 1 logical-cluster set; times an hour inside each day so no verdict sits on a boundary."""
    dumps = {d: make_set(repo, CLUSTER, now - d * DAY + HOUR) for d in range(1, 13)}
    bases = {d: make_set(repo, CLUSTER, now - d * DAY + 2 * HOUR, kind="base") for d in (2, 6, 10)}
    cluster_dump = make_set(repo, CLUSTER, now - 11 * DAY + 3 * HOUR, kind="logical-cluster")
    return dumps, bases, cluster_dump


def test_list_pin_prune_verify_a_month_on_local_sftp_and_s3(ansible, lab, repos):
    started = time.monotonic()
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stale = {kind: make_incomplete(repos.writers[kind], CLUSTER, "stale-%s" % kind) for kind in KINDS}
    stale_written = time.monotonic()
    month = {kind: write_month(repos.writers[kind], now) for kind in KINDS}
    repos.hand_local_to_postgres()
    dumps = {kind: month[kind][0] for kind in KINDS}

    # list and pin: check mode changes nothing, a second identical pin changes nothing
    tasks = []
    for kind in KINDS:
        repo = repos.spec(kind)
        tasks += [
            task("list %s" % kind, repository=repo),
            task("newest before %s" % kind, repository=repo, kind=["logical-db"], newest_before="3d"),
            task("since %s" % kind, repository=repo, kind=["base"], since="7d"),
            task("pin check %s" % kind, repository=repo, action="pin", backup_id=dumps[kind][9], pin_expires="30d", check_mode=True),
            task("pin %s" % kind, repository=repo, action="pin", backup_id=dumps[kind][9], pin_expires="30d"),
            task("pin again %s" % kind, repository=repo, action="pin", backup_id=dumps[kind][9], pin_expires="30d"),
            task("pin missing %s" % kind, repository=repo, action="pin", backup_id="nope"),
            task("pin 8 %s" % kind, repository=repo, action="pin", backup_id=dumps[kind][8]),
            task("unpin 8 %s" % kind, repository=repo, action="unpin", backup_id=dumps[kind][8]),
        ]
    first = ansible.play("backup1", tasks)
    for kind in KINDS:
        listed = ok(first, "list %s" % kind)
        assert listed["changed"] is False
        sets = {entry["backup_id"]: entry for entry in listed["sets"]}
        assert len(sets) == 12 + 3 + 1 + 1
        assert sets["stale-%s" % kind]["status"] == "incomplete"
        dump = sets[dumps[kind][1]]
        assert (dump["kind"], dump["status"], dump["tool"]) == ("logical-db", "complete", "pg_dump 15.8")
        assert (dump["size"], dump["files"], dump["pinned"]) == (205, 1, False)
        base = sets[month[kind][1][2]]
        assert (base["kind"], base["start_lsn"], base["stop_lsn"], base["timeline"]) == ("base", "0/3000028", "0/3000100", 1)
        assert ok(first, "newest before %s" % kind)["selected"]["backup_id"] == dumps[kind][4]
        assert [entry["backup_id"] for entry in ok(first, "since %s" % kind)["sets"]] == [month[kind][1][6], month[kind][1][2]]
        assert ok(first, "pin check %s" % kind)["changed"] is True
        pinned = ok(first, "pin %s" % kind)
        assert pinned["changed"] is True and pinned["pin"]["requested"] == "30d"
        assert ok(first, "pin again %s" % kind)["changed"] is False
        assert "does not exist" in one_line_failure(first, "pin missing %s" % kind)["msg"]
        assert ok(first, "unpin 8 %s" % kind)["changed"] is True
        writer = repos.writers[kind]
        assert writer.exists(bs.set_key(CLUSTER, dumps[kind][9], PIN_NAME))
        assert not writer.exists(bs.set_key(CLUSTER, dumps[kind][8], PIN_NAME))

    # the stale incomplete sets are older than the grace now; fresh ones (a backup "in progress") are not
    time.sleep(max(0.0, GRACE_SECONDS + 5 - (time.monotonic() - stale_written)))
    fresh = {kind: make_incomplete(repos.writers[kind], CLUSTER, "fresh-%s" % kind) for kind in KINDS}
    repos.hand_local_to_postgres()
    # damage one kept set on S3: verify must name it there and pass on the others
    damaged = dumps["s3"][2]
    with repos.writers["s3"].open_writer(bs.set_key(CLUSTER, damaged, "db.dump")) as out:
        out.write(b"not the dump")

    rules = dict(keep_last=2, keep_within="5d", incomplete_grace="%ds" % GRACE_SECONDS)
    tasks = []
    for kind in KINDS:
        repo = repos.spec(kind)
        tasks += [
            task("prune check %s" % kind, repository=repo, action="prune", check_mode=True, diff=True, **rules),
            task("prune %s" % kind, repository=repo, action="prune", **rules),
            task("prune again %s" % kind, repository=repo, action="prune", **rules),
            task("verify %s" % kind, repository=repo, action="verify", max_age="2d"),
            task("verify stale %s" % kind, repository=repo, action="verify", kind=["logical-db"], max_age="12h"),
        ]
    second = ansible.play("backup1", tasks)
    for kind in KINDS:
        days, bases, cluster_dump = month[kind]
        # dumps: nights 1..5 in the window (keep_last 2 is within them), night 9 pinned; base: the two newest;
        # the one logical-cluster set; the fresh incomplete set
        survivors = {days[d] for d in (1, 2, 3, 4, 5, 9)} | {bases[2], bases[6], cluster_dump, fresh[kind]}
        doomed = [days[d] for d in (12, 11, 10)] + [bases[10]] + [days[d] for d in (8, 7, 6)]
        checked = ok(second, "prune check %s" % kind)
        assert checked["changed"] is True
        assert set(checked["deleted"]) == set(doomed) | {stale[kind]}
        assert checked["deleted"][:4] == doomed[:4]  # oldest first
        assert set(checked["kept"]) == survivors
        assert "%s incomplete" % stale[kind] in checked["diff"]["before"] and stale[kind] not in checked["diff"]["after"]
        pruned = ok(second, "prune %s" % kind)
        assert pruned["changed"] is True and pruned["deleted"] == checked["deleted"] and pruned["spared"] == []
        again = ok(second, "prune again %s" % kind)
        assert again["changed"] is False and again["deleted"] == []
        left = {item["backup_id"] for item in bs.list_sets(repos.writers[kind], CLUSTER)}
        assert left == survivors, kind
        stale_msg = one_line_failure(second, "verify stale %s" % kind)["msg"]
        if kind == "s3":
            failed = one_line_failure(second, "verify %s" % kind)
            assert failed["msg"].startswith("backup set %s/%s failed verification: 1 of 1 files missing or damaged (first: db.dump)" % (CLUSTER, damaged))
            bad = [item for item in failed["verified"] if not item["ok"]]
            assert [(item["backup_id"], item["damaged"]) for item in bad] == [(damaged, [{"path": "db.dump", "problem": "size differs"}])]
            assert "failed verification" in stale_msg
        else:
            verified = ok(second, "verify %s" % kind)
            assert verified["changed"] is False and len(verified["verified"]) == len(survivors) - 1 and all(v["ok"] for v in verified["verified"])
            assert verified["newest_good"] == days[1]
            assert "older than max_age 12h: backups are not running" in stale_msg
    print("catalog month on 3 backends: %.0f s" % (time.monotonic() - started))


def test_real_pg_logical_dump_sets_are_listed_verified_and_pruned(ansible, lab):
    """Sets written by pg_logical_dump itself (not by make_set): the catalog reads its manifests as restores do."""
    host = lab.host("primary15")
    suffix = uuid.uuid4().hex[:8]
    database, path = "h6_%s" % suffix, "/var/backups/pgdr-h6-%s" % suffix
    host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", path])
    host.psql("CREATE DATABASE %s" % database)
    try:
        host.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g", db=database)
        repo = {"type": "local", "path": path}
        dump = {"database": database, "cluster": CLUSTER, "repository": repo}
        tasks = [
            {"name": "dump a", "pgdr.backup.pg_logical_dump": dict(dump, backup_id="h6-a")},
            {"name": "dump b", "pgdr.backup.pg_logical_dump": dict(dump, backup_id="h6-b")},
            task("list", repository=repo),
            task("verify", repository=repo, action="verify", max_age="1h"),
            task("prune", repository=repo, action="prune", keep_last=1),
            task("list after", repository=repo),
        ]
        run = ansible.play("primary15", tasks)
        written = {name: run.result("dump " + name, "primary15") for name in ("a", "b")}
        assert all(result["_status"] == "ok" and result["changed"] for result in written.values()), run.output[-2000:]
        listed = ok(run, "list", "primary15")["sets"]
        assert [entry["backup_id"] for entry in listed] == ["h6-a", "h6-b"]
        for entry in listed:
            manifest = written[entry["backup_id"][-1]]["manifest"]
            assert (entry["kind"], entry["status"], entry["database"]) == ("logical-db", "complete", database)
            assert entry["tool"].startswith("pg_dump ") and entry["size"] == sum(item["size"] for item in manifest["files"]) > 0
            assert (entry["started_at"], entry["finished_at"]) == (manifest["started_at"], manifest["finished_at"])
        verified = ok(run, "verify", "primary15")
        assert [(item["backup_id"], item["ok"]) for item in verified["verified"]] == [("h6-a", True), ("h6-b", True)]
        assert verified["newest_good"] == "h6-b" and verified["newest_good_age_seconds"] < 3600
        pruned = ok(run, "prune", "primary15")
        assert pruned["deleted"] == ["h6-a"] and pruned["kept"] == ["h6-b"]
        assert [entry["backup_id"] for entry in ok(run, "list after", "primary15")["sets"]] == ["h6-b"]
        assert host.run(["ls", path + "/" + CLUSTER]).stdout.split() == ["h6-b"]
    finally:
        host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % database)
        host.run(["rm", "-rf", path])


# --- WAL coverage and WAL pruning, with a real base backup and a real WAL archive -------------------------------

WAL_CONFIG = "pgdr.backup.wal_archive_config"
BASEBACKUP = "pgdr.backup.pg_basebackup"
RESTORE = "pgdr.backup.restore_cluster"
H9_PORT = 5491  # h9's throwaway source, and later its restored copy (the source is stopped by then)


class WalSource:
    """A throwaway PostgreSQL 15 cluster on replica15 (its own folder and port; no lab server is restarted) archiving
    through pgdr-wal into a local archive, with a local repository beside it."""

    def __init__(self, lab):
        self.host = lab.host("replica15")
        self.suffix = uuid.uuid4().hex[:6]
        self.name = "h9-%s" % self.suffix
        self.data = "/var/lib/postgresql/h9-src-%s" % self.suffix
        self.scratch = "/var/lib/postgresql/h9-scratch-%s" % self.suffix
        self.top = "/var/backups/pgdr-h9-%s" % self.suffix
        self.repository = {"type": "local", "path": self.top + "/sets"}
        self.archive = {"type": "local", "path": self.top + "/wal"}
        self.cluster = "h9db"

    def pg(self, tool, *args):
        return self.host.run([self.host.pg_bin_dir + "/" + tool] + list(args), user="postgres")

    def sql(self, text):
        return self.pg("psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", "/run/postgresql", "-p", str(H9_PORT), "-U", "postgres",
                       "-d", "postgres", "-c", text).stdout.strip()

    def start(self):
        self.pg("initdb", "-D", self.data, "-U", "postgres", "--auth=trust")
        settings = "port = %d\nlisten_addresses = ''\nunix_socket_directories = '/run/postgresql'\nwal_level = replica\n" % H9_PORT
        self.host.run(["sh", "-c", 'printf "%s" "$1" >> "$2/postgresql.conf"', "sh", settings, self.data], user="postgres")
        self.pg("pg_ctl", "-D", self.data, "-l", self.data + ".log", "-w", "-t", "60", "start")

    def stop(self, folder):
        self.host.run([self.host.pg_bin_dir + "/pg_ctl", "-D", folder, "-m", "immediate", "-w", "stop"], user="postgres", check=False)

    def switch(self, row):
        """Write a row, switch to a new segment, wait until the old one is archived; its name."""
        self.sql("INSERT INTO t VALUES (%d)" % row)
        switched = self.sql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 60
        while self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < switched and time.monotonic() < deadline:
            time.sleep(0.3)
        assert self.sql("SELECT last_archived_wal FROM pg_stat_archiver") >= switched
        return switched

    def archived(self):
        return sorted(self.host.run(["ls", "-A", self.archive["path"]]).stdout.split())

    def cleanup(self):
        self.stop(self.scratch)
        self.stop(self.data)
        self.host.run(["rm", "-rf", self.data, self.data + ".log", self.scratch, self.scratch + ".pgdr-new", self.top,
                       "/etc/pgdr/wal/%s.json" % self.name, "/var/spool/pgdr/%s" % self.name,
                       "/etc/pgdr/wal/restore-%s.json" % self.cluster, "/var/spool/pgdr/restore-%s" % self.cluster])


@pytest.fixture
def wal_source(lab):
    made = WalSource(lab)
    yield made
    made.cleanup()


def module_ok(result):
    assert result["_status"] == "ok", (result.get("msg"), (result.get("server_log") or "")[-2000:])
    return result


def test_wal_range_prune_keeps_what_the_kept_base_set_needs_and_verify_names_a_gap(ansible, wal_source):
    src, host = wal_source, wal_source.host.name
    local = dict(login_host="/run/postgresql", login_port=H9_PORT, login_user="postgres")
    catalog_args = dict(cluster=src.cluster, repository=src.repository, archive=src.archive)
    src.start()
    module_ok(ansible.module(host, WAL_CONFIG, dict(local, archive_mode="on", archive=src.archive, archive_name=src.name, restart=True,
                                                    verify=True, pg_data=src.data, service_manager="pg_ctl"), become_postgres=False))
    src.sql("CREATE TABLE t (n int)")
    backup = dict(cluster=src.cluster, repository=src.repository, checkpoint="fast", format="tar", wal_method="none", **local)
    old = module_ok(ansible.module(host, BASEBACKUP, backup, become_postgres=False))["manifest"]
    for row in (1, 2, 3):  # segments the older set needs and the newer one does not
        src.switch(row)
    new = module_ok(ansible.module(host, BASEBACKUP, backup, become_postgres=False))["manifest"]
    src.sql("INSERT INTO t VALUES (4)")
    src.sql("SELECT pg_create_restore_point('h9_target')")
    middle = src.switch(5)
    newest = src.switch(6)
    first_needed = src.sql("SELECT pg_walfile_name('%s')" % new["start_lsn"])
    assert first_needed < middle < newest

    listed = module_ok(ansible.module(host, CATALOG, dict(cluster=src.cluster, repository=src.repository), become_postgres=False))
    wal = {entry["backup_id"]: entry["wal"] for entry in listed["sets"]}
    assert wal[new["backup_id"]]["first"] == first_needed and wal[new["backup_id"]]["timeline"] == 1
    assert wal[old["backup_id"]]["first"] == src.sql("SELECT pg_walfile_name('%s')" % old["start_lsn"])
    good = module_ok(ansible.module(host, CATALOG, dict(catalog_args, action="verify"), become_postgres=False))
    assert [item["wal"]["newest"] for item in good["verified"]] == [newest, newest]

    before = src.archived()
    below = [name for name in before if name[:24] < first_needed and not name.endswith(".history")]
    assert len(below) >= 4 and any(name.endswith(".backup") for name in below)  # the older set's segments and its label file
    prune = dict(catalog_args, action="prune", keep_last=1)
    checked = module_ok(ansible.module(host, CATALOG, prune, become_postgres=False, check=True, diff=True))
    assert checked["deleted"] == [old["backup_id"]] and src.archived() == before
    assert checked["wal_pruned"] == dict(boundary=first_needed, count=len(below), first=below[0], last=below[-1], reason=None)
    done = module_ok(ansible.module(host, CATALOG, prune, become_postgres=False))
    assert done["changed"] and done["deleted"] == [old["backup_id"]] and done["wal_pruned"] == checked["wal_pruned"]
    assert src.archived() == [name for name in before if name not in below]
    assert first_needed in src.archived() and any(name.startswith(first_needed) and name.endswith(".backup") for name in src.archived())

    # the kept set still restores to a point after it, replaying the archive that is left
    src.stop(src.data)
    restore = dict(cluster=src.cluster, repository=src.repository, pg_data=src.scratch, pg_bin_dir=src.host.pg_bin_dir, archive=src.archive,
                   recovery_target_name="h9_target", server_settings={"port": H9_PORT}, **local)
    restored = module_ok(ansible.module(host, RESTORE, restore, become_postgres=False))
    assert restored["state"] == "promoted" and restored["backup_id"] == new["backup_id"]
    assert src.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t") == "1,2,3,4"
    src.stop(src.scratch)

    src.host.run(["rm", "-f", "%s/%s" % (src.archive["path"], middle)])
    gap = ansible.module(host, CATALOG, dict(catalog_args, action="verify", kind=["base"]), become_postgres=False)
    assert gap["_status"] == "failed" and "\n" not in gap["msg"].strip(), gap.get("msg")
    assert "first gap: %s to %s, 1 segments" % (middle, middle) in gap["msg"], gap["msg"]
    assert gap["verified"][0]["wal"]["gaps"] == [dict(first=middle, last=middle, count=1)]


def test_wal_prune_and_gaps_on_local_sftp_and_s3(ansible, lab, repos):
    """WAL files written beside the sets on each backend: prune removes exactly those below the kept base set's first
    segment (on S3 more than one DeleteObjects batch of 1000), and verify names a segment deleted afterwards."""
    wal_root = {"local": repos.local_path + "-wal", "sftp": repos.sftp_path + "-wal", "s3": repos.prefix + "-wal"}
    wal_writers = {"local": sftp_repository(lab, wal_root["local"]), "sftp": sftp_repository(lab, wal_root["sftp"]),
                   "s3": s3_repository(lab, wal_root["s3"])}
    boundary = 1010  # the kept set starts in segment 1010 (0x3F2): LSN 3/F2000028
    seg = walrange.segment_name
    lowest = {"local": 1004, "sftp": 1004, "s3": 1}
    try:
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        archives, kept_set = {}, {}
        for kind in KINDS:
            make_set(repos.writers[kind], CLUSTER, now - 2 * DAY, kind="base", lsns=("0/1000028", "0/1000100"))
            kept_set[kind] = make_set(repos.writers[kind], CLUSTER, now - DAY, kind="base", lsns=("3/F2000028", "3/F3000100"))
            names = [seg(1, n) for n in range(lowest[kind], 1013)] + [seg(1, boundary) + ".00000028.backup", "00000002.history"]
            for name in names:
                wal_writers[kind].put_bytes_atomic(name, b"w")
            spec = dict(repos.spec(kind))
            if kind == "s3":
                spec["prefix"] = wal_root["s3"]
            else:
                spec["path"] = wal_root[kind]
            archives[kind] = (spec, sorted(names))
        repos.hand_local_to_postgres()
        lab.host("backup1").run(["chown", "-R", "postgres:postgres", wal_root["local"]])

        tasks = []
        for kind in KINDS:
            prune = dict(repository=repos.spec(kind), archive=archives[kind][0], action="prune", keep_last=1)
            tasks += [task("prune check %s" % kind, check_mode=True, diff=True, **prune), task("prune %s" % kind, **prune),
                      task("verify %s" % kind, repository=repos.spec(kind), archive=archives[kind][0], action="verify")]
        run = ansible.play("backup1", tasks)
        for kind in KINDS:
            below = [name for name in archives[kind][1] if name[:24] < seg(1, boundary) and not name.endswith(".history")]
            expected = dict(boundary=seg(1, boundary), count=len(below), first=below[0], last=below[-1], reason=None)
            assert ok(run, "prune check %s" % kind)["wal_pruned"] == expected
            assert ok(run, "prune %s" % kind)["wal_pruned"] == expected
            assert sorted(wal_writers[kind].list_files("")) == [name for name in archives[kind][1] if name not in below]
            assert ok(run, "verify %s" % kind)["verified"][0]["wal"]["ok"] is True
            wal_writers[kind].delete(seg(1, 1011))

        run = ansible.play("backup1", [task("gap %s" % kind, repository=repos.spec(kind), archive=archives[kind][0], action="verify")
                                       for kind in KINDS])
        for kind in KINDS:
            failed = one_line_failure(run, "gap %s" % kind)
            assert "first gap: %s to %s, 1 segments" % (seg(1, 1011), seg(1, 1011)) in failed["msg"], failed["msg"]
            assert failed["verified"][0]["backup_id"] == kept_set[kind]
    finally:
        for kind in ("local", "sftp"):
            wal_writers[kind].close()
        lab.host("backup1").run(["rm", "-rf", wal_root["local"], wal_root["sftp"]])
        wal_writers["s3"].close()
        with s3_repository(lab, "") as root:
            root.delete_tree(wal_root["s3"])


def test_the_catalog_playbook_prunes_in_check_mode_and_fails_verify_on_a_gap(lab, tmp_path):
    """playbooks/catalog.yml as a user (or AWX) runs it: flat variables, check mode changes nothing, a gap fails the job in one line."""
    from tests.integration.conftest import PLAYBOOK_BIN, PROJECT_DIR

    top = "/var/backups/pgdr-h9-pb-%s" % uuid.uuid4().hex[:6]
    sets, wal = sftp_repository(lab, top + "/sets"), sftp_repository(lab, top + "/wal")
    seg = walrange.segment_name
    try:
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        old = make_set(sets, CLUSTER, now - 2 * DAY, kind="base", lsns=("0/2000028", "0/2000100"))
        make_set(sets, CLUSTER, now - DAY, kind="base", lsns=("0/5000028", "0/5000100"))
        for number in range(1, 9):
            wal.put_bytes_atomic(seg(1, number), b"w")
        wal.delete(seg(1, 7))

        def play(*args):
            extra = ["-e", "target_hosts=backup1", "-e", "catalog_cluster=%s" % CLUSTER, "-e", "catalog_repository=local",
                     "-e", "catalog_path=%s/sets" % top, "-e", "catalog_archive_path=%s/wal" % top]
            env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
            argv = [PLAYBOOK_BIN, "-i", str(lab.inventory_path), os.path.join(PROJECT_DIR, "playbooks", "catalog.yml")] + extra + list(args)
            return subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300, check=False)

        checked = play("-e", "catalog_action=prune", "-e", "catalog_keep_last=1", "--check")
        assert checked.returncode == 0, checked.stdout[-2000:]
        assert '"boundary": "%s", "count": 4, "first": "%s", "last": "%s"' % (seg(1, 5), seg(1, 1), seg(1, 4)) in checked.stdout, checked.stdout[-2000:]
        assert sets.exists(bs.set_key(CLUSTER, old, bs.MANIFEST_NAME)) and len(wal.list_files("")) == 7
        gap = play("-e", "catalog_action=verify")
        assert gap.returncode != 0
        assert "first gap: %s to %s, 1 segments" % (seg(1, 7), seg(1, 7)) in gap.stdout + gap.stderr, (gap.stdout + gap.stderr)[-2000:]
    finally:
        sets.close()
        wal.close()
        lab.host("backup1").run(["rm", "-rf", top])
