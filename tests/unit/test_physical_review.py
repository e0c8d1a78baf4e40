"""Physical restore rules fixed after review: the server watched must be the restored one, the swap undoes itself,
shutdown at the target is judged by pg_controldata, incremental chains with tablespaces are refused; what pg_data holds
is replaced only with force and kept aside until verified, missing folders above it are made for the cluster's user."""

import contextlib
import datetime
import os
import pwd
import stat

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.physical import restore as pr

PG_DATA = "/var/lib/postgresql/15/main"


def restore_options(cls=pr.BaseSetRestoreOptions, **given):
    """Options as restore_cluster builds them: its argument spec's defaults, then ``given``."""
    from ansible_collections.pgdr.backup.plugins.modules import restore_cluster

    params = {name: option.get("default") for name, option in restore_cluster.argument_spec().items()}
    params.update(given)
    return typed(cls, params)


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
    os_user = "postgres"

    def __init__(self, pg_data, running=True, fail_stop=False, fail_start=False, closed=()):
        self.pg_data, self.running = pg_data, running
        self.fail_stop, self.fail_start = fail_stop, fail_start
        self.bin_dir = "/usr/lib/postgresql/15/bin"
        self.server_log = pg_data + ".log"
        self.closed = set(closed)  # paths the cluster's OS user may neither write nor enter
        self.calls = []

    def owner_can_write(self, path):
        return path not in self.closed

    def owner_can_reach(self, folder):
        return folder not in self.closed

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


def restore_for(tmp_path, server, **given):
    manifest = {"backup_id": "b1", "stop_lsn": "0/5000100", "finished_at": "2026-11-22T10:00:00Z", "source": {"system_identifier": "7"},
                "physical": {"stop_time": "2026-11-22T10:00:00Z", "format": "tar"}}
    options = dict(cluster="c1", force=True, start_timeout=5, recovery_timeout=5)
    options.update(given)
    return pr.BaseSetRestore(restore_options(**options), server, manifest, lambda: None, None, {})


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
    monkeypatch.setattr(restore, "plan", lambda: pr.RestorePlan([], {"signal": "recovery", "create_folders": []}))
    monkeypatch.setattr(restore, "prepare", lambda plan, timings: (tmp_path / "main.pgdr-new").mkdir(exist_ok=True))
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
    monkeypatch.setattr(pr, "load_chain", lambda repo, cluster_name, manifest: chain)
    with pytest.raises(PgdrError, match="not supported yet"):
        restore.plan()


def test_a_failed_restore_into_a_new_folder_says_the_copy_was_removed(tmp_path, monkeypatch):
    pg_data = str(tmp_path / "scratch")  # nothing there before: no previous data directory to put back
    restore = restore_for(tmp_path, FakeCluster(pg_data, running=False))
    monkeypatch.setattr(restore, "plan", lambda: pr.RestorePlan([], {"signal": "recovery", "create_folders": []}))
    monkeypatch.setattr(restore, "prepare", lambda plan, timings: (tmp_path / "scratch.pgdr-new").mkdir())

    def wrong_server():
        raise PgdrError("the server login_host/login_port reach runs from /srv/prod/data, not from the restored cluster")

    monkeypatch.setattr(restore, "_start_and_wait", wrong_server)
    with pytest.raises(PgdrError) as caught:
        restore.run()
    assert caught.value.msg.endswith("not from the restored cluster; the restored copy was removed")
    assert list(tmp_path.iterdir()) == []


# --- the base-set restore as restore_cluster starts it: nothing changes before the restore's own refusals ---------

MANIFEST = {"backup_id": "b1", "kind": "base", "stop_lsn": "0/5000100", "finished_at": "2026-11-22T10:00:00Z",
            "source": {"major": 15, "system_identifier": "7"}, "physical": {"stop_time": "2026-11-22T10:00:00Z", "format": "tar"}}


class FakeArchive:
    def newest_segment(self):
        return ("000000010000000000000009", None)

    def check_decryption(self, passphrase, walfile):  # a clear archive: nothing to decrypt
        return False


