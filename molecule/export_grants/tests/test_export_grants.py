"""Verifier: the export user can read, and a real pg_dump as that user works."""

import os

import pytest

testinfra_hosts = ["primary15", "primary18"]


def psql(host, query, db="molecule_shop"):
    psql_bin = "/usr/lib/postgresql/%s/bin/psql" % host.ansible.get_variables()["pg_major"]
    cmd = host.run("runuser -u postgres -- %s -h /run/postgresql -X -At -d %s -c %s", psql_bin, db, query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


@pytest.mark.parametrize("check", [
    "has_schema_privilege('molecule_exporter', 'ledger', 'USAGE')",
    "has_table_privilege('molecule_exporter', 'ledger.entries', 'SELECT')",
])
def test_privilege_granted(host, check):
    assert psql(host, "SELECT " + check) == "t"


def test_default_privileges_cover_future_tables(host):
    psql(host, "SET ROLE molecule_owner; CREATE TABLE IF NOT EXISTS ledger.later (x int)")
    assert psql(host, "SELECT has_table_privilege('molecule_exporter', 'ledger.later', 'SELECT')") == "t"


def test_no_predefined_role_was_used(host):
    members = psql(host, "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                         "WHERE r.rolname = 'molecule_exporter'")
    assert members == "0"


def test_pg_dump_as_the_export_user(host):
    major = host.ansible.get_variables()["pg_major"]
    pg_dump = os.path.join("/usr/lib/postgresql/%s/bin" % major, "pg_dump")
    cmd = host.run("PGPASSWORD=Molecule-Exp0rt %s -h 127.0.0.1 -U molecule_exporter -d molecule_shop -f /dev/null",
                   pg_dump)
    assert cmd.rc == 0, cmd.stderr
