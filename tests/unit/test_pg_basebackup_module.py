"""pg_basebackup's module flow around the lock: a set another run completed is never deleted."""

import contextlib

from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import LocalRepository
from ansible_collections.pgdr.backup.plugins.modules import pg_basebackup as module_code
from tests.unit.test_basebackup import stored_base_set


class FakeModule:
    check_mode = False


class FakeParams:
    settings = {"host": "db1", "port": 5432}

    def connect(self, autocommit=True):
        return FakeConnection()


class FakeConnection:
    def close(self):
        pass


class FakePlan:
    def __init__(self, *args):
        self.create_slot = False


def test_a_set_completed_by_another_run_while_waiting_for_the_lock_is_kept(tmp_path, monkeypatch):
    """Two runs with the same backup_id: the first completes the set between the second's check and its lock."""
    repo = LocalRepository(str(tmp_path))

    @contextlib.contextmanager
    def lock_after_the_other_run_finished(source, repository):
        stored_base_set(repo)  # the first run completed b1 and let the lock go
        yield True, None

    def must_not_run(*args):
        raise AssertionError("a second pg_basebackup ran over a complete set")

    monkeypatch.setattr(module_code, "server_version", lambda conn: {"major": 18, "num": 180001, "text": "18.1"})
    monkeypatch.setattr(module_code.basebackup, "Plan", FakePlan)
    monkeypatch.setattr(module_code.basebackup, "identify_system", lambda params: ("7710939028678239692", 1))
    monkeypatch.setattr(module_code.basebackup, "run_backup", must_not_run)
    monkeypatch.setattr(module_code.locks, "exclusive", lock_after_the_other_run_finished)
    p = dict(cluster="db1", backup_id="b1", if_running="fail")
    result = module_code.backup(FakeModule(), p, FakeParams(), repo)
    assert result["changed"] is False and result["manifest"]["backup_id"] == "b1"
    assert backup_set.set_status(repo, "db1", "b1") == "complete"
