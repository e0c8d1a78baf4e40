"""module_utils.catalog.actions: what backup_catalog runs, called as pgdr-backup calls it (typed options, check_mode, now)."""

import json

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions, catalog
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set as bs
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions
from ansible_collections.pgdr.backup.plugins.modules import backup_catalog
from tests.unit.test_catalog import CLUSTER, DAY, NOW, make_set
from tests.unit.test_probackup_instance_entry import import_without_ansible


def test_actions_import_nothing_from_ansible():
    assert import_without_ansible("ansible_collections.pgdr.backup.plugins.module_utils.catalog.actions") == (0, "[]", "")


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "repo")


def params(root, **given):
    """The params Ansible gives the module for ``given`` on the local repository ``root`` (defaults applied, relations checked)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    validated = ArgumentSpecValidator(actions.argument_spec(), **actions.ARGUMENT_RELATIONS).validate(
        dict(cluster=CLUSTER, repository=dict(type="local", path=root), **given))
    assert validated.error_messages == []
    return validated.validated_parameters


def run(root, check_mode=False, now=NOW, **given):
    return actions.run(*actions.options_from(params(root, **given)), check_mode=check_mode, now=now)


def test_options_from_types_the_task_and_its_repository(root):
    options, repository = actions.options_from(params(root, action="prune", keep_last=2))
    assert isinstance(options, actions.CatalogOptions) and isinstance(repository, RepositoryOptions)
    assert (options.action, options.keep_last, options.incomplete_grace) == ("prune", 2, "1d")
    assert (repository.type, repository.path, repository.prefix) == ("local", root, "")


def test_pin_and_prune_honour_check_mode(root):
    repo = LocalRepository(root)
    old, pinned, new = (make_set(repo, CLUSTER, NOW - d * DAY) for d in (3, 2, 1))
    would_pin = run(root, check_mode=True, action="pin", backup_id=pinned)
    assert would_pin["changed"] is True and catalog.read_pin(repo, CLUSTER, pinned) is None
    assert run(root, action="pin", backup_id=pinned)["pin"]["pinned_at"] == "2026-12-07T03:00:00Z"  # the now given
    would_prune = run(root, check_mode=True, action="prune", keep_last=1)
    assert would_prune["deleted"] == [old] and sorted(s["backup_id"] for s in bs.list_sets(repo, CLUSTER)) == [old, pinned, new]
    pruned = run(root, action="prune", keep_last=1)
    assert pruned["deleted"] == [old] and pruned["kept"] == [pinned, new]
    assert sorted(s["backup_id"] for s in bs.list_sets(repo, CLUSTER)) == [pinned, new]
    unpinned = run(root, check_mode=True, action="unpin", backup_id=pinned)
    assert unpinned["changed"] is True and catalog.read_pin(repo, CLUSTER, pinned) is not None


def test_now_is_the_clock_unless_given(root, monkeypatch):
    repo = LocalRepository(root)
    older, newer = make_set(repo, CLUSTER, NOW - 3 * DAY), make_set(repo, CLUSTER, NOW - DAY)
    monkeypatch.setattr(catalog, "utc_now", lambda: NOW)
    assert [s["backup_id"] for s in run(root, now=None, since="2d")["sets"]] == [newer]
    assert [s["backup_id"] for s in run(root, now=NOW - 2 * DAY, since="2d")["sets"]] == [older, newer]
    verified = run(root, now=None, action="verify")
    assert verified["newest_good"] == newer and verified["newest_good_age_seconds"] == 86400


def test_a_wrong_option_fails_before_the_repository_is_opened_and_the_repository_is_closed(root, monkeypatch):
    opened = []

    class Recording(LocalRepository):
        def close(self):
            opened.append("closed")

    def open_repository(options):
        opened.append(options.path)
        return Recording(options.path)

    monkeypatch.setattr(actions, "open_repository", open_repository)
    with pytest.raises(PgdrError, match="^option keep_last has no meaning with action list"):
        run(root, keep_last=3)
    assert opened == []
    with pytest.raises(PgdrError, match="^backup set pg1/nope does not exist"):
        run(root, action="verify", backup_id="nope")
    assert opened == [root, "closed"]


def run_main(monkeypatch, capsys, main, args):
    """The module's main() with ``args`` as Ansible passes them: its result JSON."""
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", None, raising=False)
    with pytest.raises(SystemExit):
        main()
    return json.loads(capsys.readouterr().out)


def test_the_module_runs_actions_with_its_check_mode_and_relations(root, monkeypatch, capsys):
    repo = LocalRepository(root)
    old, new = make_set(repo, CLUSTER, NOW - 3 * DAY), make_set(repo, CLUSTER, NOW - DAY)
    args = dict(cluster=CLUSTER, repository=dict(type="local", path=root), action="prune", keep_last=1)
    checked = run_main(monkeypatch, capsys, backup_catalog.main, dict(args, _ansible_check_mode=True))
    assert checked["changed"] is True and checked["deleted"] == [old] and "failed" not in checked
    assert sorted(s["backup_id"] for s in bs.list_sets(repo, CLUSTER)) == [old, new]
    done = run_main(monkeypatch, capsys, backup_catalog.main, args)
    assert done["deleted"] == [old] and [s["backup_id"] for s in bs.list_sets(repo, CLUSTER)] == [new]
    refused = run_main(monkeypatch, capsys, backup_catalog.main, dict(args, action="pin", keep_last=None))
    assert refused["failed"] is True and refused["msg"] == "action is pin but all of the following are missing: backup_id"