class FakeConnParams:
    def connect(self, autocommit=False):
        return ("connection", autocommit)


def base_set_restore(tmp_path, monkeypatch, **given):
    """BaseSetRestore.from_options over fakes: (the restore, what was asked of the WAL installer, the servers built)."""
    installed, servers = [], []

    def restore_command(archive, name, os_user, check_mode=False):
        installed.append((name, check_mode))
        return "pgdr-wal fetch %f %p"

    def server(cls, service, bin_dir, **kw):
        servers.append(dict(kw, bin_dir=bin_dir, os_user=service.os_user))
        return FakeCluster(service.pg_data)

    monkeypatch.setattr(pr, "server_bin_dir", lambda manifest, pg_bin_dir, pg_data: "/usr/lib/postgresql/15/bin")
    monkeypatch.setattr(pr.Cluster, "from_options", classmethod(server))
    monkeypatch.setattr(pr.wal_installer, "restore_command", restore_command)
    monkeypatch.setattr(pr.wal_archive, "open_archive", lambda archive: contextlib.nullcontext(FakeArchive()))
    monkeypatch.setattr(pr, "load_chain", lambda repo, cluster_name, manifest: [manifest])
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "PG_VERSION").write_text("15\n")  # the cluster FakeCluster runs
    options = dict(cluster="db1", backup_id="b1", pg_data=str(tmp_path / "main"), login_port=5432, login_host=None,
                   archive={"type": "local", "path": "/var/backups/wal"})
    options.update(given)
    return pr.BaseSetRestore.from_options(restore_options(**options), FakeConnParams(), "the repository", MANIFEST), installed, servers


def test_a_refused_restore_installs_nothing_and_keeps_the_spool(tmp_path, monkeypatch):
    restore, installed, _servers = base_set_restore(tmp_path, monkeypatch)  # the server runs and force is false
    with pytest.raises(PgdrError, match="is running; set force: true"):
        restore.run()
    assert [name for name, check_mode in installed if not check_mode] == []


def test_check_mode_installs_nothing(tmp_path, monkeypatch):
    restore, installed, _servers = base_set_restore(tmp_path, monkeypatch, force=True)
    assert restore.run(check_mode=True)["plan"]["was_running"] is True
    assert [name for name, check_mode in installed if not check_mode] == []


def test_an_accepted_restore_installs_the_helper_before_deploying(tmp_path, monkeypatch):
    restore, installed, _servers = base_set_restore(tmp_path, monkeypatch, force=True)
    order = []

    def prepare(self, plan, timings):
        order.append(list(installed))
        raise PgdrError("stop here")

    monkeypatch.setattr(pr.BaseSetRestore, "prepare", prepare)
    with pytest.raises(PgdrError, match="stop here"):
        restore.run()
    assert order == [[("restore-db1", True), ("restore-db1", False)]]


def test_from_options_finds_the_set_the_binaries_the_server_and_the_archive(tmp_path, monkeypatch):
    restore, _installed, servers = base_set_restore(tmp_path, monkeypatch, login_host="/run/postgresql", login_port=5433, os_user="pg")
    assert restore.manifest is MANIFEST and restore.repo == "the repository" and restore.cluster_name == "db1"
    assert restore.tools == {"pg_verifybackup": "/usr/lib/postgresql/15/bin/pg_verifybackup", "pg_combinebackup": "/usr/lib/postgresql/15/bin/pg_combinebackup"}
    assert servers == [dict(port=5433, socket_dir="/run/postgresql", bin_dir="/usr/lib/postgresql/15/bin", os_user="pg")]
    assert restore.server.pg_data == str(tmp_path / "main") and restore.pg_data == restore.server.pg_data
    assert restore.wal.restore_command == "pgdr-wal fetch %f %p" and restore.wal.newest == ("000000010000000000000009", None)
    assert restore.connect() == ("connection", True)


