"""Physical restore rules fixed after review: the server watched must be the restored one, the swap undoes itself,
shutdown at the target is judged by pg_controldata, incremental chains with tablespaces are refused."""

import datetime

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.physical import restore as pr

PG_DATA = "/var/lib/postgresql/15/main"


# --- the server recovery is watched on must be the restored cluster -----------------------


def test_a_server_that_never_ran_recovery_is_not_the_restored_one():
    # login_port left at the production server's while the restored copy runs on another port
    problem = pr.wrong_server_problem({"reached_lsn": None, "data_directory": None}, PG_DATA)
    assert "pg_last_wal_replay_lsn() is NULL" in problem and "point login_host and login_port at the restored server" in problem


def test_a_server_running_from_another_data_directory_is_not_the_restored_one():
    problem = pr.wrong_server_problem({"reached_lsn": "0/5000100", "data_directory": "/srv/prod/data"}, PG_DATA)
    assert "runs from /srv/prod/data, not from the restored cluster in %s" % PG_DATA in problem


def test_the_restored_server_passes_also_through_a_symlink_or_without_privilege():
    assert pr.wrong_server_problem({"reached_lsn": "0/5000100", "data_directory": PG_DATA}, PG_DATA) is None
    assert pr.wrong_server_problem({"reached_lsn": "0/5000100", "data_directory": None}, PG_DATA) is None  # no row: not readable
    links = {"/data/pg": PG_DATA}
    assert pr.wrong_server_problem({"reached_lsn": "0/5000100", "data_directory": "/data/pg"}, PG_DATA, realpath=lambda p: links.get(p, p)) is None


class FakeCursor:
    def __init__(self, answers):
        self.answers, self.last = answers, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql):
        self.last = next(value for key, value in self.answers.items() if key in sql)

    def fetchone(self):
        return self.last


class FakeConnection:
    def __init__(self, answers):
        self.answers = answers

    def cursor(self):
        return FakeCursor(self.answers)

    def close(self):
        pass


def test_wait_for_recovery_reports_the_data_directory_or_none_without_a_row():
    answers = {
        "pg_is_in_recovery()": (False, None, None, "7", 1),  # a production primary: never in recovery
        "pg_control_checkpoint": (1,),
        "data_directory": ("/srv/prod/data",),
    }
    reached = pr.wait_for_recovery(lambda: FakeConnection(answers), ("latest", None), "promote", False, 5)
    assert reached["data_directory"] == "/srv/prod/data" and reached["reached_lsn"] is None
    assert pr.wrong_server_problem(reached, PG_DATA)
    answers["data_directory"] = None
    assert pr.wait_for_recovery(lambda: FakeConnection(answers), ("latest", None), "promote", False, 5)["data_directory"] is None


def test_wait_for_recovery_result_is_an_aware_time():
    moment = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc)
    answers = {"pg_is_in_recovery()": (False, "0/5000100", moment, "7", 2), "pg_control_checkpoint": (2,), "data_directory": (PG_DATA,)}
    reached = pr.wait_for_recovery(lambda: FakeConnection(answers), ("latest", None), "promote", False, 5)
    assert pr.wrong_server_problem(reached, PG_DATA) is None
    assert reached["reached_time"].startswith("2026-11-22T10:00:00")


class FakeCluster:
    """The server of pg_service.Cluster as Restore uses it; records what was done."""

    manager = "pg_ctl"

    def __init__(self, pg_data, running=True, fail_stop=False, fail_start=False):
        self.pg_data, self.running = pg_data, running
        self.fail_stop, self.fail_start = fail_stop, fail_start
        self.bin_dir = "/usr/lib/postgresql/15/bin"
        self.server_log = pg_data + ".log"
        self.calls = []

    def status(self):
        return "running" if self.running else "stopped"

    def start(self, timeout=60):
        self.calls.append("start")
        if self.fail_start:
            raise PgdrError("start of the PostgreSQL server failed")
        self.running = True

    def stop(self, mode="fast", timeout=60):
        self.calls.append("stop")
        if self.fail_stop:
            raise PgdrError("stop of the PostgreSQL server failed: timed out; stop it by hand and run again")
        self.running = False
        return True


