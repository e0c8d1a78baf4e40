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


def debian_layout(tmp_path, monkeypatch, tools):
    """A fake /usr/lib/postgresql/<major>/bin per {major: version line}, and an empty PATH."""
    for major, line in tools.items():
        folder = tmp_path / str(major) / "bin"
        folder.mkdir(parents=True)
        fake_tool(folder, "pg_dump", line.replace("TOOL", "pg_dump"))
        fake_tool(folder, "pg_basebackup", line.replace("TOOL", "pg_basebackup"))
    monkeypatch.setattr(binaries, "DEBIAN_BIN_DIR", str(tmp_path) + "/%d/bin")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))


def test_the_same_major_is_preferred_to_a_newer_one(tmp_path, monkeypatch):
    debian_layout(tmp_path, monkeypatch, {15: "TOOL (PostgreSQL) 15.8", 18: "TOOL (PostgreSQL) 18.1"})
    assert binaries.find_binary("pg_dump", 15) == (str(tmp_path / "15/bin/pg_dump"), (15, 8))


def test_a_newer_pg_dump_is_used_when_the_servers_major_has_none(tmp_path, monkeypatch):
    debian_layout(tmp_path, monkeypatch, {17: "TOOL (PostgreSQL) 17.6", 18: "TOOL (PostgreSQL) 18.1", 14: "TOOL (PostgreSQL) 14.9"})
    assert binaries.find_binary("pg_dump", 15) == (str(tmp_path / "17/bin/pg_dump"), (17, 6))  # the nearest newer one


def test_an_older_pg_dump_is_never_found_automatically(tmp_path, monkeypatch):
    debian_layout(tmp_path, monkeypatch, {14: "TOOL (PostgreSQL) 14.9"})
    with pytest.raises(PgdrError) as err:
        binaries.find_binary("pg_dump", 15)
    assert err.value.msg.startswith("no pg_dump for PostgreSQL 15 found") and "it needs pg_dump 15 or newer" in err.value.msg


def test_min_major_asks_for_a_client_that_also_reads_a_newer_archive(tmp_path, monkeypatch):
    debian_layout(tmp_path, monkeypatch, {15: "TOOL (PostgreSQL) 15.8", 18: "TOOL (PostgreSQL) 18.1"})
    assert binaries.find_binary("pg_dump", 15, min_major=18) == (str(tmp_path / "18/bin/pg_dump"), (18, 1))
    with pytest.raises(PgdrError, match="it needs pg_dump 19 or newer.*install the PostgreSQL 19 client"):
        binaries.find_binary("pg_dump", 15, min_major=19)


def test_pg_basebackup_must_be_of_the_servers_major(tmp_path, monkeypatch):
    debian_layout(tmp_path, monkeypatch, {18: "TOOL (PostgreSQL) 18.1"})
    with pytest.raises(PgdrError) as err:
        binaries.find_binary("pg_basebackup", 15)
    assert "it needs pg_basebackup 15)" in err.value.msg


def test_an_older_pg_dump_in_pg_bin_dir_is_refused_in_one_line(tmp_path):
    fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)")
    with pytest.raises(PgdrError) as err:
        binaries.find_binary("pg_dump", 18, str(tmp_path))
    assert err.value.msg == ("pg_dump in pg_bin_dir %s is version 15.8 but the server is PostgreSQL 18, which needs pg_dump 18 or newer; "
                             "point pg_bin_dir to such a client, or leave it unset to find one" % tmp_path)


def test_a_newer_pg_dump_in_pg_bin_dir_is_used(tmp_path):
    fake_tool(tmp_path, "pg_dump", "pg_dump (PostgreSQL) 18.1")
    assert binaries.find_binary("pg_dump", 15, str(tmp_path)) == (str(tmp_path / "pg_dump"), (18, 1))


def test_pg_bin_dir_of_another_major_is_refused_for_tools_that_must_match(tmp_path):
    fake_tool(tmp_path, "pg_receivewal", "pg_receivewal (PostgreSQL) 18.1")
    with pytest.raises(PgdrError, match="which needs pg_receivewal 15;"):
        binaries.find_binary("pg_receivewal", 15, str(tmp_path))


def test_missing_bin_dir_binary_fails_clearly(tmp_path):
    with pytest.raises(PgdrError) as err:
        binaries.find_binary("pg_dump", 15, str(tmp_path))
    assert "%s/pg_dump (missing)" % tmp_path in err.value.msg


def test_real_debian_pg15_is_found():
    path, version = binaries.find_binary("pg_dump", 15)
    assert path == "/usr/lib/postgresql/15/bin/pg_dump" and version[0] == 15