def test_without_an_archive_nothing_is_installed_and_targets_past_the_backup_are_refused(tmp_path, monkeypatch):
    restore, installed, _servers = base_set_restore(tmp_path, monkeypatch, archive=None, force=True, recovery_target_name="p1")
    assert restore.wal is None and installed == []
    with pytest.raises(PgdrError, match="recovery_target_name needs WAL after the backup: give archive"):
        restore.run(check_mode=True)


def test_a_backup_of_another_major_version_is_refused_by_the_cluster_in_place(tmp_path):
    (tmp_path / "PG_VERSION").write_text("18\n")
    with pytest.raises(PgdrError, match="backup b1 is of PostgreSQL 15 but the cluster in %s is PostgreSQL 18" % tmp_path):
        pr.server_bin_dir(MANIFEST, None, str(tmp_path))


def test_only_a_base_set_restores_into_pg_data(tmp_path):
    logical = {"backup_id": "d1", "kind": "logical-db"}
    with pytest.raises(PgdrError, match="set d1 is a logical-db backup; pg_data is only for base backups .drop pg_data to restore it logically."):
        pr.BaseSetRestore.from_options(restore_options(cluster="db1", pg_data=str(tmp_path / "main")), FakeConnParams(), None, logical)


# --- what pg_data holds is replaced only with force, and kept aside until the restored cluster verified -------------

REACHED = dict(in_recovery=False, paused=False, reached_lsn="0/6000000", reached_time=None, system_identifier="7", state="promoted")


def scripted(restore, monkeypatch, fail=None):
    """restore.run() with the deploy and the start replaced: the new folder holds PG_VERSION "new"; ``fail`` fails the start."""

    def prepare(plan, timings):
        os.mkdir(restore.new_dir)
        with open(os.path.join(restore.new_dir, "PG_VERSION"), "w") as f:
            f.write("new")

    def start_and_wait():
        if fail:
            raise PgdrError(fail)
        return dict(REACHED)

    monkeypatch.setattr(restore, "prepare", prepare)
    monkeypatch.setattr(restore, "_start_and_wait", start_and_wait)
    return restore


def a_folder_with(tmp_path, name="important.txt", text="keep me"):
    folder = tmp_path / "main"
    folder.mkdir()
    (folder / name).write_text(text)
    return str(folder)