def restore_for(tmp_path, cluster, **p):
    manifest = {"backup_id": "b1", "stop_lsn": "0/5000100", "finished_at": "2026-11-22T10:00:00Z", "source": {"system_identifier": "7"},
                "physical": {"stop_time": "2026-11-22T10:00:00Z", "format": "tar"}}
    params = dict(cluster="c1", force=True, start_timeout=5, recovery_timeout=5)
    params.update(p)
    return pr.Restore(params, None, manifest, cluster, {}, lambda: None)


def test_a_restore_watched_on_a_server_that_never_recovered_fails(tmp_path, monkeypatch):
    pg_data = str(tmp_path / "main")
    cluster = FakeCluster(pg_data, running=False)
    restore = restore_for(tmp_path, cluster)
    monkeypatch.setattr(pr, "wait_for_recovery", lambda *a, **k: dict(
        in_recovery=False, paused=False, reached_lsn=None, reached_time=None, system_identifier="7", data_directory=None))
    with pytest.raises(PgdrError, match="never ran recovery"):
        restore._start_and_wait()


# --- the swap undoes itself ------------------------------------------------------------


def folders(tmp_path):
    pg_data, new = tmp_path / "main", tmp_path / "main.pgdr-new"
    for folder, mark in ((pg_data, "old"), (new, "new")):
        folder.mkdir()
        (folder / "PG_VERSION").write_text(mark)
    return str(pg_data)


def test_a_stop_that_times_out_leaves_the_live_data_and_removes_the_new(tmp_path):
    pg_data = folders(tmp_path)
    cluster = FakeCluster(pg_data, running=True, fail_stop=True)
    restore = restore_for(tmp_path, cluster)
    restore.was_running = True
    with pytest.raises(PgdrError) as caught:
        restore._swap_in()
    assert caught.value.msg.startswith("swapping the restored data directory into %s failed: stop of the PostgreSQL server failed" % pg_data)
    assert caught.value.msg.endswith("the data directory in place was not moved") and "\n" not in caught.value.msg
    assert (tmp_path / "main" / "PG_VERSION").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main"]
    assert restore.previous_dir is None


def test_a_rename_that_fails_after_the_stop_puts_the_previous_back_and_starts_it(tmp_path, monkeypatch):
    pg_data = folders(tmp_path)
    cluster = FakeCluster(pg_data, running=True)
    restore = restore_for(tmp_path, cluster)
    restore.was_running = True
    real_rename, renames = pr.os.rename, []

    def rename(src, dst):
        renames.append((src, dst))
        if src.endswith(".pgdr-new"):
            raise OSError(18, "Invalid cross-device link", src)
        real_rename(src, dst)

    monkeypatch.setattr(pr.os, "rename", rename)
    with pytest.raises(PgdrError) as caught:
        restore._swap_in()
    assert "Invalid cross-device link" in caught.value.msg
    assert caught.value.msg.endswith("the previous data directory was put back and started again")
    assert cluster.calls == ["stop", "start"] and cluster.running
    assert (tmp_path / "main" / "PG_VERSION").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main"]
    assert len(renames) == 3  # away, the failed one, back


def test_a_failed_swap_in_run_is_one_clear_error(tmp_path, monkeypatch):
    pg_data = folders(tmp_path)
    cluster = FakeCluster(pg_data, running=True, fail_stop=True)
    restore = restore_for(tmp_path, cluster)
    monkeypatch.setattr(restore, "plan", lambda: ([], {"signal": "recovery"}))
    monkeypatch.setattr(restore, "prepare", lambda chain, planned, timings: (tmp_path / "main.pgdr-new").mkdir(exist_ok=True))
    restore.was_running = True
    with pytest.raises(PgdrError, match="swapping the restored data directory"):
        restore.run()
    assert cluster.running and sorted(p.name for p in tmp_path.iterdir()) == ["main"]


# --- recovery_target_action shutdown is judged by the control file ----------------------

