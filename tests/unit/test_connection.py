"""libpq settings: passfile for children, no password in argv or environment."""

import os
import stat

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import (
    ConnectionOptions,
    ConnectionParams,
    connection_argument_spec,
    passfile_escape,
)
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed

SECRET = "s3cr:et\\with;'quotes\""


def params(**overrides):
    base = {name: None for name in connection_argument_spec()}
    base.update(connect_timeout=10)
    base.update(overrides)
    return ConnectionParams(typed(ConnectionOptions, base))


def test_password_is_never_an_argument_spec_default_and_is_no_log():
    spec = connection_argument_spec()
    assert spec["login_password"]["no_log"] is True
    assert "default" not in spec["login_password"]


def test_settings_become_libpq_keywords():
    p = params(login_host="db1", login_port=5433, login_user="u", ssl_mode="verify-full", ssl_rootcert="/ca.pem")
    assert p.settings == {
        "host": "db1", "port": "5433", "user": "u", "sslmode": "verify-full",
        "sslrootcert": "/ca.pem", "connect_timeout": "10", "dbname": "postgres",
    }


def test_describe_never_contains_the_password():
    p = params(login_host="db1", login_user="u", login_password=SECRET)
    assert SECRET not in p.describe()
    assert "u@db1:5432/postgres" == p.describe()


def test_passfile_escape():
    assert passfile_escape("a:b\\c") == "a\\:b\\\\c"


def test_child_env_uses_a_0600_passfile_removed_afterwards():
    p = params(login_host="db1", login_user="u", login_password=SECRET, ssl_mode="require")
    base = {"PATH": "/usr/bin", "PGPASSWORD": "leaked", "PGAPPNAME": "kept"}
    with p.child_env(base) as env:
        path = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as handle:
            assert handle.read() == "*:*:*:*:%s\n" % passfile_escape(SECRET)
        assert "PGPASSWORD" not in env
        assert SECRET not in "".join(env.values())
        assert env["PGHOST"] == "db1" and env["PGSSLMODE"] == "require" and env["PGAPPNAME"] == "kept"
    assert not os.path.exists(path)


def test_child_env_without_password_has_no_passfile():
    with params(login_user="u").child_env({}) as env:
        assert "PGPASSFILE" not in env
        assert env["PGUSER"] == "u"


def test_passfile_is_removed_when_the_child_fails():
    p = params(login_password=SECRET)
    try:
        with p.child_env({}) as env:
            path = env["PGPASSFILE"]
            raise RuntimeError("pg_dump died")
    except RuntimeError:
        pass
    assert not os.path.exists(path)


def test_with_user_keeps_server_and_tls_settings():
    p = params(login_host="db1", login_user="admin", login_password="a", ssl_mode="verify-ca")
    other = p.with_user("exporter", "b")
    assert other.settings["user"] == "exporter" and other.settings["sslmode"] == "verify-ca"
    assert other.password == "b" and p.password == "a"


def test_children_go_to_the_socket_psycopg_reached():
    p = params(login_user="u")
    p.reached_host = "/var/run/postgresql"
    with p.child_env({}) as env:
        assert env["PGHOST"] == "/var/run/postgresql"
    explicit = params(login_host="db1")
    explicit.reached_host = None
    with explicit.child_env({}) as env:
        assert env["PGHOST"] == "db1"