def test_a_folder_that_holds_no_cluster_is_refused_without_force_and_nothing_changes(tmp_path, monkeypatch):
    pg_data = a_folder_with(tmp_path)
    restore = scripted(restore_for(tmp_path, FakeCluster(pg_data, running=False), force=False), monkeypatch)
    for check_mode in (True, False):
        with pytest.raises(PgdrError) as caught:
            restore.run(check_mode=check_mode)
        assert caught.value.msg == (
            "pg_data %s is not empty and holds no PostgreSQL cluster (important.txt); give an empty or new folder, or set force: true to "
            "replace what is there (it is kept as %s.pgdr-previous-b1 until the restored cluster has started and passed verification)"
            % (pg_data, pg_data)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main"] and (tmp_path / "main" / "important.txt").read_text() == "keep me"


def test_a_stopped_cluster_is_refused_without_force(tmp_path, monkeypatch):
    pg_data = a_folder_with(tmp_path, "PG_VERSION", "15\n")
    cluster = FakeCluster(pg_data, running=False)
    restore = scripted(restore_for(tmp_path, cluster, force=False), monkeypatch)
    with pytest.raises(PgdrError, match="^pg_data %s holds a stopped PostgreSQL 15 cluster; set force: true to replace it .it is kept as " % pg_data):
        restore.run()
    assert (tmp_path / "main" / "PG_VERSION").read_text() == "15\n" and cluster.calls == []
    forced = scripted(restore_for(tmp_path, cluster, force=True), monkeypatch).run()
    assert forced["plan"]["existing"] == "stopped cluster" and forced["previous_data_dir"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main"] and (tmp_path / "main" / "PG_VERSION").read_text() == "new"


def test_with_force_a_folder_is_kept_aside_put_back_on_failure_and_removed_only_after_verification(tmp_path, monkeypatch):
    pg_data = a_folder_with(tmp_path)
    cluster = FakeCluster(pg_data, running=False)
    with pytest.raises(PgdrError) as caught:
        scripted(restore_for(tmp_path, cluster), monkeypatch, fail="the restored cluster did not start: FATAL:  boom").run()
    assert caught.value.msg.endswith("; the previous data directory was put back")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main"] and (tmp_path / "main" / "important.txt").read_text() == "keep me"
    assert "start" not in cluster.calls  # nothing ran there before, so nothing is started

    kept = scripted(restore_for(tmp_path, cluster, keep_previous=True), monkeypatch).run()
    assert kept["plan"]["existing"] == "other" and kept["previous_data_dir"] == pg_data + ".pgdr-previous-b1"
    assert (tmp_path / "main.pgdr-previous-b1" / "important.txt").read_text() == "keep me"

    (tmp_path / "main.pgdr-previous-b1").rename(tmp_path / "elsewhere")
    (tmp_path / "main" / "PG_VERSION").unlink()
    (tmp_path / "main" / "notes.txt").write_text("x")
    removed = scripted(restore_for(tmp_path, cluster), monkeypatch).run()
    assert removed["previous_data_dir"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "main"] and (tmp_path / "main" / "PG_VERSION").read_text() == "new"


def test_an_absent_or_empty_pg_data_needs_no_force(tmp_path, monkeypatch):
    pg_data = str(tmp_path / "main")
    done = scripted(restore_for(tmp_path, FakeCluster(pg_data, running=False), force=False), monkeypatch).run()
    assert done["plan"]["existing"] == "absent" and done["plan"]["create_folders"] == []
    os.rename(pg_data, str(tmp_path / "away"))
    os.mkdir(pg_data)
    done = scripted(restore_for(tmp_path, FakeCluster(pg_data, running=False), force=False), monkeypatch).run()
    assert done["plan"]["existing"] == "empty" and (tmp_path / "main" / "PG_VERSION").read_text() == "new"


@pytest.mark.parametrize("force", [False, True])
def test_a_link_a_file_or_a_folder_with_a_cluster_inside_is_refused_even_with_force(tmp_path, monkeypatch, force):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    (tmp_path / "top" / "15" / "main").mkdir(parents=True)
    (tmp_path / "top" / "15" / "main" / "PG_VERSION").write_text("15\n")
    for name, message in (("link", "is a symbolic link .to %s.; give the data directory itself" % (tmp_path / "real")),
                          ("file", "is a file, not a folder"),
                          ("top", "is not a data directory but holds one in %s; give that folder as pg_data" % (tmp_path / "top" / "15" / "main"))):
        pg_data = str(tmp_path / name)
        with pytest.raises(PgdrError, match="^pg_data %s %s" % (pg_data, message)):
            scripted(restore_for(tmp_path, FakeCluster(pg_data, running=False), force=force), monkeypatch).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link", "real", "top"]


def test_the_search_for_a_cluster_inside_pg_data_is_bounded(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "z" / "16" / "main").mkdir(parents=True)
    (tmp_path / "z" / "16" / "main" / "PG_VERSION").write_text("16\n")
    assert pr.nested_cluster(str(tmp_path)) == str(tmp_path / "z" / "16" / "main")
    assert pr.nested_cluster(str(tmp_path), budget=4) is None  # a, b, c, z: then it stops looking
    assert pr.nested_cluster(str(tmp_path), depth=2) is None
    assert pr.nested_cluster(str(tmp_path / "missing")) is None


# --- a pg_data whose parent is missing: the folders are made for the cluster's OS user ---------------------------


def me():
    return pwd.getpwuid(os.geteuid()).pw_name


def test_missing_folders_above_pg_data_are_made_for_the_cluster_user_and_removed_on_failure(tmp_path, monkeypatch):
    pg_data = str(tmp_path / "new" / "deep" / "main")
    cluster = FakeCluster(pg_data, running=False)
    cluster.os_user = me()  # chown needs a user this host has
    cluster.server_log = str(tmp_path / "new" / "deep" / "postgresql.log")
    planned = scripted(restore_for(tmp_path, cluster), monkeypatch).run(check_mode=True)
    assert planned["plan"]["create_folders"] == [str(tmp_path / "new"), str(tmp_path / "new" / "deep")]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # check mode made nothing

    with pytest.raises(PgdrError, match="the restored copy was removed"):
        scripted(restore_for(tmp_path, cluster), monkeypatch, fail="the restored cluster did not start: x").run()
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    done = scripted(restore_for(tmp_path, cluster), monkeypatch).run()
    assert done["state"] == "promoted"
    for folder in (tmp_path / "new", tmp_path / "new" / "deep"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.geteuid()
    assert (tmp_path / "new" / "deep" / "main" / "PG_VERSION").read_text() == "new"


def test_a_log_the_server_cannot_write_or_a_folder_it_cannot_enter_is_refused_before_anything_changes(tmp_path, monkeypatch):
    (tmp_path / "srv").mkdir()
    pg_data = str(tmp_path / "srv" / "main")
    cluster = FakeCluster(pg_data, running=False, closed={str(tmp_path / "srv")})
    cluster.server_log = str(tmp_path / "srv" / "postgresql.log")
    with pytest.raises(PgdrError, match="^the server runs as postgres, which cannot enter %s .owned by " % (tmp_path / "srv")):
        scripted(restore_for(tmp_path, cluster), monkeypatch).run(check_mode=True)

    cluster.closed = {cluster.server_log}
    (tmp_path / "srv" / "postgresql.log").write_text("")
    with pytest.raises(PgdrError, match="^the server log %s cannot be written by postgres, which runs the server .%s owned by " % (
            cluster.server_log, cluster.server_log)):
        scripted(restore_for(tmp_path, cluster), monkeypatch).run()
    (tmp_path / "srv" / "postgresql.log").unlink()
    cluster.closed = {str(tmp_path / "srv")}
    cluster.owner_can_reach = lambda folder: True  # it may enter the folder, but not create its log there
    with pytest.raises(PgdrError, match="give server_log a file postgres can write"):
        scripted(restore_for(tmp_path, cluster), monkeypatch).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["srv"] and list((tmp_path / "srv").iterdir()) == []


# --- a server that does not start says why, also when it logged nothing ------------------------------------------


PG_CTL_CANNOT_LOG = ("/bin/sh: 1: cannot create /srv/restore/postgresql.log: Permission denied\n"
                     "pg_ctl: could not start server\nExamine the log output.\n")


def test_a_start_that_logged_nothing_fails_with_what_pg_ctl_said(tmp_path):
    from ansible_collections.pgdr.backup.plugins.module_utils.core import pg_service

    assert pg_service.telling_start_line(PG_CTL_CANNOT_LOG + "waiting for server to start.... stopped waiting") == (
        "/bin/sh: 1: cannot create /srv/restore/postgresql.log: Permission denied")
    assert pg_service.telling_start_line("pg_ctl: could not start server\nExamine the log output.\n") == "Examine the log output."
    assert pg_service.telling_start_line("2026-12-06 LOG:  x\n2026-12-06 FATAL:  data directory has wrong ownership\n") == (
        "2026-12-06 FATAL:  data directory has wrong ownership")

    cluster = FakeCluster(str(tmp_path / "main"), running=False, fail_start=True)

    def start(timeout=60):
        error = PgdrError("start of the PostgreSQL server failed: %s; see the server log" % pg_service.telling_start_line(PG_CTL_CANNOT_LOG),
                          stderr=PG_CTL_CANNOT_LOG)
        error.reason = pg_service.telling_start_line(PG_CTL_CANNOT_LOG)
        raise error

    cluster.start = start
    with pytest.raises(PgdrError) as caught:
        restore_for(tmp_path, cluster)._start_and_wait()
    assert caught.value.msg == "the restored cluster did not start: /bin/sh: 1: cannot create /srv/restore/postgresql.log: Permission denied"
    assert caught.value.details["stderr"] == PG_CTL_CANNOT_LOG
