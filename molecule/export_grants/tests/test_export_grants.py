"""Verifier: the export user can read, and a real pg_dump as that user works; playbooks/grants.yml in check
mode on a user that has nothing yet reports what it would grant, defers the verdict and changes nothing."""

import json
import os
import re
import subprocess

import pytest

testinfra_hosts = ["primary15", "primary18"]

PROJECT_DIR = os.environ.get("MOLECULE_PROJECT_DIRECTORY") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def psql(host, query, db="molecule_shop"):
    psql_bin = "/usr/lib/postgresql/%s/bin/psql" % host.ansible.get_variables()["pg_major"]
    cmd = host.run("runuser -u postgres -- %s -h /run/postgresql -X -At -d %s -c %s", psql_bin, db, query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def grants_playbook(*extra_args):
    """playbooks/grants.yml through the collection (as AWX runs it); returns (rc, output, custom stats of the run)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_SHOW_CUSTOM_STATS="1",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.pop("ANSIBLE_ROLES_PATH", None)  # the role must come from the collection, not molecule's roles_path
    ansible_playbook = os.path.join(PROJECT_DIR, ".venv", "bin", "ansible-playbook")
    proc = subprocess.run(
        [ansible_playbook, "-i", os.path.join(PROJECT_DIR, ".lab", "inventory.yml"), os.path.join(PROJECT_DIR, "playbooks", "grants.yml"),
         "-e", "target_hosts=primary15:primary18", "-e", "ansible_become_method=ansible.builtin.su", *extra_args],
        env=env, capture_output=True, text=True, check=False, cwd=PROJECT_DIR)
    stats = {}
    for line in proc.stdout.splitlines():
        if line.startswith("\tRUN: "):
            stats = json.loads(line[len("\tRUN: "):])
    return proc.returncode, proc.stdout + proc.stderr, stats


@pytest.fixture(scope="module")
def check_run_on_fresh_user():
    # the answers as an AWX survey sends them: text fields, a bool as a string, blanks as "" or null
    return grants_playbook("--check", "-e", json.dumps(dict(
        export_grants_user="molecule_fresh", export_grants_use_predefined_roles="false", export_grants_databases="molecule_shop, ",
        export_grants_profile="logical", export_grants_verify="true", export_grants_user_password="Molecule-Fr3sh",
        export_grants_login_host="", export_grants_login_port=None, export_grants_ssl_mode=None)))


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


def test_check_mode_on_a_fresh_user_passes_and_defers_the_verdict(check_run_on_fresh_user):
    rc, output, stats = check_run_on_fresh_user
    assert rc == 0, output[-3000:]
    summaries = stats["pgdr_export_grants"]
    assert sorted(summaries) == ["primary15", "primary18"]
    for summary in summaries.values():
        assert summary["check_mode"] is True
        assert summary["verdict"] == "deferred"
        assert summary["missing"] > 0  # the preflight saw the state before the grants
        assert 'GRANT USAGE ON SCHEMA "ledger" TO "molecule_fresh"' in summary["statements"]
        assert summary["databases"] == ["molecule_shop"]
    assert "Molecule-Fr3sh" not in output


def test_check_mode_granted_nothing(host, check_run_on_fresh_user):
    assert check_run_on_fresh_user[0] == 0
    assert psql(host, "SELECT has_schema_privilege('molecule_fresh', 'ledger', 'USAGE')") == "f"
    assert psql(host, "SELECT has_table_privilege('molecule_fresh', 'ledger.entries', 'SELECT')") == "f"


def test_check_mode_with_nothing_to_grant_keeps_the_verdict():
    """molecule_exporter already has every grant: no statement is pending, so the preflight's verdict is final."""
    rc, output, stats = grants_playbook("--check", "-e", json.dumps(dict(
        export_grants_user="molecule_exporter", export_grants_use_predefined_roles=False, export_grants_databases=["molecule_shop"])))
    assert rc == 0, output[-3000:]
    for summary in stats["pgdr_export_grants"].values():
        assert (summary["statements"], summary["missing"], summary["verdict"]) == ([], 0, "verified")


def test_removed_login_dict_is_refused():
    rc, output, _errors = grants_playbook("-e", json.dumps(dict(export_grants_user="molecule_exporter", export_grants_login={"login_host": "127.0.0.1"})))
    assert rc != 0
    assert "export_grants_login (a dict) was removed: set the flat variables export_grants_login_host" in " ".join(output.split()), output


def test_check_mode_with_nothing_to_grant_fails_when_access_is_missing():
    """An empty profile grants nothing, so in check mode the preflight of molecule_fresh is final and fails."""
    rc, output, _errors = grants_playbook("--check", "-e", json.dumps(dict(
        export_grants_user="molecule_fresh", export_grants_profile=[], export_grants_databases=["molecule_shop"])))
    assert rc != 0
    # as JSON or YAML, wrapped or not: compare the words, quotes unescaped
    words = " ".join(output.replace('\\"', '"').split())
    # 2 objects, or 3 once test_default_privileges_cover_future_tables has added ledger.later
    assert re.search(r'role "molecule_fresh" cannot read [23] object\(s\), first schema ledger in database "molecule_shop"; '
                     r'nothing is left to grant', words), output
