"""pg_basebackup's module flow around the lock: a set another run completed is never deleted; its declared argument relations."""

import contextlib
import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set
from ansible_collections.pgdr.backup.plugins.module_utils.physical.basebackup import BaseBackupOptions
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from ansible_collections.pgdr.backup.plugins.modules import pg_basebackup as module_code
from tests.unit.test_basebackup import stored_base_set


class FakeConnParams:
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

    monkeypatch.setattr(base_set, "server_version", lambda conn: {"major": 18, "num": 180001, "text": "18.1"})
    monkeypatch.setattr(base_set.basebackup, "Plan", FakePlan)
    monkeypatch.setattr(base_set.basebackup, "identify_system", lambda conn_params: ("7710939028678239692", 1))
    monkeypatch.setattr(base_set.basebackup, "run_backup", must_not_run)
    monkeypatch.setattr(base_set.locks, "exclusive", lock_after_the_other_run_finished)
    options = typed(BaseBackupOptions, dict(cluster="db1", backup_id="b1", if_running="fail"))
    result = base_set.backup(options, FakeConnParams(), repo, check_mode=False)
    assert result["changed"] is False and result["manifest"]["backup_id"] == "b1"
    assert backup_set.set_status(repo, "db1", "b1") == "complete"


def run_main(monkeypatch, capsys, args):
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", None, raising=False)  # restored after the test, like the two above
    with pytest.raises(SystemExit):
        module_code.main()
    return json.loads(capsys.readouterr().out)


def test_action_verify_requires_cluster_and_backup_id_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(base_set, "open_repository", lambda options: pytest.fail("the repository was opened"))
    result = run_main(monkeypatch, capsys, dict(action="verify", cluster="db1", repository=dict(type="local", path=str(tmp_path))))
    assert result["failed"] is True and result["msg"] == "action is verify but all of the following are missing: backup_id"