CONTROLDATA = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7310000000000000007
Database cluster state:               %s
pg_control last modified:             Wed 02 Dec 2026 12:00:00 PM UTC
"""


def test_cluster_state_from_pg_controldata():
    assert pr.cluster_state(CONTROLDATA % "shut down in recovery") == pr.SHUT_DOWN_IN_RECOVERY
    assert pr.cluster_state(CONTROLDATA % "in archive recovery") == "in archive recovery"
    assert pr.cluster_state("") is None


class Ran:
    def __init__(self, stdout):
        self.stdout = stdout


def shutdown_restore(tmp_path, monkeypatch, state, log_text):
    pg_data = str(tmp_path / "main")
    cluster = FakeCluster(pg_data, running=False)
    (tmp_path / "main.log").write_text(log_text)  # where pg_ctl's log would be; under systemd it stays empty
    restore = restore_for(tmp_path, cluster, recovery_target_action="shutdown", recovery_target_name="before_upgrade")
    seen = []
    monkeypatch.setattr(pr, "run", lambda argv, **kw: seen.append((argv, kw.get("env", {}).get("LC_ALL"))) or Ran(CONTROLDATA % state))
    return restore, seen


def test_shutdown_at_target_is_recognised_without_the_log_line(tmp_path, monkeypatch):
    restore, seen = shutdown_restore(tmp_path, monkeypatch, "shut down in recovery", "")
    reached = restore._wait_for_shutdown(0)
    assert reached["state"] == "shut down at target"
    assert seen == [(["/usr/lib/postgresql/15/bin/pg_controldata", "-D", restore.pg_data], "C")]


def test_a_stop_before_the_target_fails_with_the_log_line_as_the_reason(tmp_path, monkeypatch):
    log = "LOG:  recovery stopping before commit\nFATAL:  recovery ended before configured recovery target was reached\n"
    restore, _seen = shutdown_restore(tmp_path, monkeypatch, "in archive recovery", log)
    with pytest.raises(PgdrError) as caught:
        restore._wait_for_shutdown(0)
    assert "stopped before reaching its target (pg_controldata: cluster state in archive recovery)" in caught.value.msg
    assert caught.value.msg.endswith("FATAL:  recovery ended before configured recovery target was reached")


# --- incremental chains with tablespaces are refused before anything changes ---------------


def chain_of(*tablespaces):
    return [{"backup_id": "b%d" % i, "physical": {"tablespaces": ts, "format": "tar"}} for i, ts in enumerate(tablespaces)]


def test_an_incremental_chain_with_tablespaces_is_refused():
    pr.check_chain_supported(chain_of([]))
    pr.check_chain_supported(chain_of([{"oid": "16400", "location": "/srv/ts"}]))  # a full backup maps its tablespaces
    pr.check_chain_supported(chain_of([], None))
    with pytest.raises(PgdrError, match="incremental chains with tablespaces are not supported yet .set b1 holds tablespaces.; restore the full backup b0"):
        pr.check_chain_supported(chain_of([], [{"oid": "16400", "location": "/srv/ts"}]))


def test_deploy_refuses_the_chain_before_touching_anything(tmp_path):
    new_dir = str(tmp_path / "main.pgdr-new")
    chain = chain_of([{"oid": "16400", "location": "/srv/ts"}], [{"oid": "16400", "location": "/srv/ts"}])
    with pytest.raises(PgdrError, match="not supported yet"):
        pr.deploy(None, "c1", chain, new_dir, {}, "postgres", None)
    assert list(tmp_path.iterdir()) == []


def test_plan_refuses_the_chain(tmp_path, monkeypatch):
    chain = chain_of([{"oid": "16400", "location": "/srv/ts"}], [{"oid": "16400", "location": "/srv/ts"}])
    restore = restore_for(tmp_path, FakeCluster(str(tmp_path / "main"), running=False))
    monkeypatch.setattr(pr, "load_chain", lambda repo, name, manifest: chain)
    with pytest.raises(PgdrError, match="not supported yet"):
        restore.plan()


def test_a_failed_restore_into_a_new_folder_says_the_copy_was_removed(tmp_path, monkeypatch):
    pg_data = str(tmp_path / "scratch")  # nothing there before: no previous data directory to put back
    restore = restore_for(tmp_path, FakeCluster(pg_data, running=False))
    monkeypatch.setattr(restore, "plan", lambda: ([], {"signal": "recovery"}))
    monkeypatch.setattr(restore, "prepare", lambda chain, planned, timings: (tmp_path / "scratch.pgdr-new").mkdir())

    def wrong_server():
        raise PgdrError("the server login_host/login_port reach runs from /srv/prod/data, not from the restored cluster")

    monkeypatch.setattr(restore, "_start_and_wait", wrong_server)
    with pytest.raises(PgdrError) as caught:
        restore.run()
    assert caught.value.msg.endswith("not from the restored cluster; the restored copy was removed")
    assert list(tmp_path.iterdir()) == []
