"""logical.dump_set, what module pg_logical_dump runs: typed options from the spec, and run() without Ansible or a server."""

import contextlib
import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import ConnectionOptions
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set
from ansible_collections.pgdr.backup.plugins.module_utils.logical.dump import LogicalDumpOptions
from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import RepositoryOptions
from ansible_collections.pgdr.backup.plugins.modules import pg_logical_dump

LIBPQ_ENV = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGCONNECT_TIMEOUT")


def validated(monkeypatch, **params):
    """The params as AnsibleModule hands them to the module: the spec's defaults applied, no PG* fallback."""
    for name in LIBPQ_ENV:
        monkeypatch.delenv(name, raising=False)
    result = ArgumentSpecValidator(dump_set.argument_spec(), **dump_set.ARGUMENT_RELATIONS).validate(params)
    assert [str(error) for error in result.errors] == []
    return result.validated_parameters


class FakeCursor:
    def __init__(self, admin):
        self.admin = admin

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.admin.queries.append(sql)

    def fetchone(self):
        return (123456,)  # the only query check mode runs here: the databases' size


class FakeAdmin:
    def __init__(self):
        self.queries = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


def test_options_from_types_the_three_option_groups_with_the_spec_defaults(monkeypatch, tmp_path):
    params = validated(monkeypatch, login_host="db1", login_password="pw", database="sales", repository=dict(type="local", path=str(tmp_path)))
    options, connection, repository = dump_set.options_from(params)
    assert isinstance(options, LogicalDumpOptions) and isinstance(connection, ConnectionOptions) and isinstance(repository, RepositoryOptions)
    assert (options.mode, options.database, options.format, options.jobs, options.copy_format) == ("database", "sales", "custom", 1, "csv")
    assert options.compression.method == "gzip" and options.fingerprint is True and options.extra_args == []
    assert (connection.login_host, connection.login_password, connection.connect_timeout) == ("db1", "pw", 10)
    assert (repository.type, repository.path) == ("local", str(tmp_path))


def test_run_refuses_contradicting_options_before_connecting_or_opening_the_repository(monkeypatch, tmp_path):
    monkeypatch.setattr(dump_set.ConnectionParams, "connect", lambda *args, **kwargs: pytest.fail("connected"))
    monkeypatch.setattr(dump_set, "open_repository", lambda options: pytest.fail("the repository was opened"))
    params = validated(monkeypatch, jobs=4, repository=dict(type="local", path=str(tmp_path)))
    with pytest.raises(PgdrError, match="^jobs works only with format directory; set format: directory or jobs: 1$"):
        dump_set.run(*dump_set.options_from(params), check_mode=True)


def test_check_mode_reports_the_databases_and_their_size_and_writes_nothing(monkeypatch, tmp_path):
    admin = FakeAdmin()
    monkeypatch.setattr(dump_set.ConnectionParams, "connect", lambda self, dbname=None, autocommit=False: admin)
    monkeypatch.setattr(dump_set, "server_version", lambda conn: {"major": 18, "num": 180001, "text": "18.1"})
    monkeypatch.setattr(dump_set.logical_dump, "check_session_role", lambda conn, role: None)
    monkeypatch.setattr(dump_set.logical_dump, "client_binaries", lambda major, pg_bin_dir: None)
    monkeypatch.setattr(dump_set, "list_databases", lambda conn: ["app", "sales"])
    monkeypatch.setattr(dump_set.locks, "exclusive", lambda *args: pytest.fail("check mode took the lock"))
    params = validated(monkeypatch, mode="cluster", cluster="db1", backup_id="20261207T060000Z", repository=dict(type="local", path=str(tmp_path / "repo")))
    result = dump_set.run(*dump_set.options_from(params), check_mode=True)
    assert result == dict(changed=True, backup_id="20261207T060000Z", location=str(tmp_path / "repo" / "db1" / "20261207T060000Z"),
                          databases=["app", "sales"], estimated_bytes=123456)
    assert admin.closed and len(admin.queries) == 1
    assert not (tmp_path / "repo" / "db1").exists()


def test_outside_check_mode_the_run_takes_the_lock_and_an_if_running_skip_returns_unchanged(monkeypatch, tmp_path):
    admin = FakeAdmin()
    monkeypatch.setattr(dump_set.ConnectionParams, "connect", lambda self, dbname=None, autocommit=False: admin)
    monkeypatch.setattr(dump_set, "server_version", lambda conn: {"major": 18, "num": 180001, "text": "18.1"})
    monkeypatch.setattr(dump_set.logical_dump, "check_session_role", lambda conn, role: None)
    monkeypatch.setattr(dump_set.logical_dump, "client_binaries", lambda major, pg_bin_dir: None)
    monkeypatch.setattr(dump_set, "write_set", lambda *args: pytest.fail("wrote a set while another run holds the lock"))

    @contextlib.contextmanager
    def held_by_another_run(source, repository):
        yield False, "pid 4242"

    monkeypatch.setattr(dump_set.locks, "exclusive", held_by_another_run)
    params = validated(monkeypatch, database="sales", cluster="db1", backup_id="b1", if_running="skip",
                       repository=dict(type="local", path=str(tmp_path / "repo")))
    result = dump_set.run(*dump_set.options_from(params), check_mode=False)
    assert result["changed"] is False and result["databases"] == ["sales"]
    assert result["skipped_reason"] == "another backup of db1 into %s is running (pid 4242)" % LocalRepository(str(tmp_path / "repo")).describe()
    assert admin.closed


def test_the_module_hands_its_options_to_dump_set(monkeypatch, capsys, tmp_path):
    """main() is only the glue: a refusal of dump_set.validate comes back as the module's one-line failure."""
    for name in LIBPQ_ENV:
        monkeypatch.delenv(name, raising=False)
    args = dict(data_only=True, schema_only=True, repository=dict(type="local", path=str(tmp_path)))
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    monkeypatch.setattr(basic, "_PARSED_MODULE_ARGS", None, raising=False)
    with pytest.raises(SystemExit):
        pg_logical_dump.main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] is True and result["msg"] == "data_only and schema_only exclude each other; choose one"
