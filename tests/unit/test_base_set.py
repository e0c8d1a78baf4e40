"""physical.base_set, what module pg_basebackup runs: typed options from the spec, and run() without Ansible."""

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set
from ansible_collections.pgdr.backup.plugins.module_utils.physical.basebackup import BaseBackupOptions
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions
from ansible_collections.pgdr.backup.plugins.modules import pg_basebackup
from tests.unit.test_basebackup import stored_base_set

LIBPQ_ENV = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGCONNECT_TIMEOUT")


def validated(monkeypatch, **params):
    """The params as AnsibleModule hands them to the module: the spec's defaults applied, no PG* fallback."""
    for name in LIBPQ_ENV:
        monkeypatch.delenv(name, raising=False)
    result = ArgumentSpecValidator(base_set.argument_spec(), **base_set.ARGUMENT_RELATIONS).validate(params)
    assert [str(error) for error in result.errors] == []
    return result.validated_parameters


def test_options_from_types_the_three_option_groups_with_the_spec_defaults(monkeypatch, tmp_path):
    params = validated(monkeypatch, login_host="db1", cluster="db1", repository=dict(type="local", path=str(tmp_path)))
    options, connection, repository = base_set.options_from(params)
    assert isinstance(options, BaseBackupOptions) and isinstance(connection, ConnectionOptions) and isinstance(repository, RepositoryOptions)
    assert (options.action, options.format, options.wal_method, options.checkpoint, options.work_dir) == ("backup", "tar", "stream", "spread", "/var/tmp")
    assert options.compression.method == "none" and options.compression.location == "client"
    assert (connection.login_host, connection.connect_timeout, connection.login_password) == ("db1", 10, None)
    assert (repository.type, repository.path) == ("local", str(tmp_path))


def test_action_verify_needs_cluster_and_backup_id_by_the_declared_relations(monkeypatch, tmp_path):
    result = ArgumentSpecValidator(base_set.argument_spec(), **base_set.ARGUMENT_RELATIONS).validate(
        dict(action="verify", repository=dict(type="local", path=str(tmp_path))))
    assert [str(error) for error in result.errors] == ["action is verify but all of the following are missing: cluster, backup_id"]


def test_verify_in_check_mode_reports_the_stored_set_without_checking_or_changing_it(monkeypatch, tmp_path):
    repo = LocalRepository(str(tmp_path))
    manifest = stored_base_set(repo)
    before = sorted(p.name for p in (tmp_path / "db1" / "b1").iterdir())
    monkeypatch.setattr(base_set.basebackup, "reverify", lambda *args, **kwargs: pytest.fail("check mode re-verified the set"))
    params = validated(monkeypatch, action="verify", cluster="db1", backup_id="b1", repository=dict(type="local", path=str(tmp_path)))
    result = base_set.run(*base_set.options_from(params), check_mode=True)
    assert result == dict(changed=False, backup_id="b1", location=repo.location("db1/b1"), manifest=manifest,
                          summary=base_set.basebackup.summary(manifest))
    assert sorted(p.name for p in (tmp_path / "db1" / "b1").iterdir()) == before


def test_verify_outside_check_mode_reports_what_reverify_found(monkeypatch, tmp_path):
    manifest = stored_base_set(LocalRepository(str(tmp_path)))
    calls = []

    def reverify(repo, cluster, backup_id, pg_bin_dir, work_dir, passphrase=None):
        calls.append((cluster, backup_id, work_dir, passphrase))
        return dict(manifest=manifest, verify_seconds=1.5, verified_with="pg_verifybackup")

    monkeypatch.setattr(base_set.basebackup, "reverify", reverify)
    params = validated(monkeypatch, action="verify", cluster="db1", backup_id="b1", work_dir=str(tmp_path / "w"),
                       encryption=dict(method="gpg", passphrase="s3cret"), repository=dict(type="local", path=str(tmp_path)))
    result = base_set.run(*base_set.options_from(params), check_mode=False)
    assert calls == [("db1", "b1", str(tmp_path / "w"), "s3cret")]
    assert result["changed"] is False and result["verified"] is True and result["verify_seconds"] == 1.5
    assert result["verified_with"] == "pg_verifybackup" and result["summary"] == base_set.basebackup.summary(manifest)


def test_the_module_runs_base_set_with_its_check_mode(monkeypatch, capsys, tmp_path):
    """main() is only the glue: in check mode it reports what base_set.run does, and never re-verifies."""
    manifest = stored_base_set(LocalRepository(str(tmp_path)))
    monkeypatch.setattr(base_set.basebackup, "reverify", lambda *args, **kwargs: pytest.fail("check mode re-verified the set"))
    args = dict(action="verify", cluster="db1", backup_id="b1", repository=dict(type="local", path=str(tmp_path)), _ansible_check_mode=True)
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", None, raising=False)
    with pytest.raises(SystemExit):
        pg_basebackup.main()
    result = json.loads(capsys.readouterr().out)
    assert result["changed"] is False and result["backup_id"] == "b1" and "failed" not in result
    assert result["manifest"] == json.loads(json.dumps(manifest)) and "verified" not in result
