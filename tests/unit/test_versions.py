"""Version parsing and client binary discovery."""

import os

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import binaries
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import major_of, parse_tool_version


@pytest.mark.parametrize("num,major", [(150018, 15), (180006, 18), (140000, 14), (170002, 17)])
def test_major_of(num, major):
    assert major_of(num) == major


@pytest.mark.parametrize("text,expected", [
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", (15, 18)),
    ("pg_dump (PostgreSQL) 18.1\n", (18, 1)),
    ("pg_dump (PostgreSQL) 18beta1\n", (18, 0)),
    ("pg_dump (EnterpriseDB) 15.2", None),
    ("", None),
])
def test_parse_tool_version(text, expected):
    assert parse_tool_version(text) == expected


def test_explicit_bin_dir_is_the_only_candidate():
    assert binaries.candidate_paths("pg_dump", 15, "/opt/edb/as15/bin") == ["/opt/edb/as15/bin/pg_dump"]


def test_debian_dir_comes_before_path():
    assert binaries.candidate_paths("pg_dump", 18)[0] == "/usr/lib/postgresql/18/bin/pg_dump"


def fake_tool(folder, name, version_line):
    path = folder / name
    path.write_text("#!/bin/sh\necho '%s'\n" % version_line)
    path.chmod(0o755)
    return path


def test_explicit_bin_dir_is_trusted_even_with_a_vendor_version(tmp_path):
    fake_tool(tmp_path, "pg_dump", "pg_dump (EnterpriseDB) 15.2")
    path, version = binaries.find_binary("pg_dump", 15, str(tmp_path))
    assert path == str(tmp_path / "pg_dump") and version is None


def test_wrong_major_on_path_is_refused(tmp_path, monkeypatch):
    fake_tool(tmp_path, "pg_fakedump", "pg_fakedump (PostgreSQL) 13.4")
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    with pytest.raises(PgdrError) as err:
        binaries.find_binary("pg_fakedump", 99)
    assert "no pg_fakedump for PostgreSQL 99" in err.value.msg
    assert "version 13.4" in err.value.msg and "set pg_bin_dir" in err.value.msg


def test_matching_major_on_path_is_used(tmp_path, monkeypatch):
    fake_tool(tmp_path, "pg_fakedump", "pg_fakedump (PostgreSQL) 99.1")
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    assert binaries.find_binary("pg_fakedump", 99) == (str(tmp_path / "pg_fakedump"), (99, 1))


def test_missing_bin_dir_binary_fails_clearly(tmp_path):
    with pytest.raises(PgdrError) as err:
        binaries.find_binary("pg_dump", 15, str(tmp_path))
    assert "%s/pg_dump (missing)" % tmp_path in err.value.msg


def test_real_debian_pg15_is_found():
    path, version = binaries.find_binary("pg_dump", 15)
    assert path == "/usr/lib/postgresql/15/bin/pg_dump" and version[0] == 15
