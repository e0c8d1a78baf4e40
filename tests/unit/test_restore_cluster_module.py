"""restore_cluster's physical flow: nothing on the host changes before the restore's own refusals have run."""

import contextlib

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.modules import restore_cluster as module_code
from tests.unit.test_physical_review import FakeCluster

MANIFEST = {"backup_id": "b1", "kind": "base", "stop_lsn": "0/5000100", "finished_at": "2026-11-22T10:00:00Z",
            "source": {"major": 15, "system_identifier": "7"}, "physical": {"stop_time": "2026-11-22T10:00:00Z", "format": "tar"}}


class FakeModule:
    def __init__(self, check_mode=False):
        self.check_mode = check_mode


class FakeArchive:
    def newest_segment(self):
        return ("000000010000000000000009", None)


def physical_run(tmp_path, monkeypatch, check_mode=False, **over):
    installed = []
    monkeypatch.setattr(module_code, "select_set", lambda repo, cluster, backup_id, kind=None: MANIFEST)
    monkeypatch.setattr(module_code, "physical_bin_dir", lambda p, manifest: "/usr/lib/postgresql/15/bin")
    monkeypatch.setattr(module_code.Cluster, "from_options", classmethod(lambda cls, service, bin_dir, **kw: FakeCluster(service.pg_data)))
    monkeypatch.setattr(module_code.wal_helper, "install", lambda spec, name, check_mode=False, **kw: installed.append(("install", check_mode)))
    monkeypatch.setattr(module_code.wal_helper, "prepare_spool", lambda name, **kw: installed.append(("spool", False)))
    monkeypatch.setattr(module_code.wal_helper, "open_archive", lambda spec: contextlib.nullcontext(FakeArchive()))
    monkeypatch.setattr(module_code.physical_restore, "load_chain", lambda repo, name, manifest: [manifest])
    p = dict(cluster="db1", backup_id="b1", pg_data=str(tmp_path / "main"), os_user="postgres", login_port=5432, login_host=None,
             archive={"type": "local", "path": "/var/backups/wal"}, force=False)
    for option in ("database", "databases", "tables", "schemas"):
        p[option] = None
    p.update(over)
    return installed, lambda: module_code.run_physical(FakeModule(check_mode), p, None, None)


def test_a_refused_restore_installs_nothing_and_keeps_the_spool(tmp_path, monkeypatch):
    installed, run = physical_run(tmp_path, monkeypatch)  # the server runs and force is false
    with pytest.raises(PgdrError, match="is running; set force: true"):
        run()
    assert [what for what, check_mode in installed if not check_mode] == []


def test_check_mode_installs_nothing(tmp_path, monkeypatch):
    installed, run = physical_run(tmp_path, monkeypatch, check_mode=True, force=True)
    assert run()["plan"]["was_running"] is True
    assert [what for what, check_mode in installed if not check_mode] == []


def test_an_accepted_restore_installs_the_helper_before_deploying(tmp_path, monkeypatch):
    installed, run = physical_run(tmp_path, monkeypatch, force=True)
    order = []

    def prepare(self, chain, planned, timings):
        order.append(list(installed))
        raise PgdrError("stop here")

    monkeypatch.setattr(module_code.physical_restore.Restore, "prepare", prepare)
    with pytest.raises(PgdrError, match="stop here"):
        run()
    assert order == [[("install", True), ("install", False), ("spool", False)]]
