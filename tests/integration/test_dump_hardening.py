"""pg_logical_dump hardening (issue 11): what a set records, what extra_args may hold, roles and binaries, on the lab's 15 and 18."""

import re
import uuid

import pytest

from tests.manifest_schema import assert_valid_manifest
from tests.sql_text import ident, literal

DUMP = "pgdr.backup.pg_logical_dump"
SUB_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


class Scratch:
    """A scratch database, role and local repository folder named h2_<random>, removed afterwards."""

    def __init__(self, host):
        self.host = host
        self.suffix = uuid.uuid4().hex[:6]
        self.db = "h2_db_" + self.suffix
        self.role = "h2_role_" + self.suffix
        self.cluster = "h2-%s-%s" % (host.name, self.suffix)
        self.path = "/var/backups/h2-test-%s" % self.suffix
        self.roles = [self.role]
        host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.path])
        host.psql("CREATE ROLE %s NOLOGIN" % ident(self.role))
        host.psql("CREATE DATABASE %s" % ident(self.db))

    @property
    def repository(self):
        return {"type": "local", "path": self.path}

    def sql(self, statement, db=None):
        return self.host.psql(statement, db=db or self.db).strip()

    def cleanup(self):
        self.host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(self.db))
        for role in self.roles:
            self.host.psql("DROP OWNED BY %s; DROP ROLE %s" % (ident(role), ident(role)) if self.sql(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s" % literal(role), db="postgres") == "1" else "SELECT 1")
        self.host.run(["rm", "-rf", self.path])


@pytest.fixture
def scratch(host):
    made = Scratch(host)
    yield made
    made.cleanup()


def assert_ok(result):
    assert result["_status"] == "ok", result.get("msg")
    return result


@pytest.mark.exclusive  # a cluster set reads every database of the host
def test_cluster_set_records_database_settings_acl_limit_and_comment(ansible, host, scratch):
    db, role = ident(scratch.db), ident(scratch.role)
    scratch.sql("ALTER DATABASE %s SET bytea_output = 'escape'; ALTER DATABASE %s SET timezone_abbreviations = 'India'; "
                "ALTER ROLE %s IN DATABASE %s SET work_mem = '3MB'; GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s; "
                "REVOKE CONNECT ON DATABASE %s FROM PUBLIC; ALTER DATABASE %s CONNECTION LIMIT 7; "
                "COMMENT ON DATABASE %s IS 'h2 scratch; it''s commented'" % (db, db, role, db, db, role, db, db, db), db="postgres")
    dumped = assert_ok(ansible.module(host.name, DUMP, dict(mode="cluster", cluster=scratch.cluster, repository=scratch.repository,
                                                            fingerprint=False)))
    manifest = assert_valid_manifest(dumped["manifest"])
    (info,) = [d for d in manifest["databases"] if d["name"] == scratch.db]
    assert info["settings"] == [
        {"role": None, "name": "bytea_output", "value": "escape"},
        {"role": None, "name": "timezone_abbreviations", "value": "India"},
        {"role": scratch.role, "name": "work_mem", "value": "3MB"},
    ]
    assert "%s=Tc/postgres" % scratch.role in info["acl"]
    assert "=T/postgres" in info["acl"]  # PUBLIC lost CONNECT, kept TEMPORARY
    assert info["connection_limit"] == 7
    assert info["comment"] == "h2 scratch; it's commented"
    postgres = [d for d in manifest["databases"] if d["name"] == "postgres"][0]
    assert postgres["connection_limit"] == -1 and postgres["acl"] is None

    # item 15: every command as run, one snapshot per database and no single one claimed
    commands = manifest["tool"]["commands"]
    assert commands[0]["database"] is None and commands[0]["argv"][0].endswith("/pg_dumpall") and "--globals-only" in commands[0]["argv"]
    snapshots = manifest["consistency"]["snapshots"]
    assert manifest["consistency"]["snapshot"] is None
    assert sorted(snapshots) == sorted(d["name"] for d in manifest["databases"]) == sorted(c["database"] for c in commands[1:])
    for command in commands[1:]:
        assert "--snapshot=%s" % snapshots[command["database"]] in command["argv"]
    assert manifest["tool"]["argv"] == commands[1]["argv"]
    assert len(set(snapshots.values())) == len(snapshots)


def test_database_and_table_sets_record_argv_snapshot_and_sub_second_times(ansible, host, scratch):
    scratch.sql("CREATE TABLE public.h2_t (id int PRIMARY KEY); INSERT INTO public.h2_t SELECT generate_series(1, 10)")
    dumped = assert_ok(ansible.module(host.name, DUMP, dict(database=scratch.db, cluster=scratch.cluster, repository=scratch.repository,
                                                            extra_args=["--no-comments"])))
    manifest = assert_valid_manifest(dumped["manifest"])
    argv, consistency = manifest["tool"]["argv"], manifest["consistency"]
    assert argv[0].endswith("/pg_dump") and "--format=custom" in argv and argv[-1] == "--no-comments"
    assert re.match(r"^[0-9A-F]+-[0-9A-F]+(-[0-9]+)?$", consistency["snapshot"]), consistency
    assert "--snapshot=%s" % consistency["snapshot"] in argv and consistency["snapshots"] == {scratch.db: consistency["snapshot"]}
    assert manifest["tool"]["commands"] == [{"database": scratch.db, "argv": argv}]
    assert SUB_SECOND.match(manifest["started_at"]) and SUB_SECOND.match(manifest["finished_at"]), manifest

    table = assert_ok(ansible.module(host.name, DUMP, dict(mode="table", database=scratch.db, cluster=scratch.cluster,
                                                           repository=scratch.repository, tables=["public.h2_t"])))
    manifest = assert_valid_manifest(table["manifest"])
    consistency = manifest["consistency"]
    assert consistency["snapshot"] and consistency["snapshots"] == {scratch.db: consistency["snapshot"]}
    assert manifest["tool"]["argv"][0].endswith("/pg_dump") and "--schema-only" in manifest["tool"]["argv"]
    assert "--snapshot=%s" % consistency["snapshot"] in manifest["tool"]["argv"]
    assert SUB_SECOND.match(manifest["started_at"]) and SUB_SECOND.match(manifest["finished_at"]), manifest


@pytest.mark.parametrize("source", ["primary15"])
def test_base_set_times_have_sub_second_precision(ansible, lab, source):
    source = lab.host(source)
    suffix = uuid.uuid4().hex[:6]
    path = "/var/backups/h2-bb-%s" % suffix
    backup1 = lab.host("backup1")
    backup1.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", path])
    try:
        done = assert_ok(ansible.module("backup1", "pgdr.backup.pg_basebackup", dict(
            login_host=source.address, login_user="postgres", login_password=lab.pg_password, checkpoint="fast",
            cluster="h2-" + suffix, repository={"type": "local", "path": path}, format="tar")))
        manifest = assert_valid_manifest(done["manifest"])
        assert SUB_SECOND.match(manifest["started_at"]) and SUB_SECOND.match(manifest["finished_at"]), manifest
        assert SUB_SECOND.match(manifest["physical"]["stop_time"]), manifest["physical"]
    finally:
        backup1.run(["rm", "-rf", path])


@pytest.mark.parametrize("extra_args,written,module_option", [
    (["-Fp"], "-F", "format"),
    (["--no-comments", "--form=plain"], "--form", "format"),
    (["-vj4"], "-j", "jobs"),
])
def test_an_owned_option_in_extra_args_fails_in_one_line_before_anything_is_written(ansible, host, scratch, extra_args, written, module_option):
    result = ansible.module(host.name, DUMP, dict(database=scratch.db, cluster=scratch.cluster, repository=scratch.repository,
                                                  extra_args=extra_args))
    assert result["_status"] == "failed"
    msg = result["msg"]
    assert msg.startswith("extra_args may not contain %s " % written) and "use the module option %s" % module_option in msg, msg
    assert "\n" not in msg.strip() and "Traceback" not in msg
    assert host.run(["ls", "-A", scratch.path]).stdout.strip() == ""


def test_session_role_reads_with_the_roles_privileges_and_bad_roles_fail_in_one_line(ansible, host, scratch):
    reader, login, stranger = scratch.role, "h2_login_" + scratch.suffix, "h2_stranger_" + scratch.suffix
    password = "Login-" + scratch.suffix
    scratch.roles += [login, stranger]
    scratch.sql("GRANT pg_read_all_data TO %s; CREATE ROLE %s LOGIN NOINHERIT PASSWORD %s; GRANT %s TO %s; CREATE ROLE %s NOLOGIN"
                % (ident(reader), ident(login), literal(password), ident(reader), ident(login), ident(stranger)), db="postgres")
    scratch.sql("CREATE TABLE public.h2_secret (id int, note text); INSERT INTO public.h2_secret SELECT g, 'n' || g FROM generate_series(1, 25) g; "
                "REVOKE ALL ON SCHEMA public FROM PUBLIC")
    as_login = dict(database=scratch.db, cluster=scratch.cluster, repository=scratch.repository,
                    login_host="127.0.0.1", login_user=login, login_password=password)

    # the login user alone reads nothing: the role's privileges are what makes the dump work
    alone = ansible.module(host.name, DUMP, as_login, become_postgres=False)
    assert alone["_status"] == "failed" and "cannot fingerprint table public.h2_secret" in alone["msg"] and "permission denied" in alone["msg"], alone["msg"]

    dumped = assert_ok(ansible.module(host.name, DUMP, dict(as_login, session_role=reader), become_postgres=False))
    manifest = assert_valid_manifest(dumped["manifest"])
    assert "--role=%s" % reader in manifest["tool"]["argv"] and manifest["options"]["session_role"] == reader
    assert {(t["table"], t["rows"]) for t in dumped["tables"]} == {("h2_secret", 25)}

    table = assert_ok(ansible.module(host.name, DUMP, dict(as_login, session_role=reader, mode="table", tables=["public.h2_secret"],
                                                           backup_id="table1"), become_postgres=False))
    assert [(t["table"], t["rows"]) for t in table["tables"]] == [("h2_secret", 25)]

    for role, expected in ((stranger, "login user %s may not SET ROLE %s" % (login, stranger)),
                           ("h2_nobody_" + scratch.suffix, "session_role h2_nobody_%s does not exist" % scratch.suffix)):
        refused = ansible.module(host.name, DUMP, dict(as_login, session_role=role, backup_id="refused"), become_postgres=False)
        assert refused["_status"] == "failed" and refused["msg"].startswith(expected), refused.get("msg")
        assert "\n" not in refused["msg"].strip()
    assert host.run(["ls", "-A", "%s/%s" % (scratch.path, scratch.cluster)]).stdout.split() == sorted([dumped["backup_id"], "table1"])


def test_an_older_pg_dump_in_pg_bin_dir_is_refused_and_a_newer_one_dumps_an_older_server(ansible, lab):
    newer, older = Scratch(lab.host("primary18")), Scratch(lab.host("primary15"))
    try:
        refused = ansible.module(newer.host.name, DUMP, dict(database=newer.db, cluster=newer.cluster, repository=newer.repository,
                                                             pg_bin_dir="/usr/lib/postgresql/15/bin"))
        assert refused["_status"] == "failed"
        assert re.match(r"^pg_dump in pg_bin_dir /usr/lib/postgresql/15/bin is version 15\.\d+ but the server is PostgreSQL 18, "
                        r"which needs pg_dump 18 or newer; point pg_bin_dir to such a client", refused["msg"]), refused["msg"]
        assert "\n" not in refused["msg"].strip() and newer.host.run(["ls", "-A", newer.path]).stdout.strip() == ""

        dumped = assert_ok(ansible.module(older.host.name, DUMP, dict(database=older.db, cluster=older.cluster, repository=older.repository,
                                                                      pg_bin_dir="/usr/lib/postgresql/18/bin")))
        manifest = assert_valid_manifest(dumped["manifest"])
        assert manifest["tool"]["version"].startswith("18.") and manifest["source"]["major"] == 15
        assert manifest["tool"]["argv"][0] == "/usr/lib/postgresql/18/bin/pg_dump"

        # pg_dump 18's output does not load into PostgreSQL 15 (pg_restore 18 sets transaction_timeout): refused before
        # anything is created; into PostgreSQL 18 it restores, with pg_restore 18 (pg_restore 15 cannot read the archive)
        back = older.db + "_back"
        refused = ansible.module(older.host.name, "pgdr.backup.restore_cluster", dict(
            cluster=older.cluster, repository=older.repository, backup_id=manifest["backup_id"], database=back))
        assert refused["_status"] == "failed" and "\n" not in refused["msg"].strip()
        assert refused["msg"].startswith("backup set %s was written by pg_dump 18, whose output PostgreSQL 15 cannot load"
                                         % manifest["backup_id"]), refused["msg"]
        assert older.sql("SELECT count(*) FROM pg_database WHERE datname = %s" % literal(back)) == "0"
        sftp = lab.sftp_repository("backup1", "/var/backups/h2-test-%s-cross" % older.suffix)
        copied = assert_ok(ansible.module(older.host.name, DUMP, dict(database=older.db, cluster=older.cluster, repository=sftp,
                                                                      pg_bin_dir="/usr/lib/postgresql/18/bin")))
        restored = assert_ok(ansible.module(newer.host.name, "pgdr.backup.restore_cluster", dict(
            cluster=older.cluster, repository=sftp, backup_id=copied["backup_id"], database=back)))
        assert restored["databases"][0]["verification"]["verified"] is True
    finally:
        newer.host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(older.db + "_back"))
        lab.host("backup1").run(["rm", "-rf", "/var/backups/h2-test-%s-cross" % older.suffix])
        newer.cleanup()
        older.cleanup()
