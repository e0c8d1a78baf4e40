"""wal_archive_config through ansible-playbook on the lab: settings, pgdr-wal destinations, verify, pg_receivewal."""

import json
import os
import time
import uuid

import pytest

from tests.lab import HostCommandError
from tests.phases import ON_PG15, ON_PG18

# restarts the primaries (archive_mode) and changes their archive settings
pytestmark = pytest.mark.exclusive

MODULE = "pgdr.backup.wal_archive_config"
MANAGED = ("wal_level", "archive_mode", "archive_command", "archive_library", "archive_timeout", "max_wal_senders", "max_replication_slots", "wal_keep_size")


def connection(lab, host):
    # the module runs as root (it installs the helper): log in over TCP with the superuser's password
    return dict(login_host=host.address, login_user="postgres", login_password=lab.pg_password)


def setting(host, name):
    return host.psql("SELECT setting FROM pg_settings WHERE name = '%s'" % name).strip()


def configured(host, name):
    rows = host.psql("SELECT setting FROM pg_file_settings WHERE name = '%s' ORDER BY seqno" % name).split()
    return rows[-1] if rows else None


def restart_server(host):
    host.run(
        [host.pg_bin_dir + "/pg_ctl", "-D", host.pg_data, "-l", os.path.dirname(host.pg_data) + "/postgresql.log", "-m", "fast", "-w", "-t", "60", "restart"],
        user="postgres",
    )


@pytest.fixture
def pristine(lab):
    """Hosts whose archive settings a test changes: put back (RESET, restart if needed) and left running."""
    touched = []
    yield touched.append
    for host in touched:
        for name in MANAGED:
            host.psql("ALTER SYSTEM RESET %s" % name)
        host.psql("SELECT pg_reload_conf()")
        time.sleep(0.3)
        if host.psql("SELECT count(*) FROM pg_settings WHERE pending_restart").strip() != "0" or setting(host, "archive_mode") != "off":
            restart_server(host)
        assert setting(host, "archive_mode") == "off"


@pytest.fixture
def suffix():
    return uuid.uuid4().hex[:6]


def assert_ok(result):
    assert result["_status"] in ("ok", "changed"), result.get("msg")
    return result


def local_archive(host, suffix):
    path = "/var/backups/pgdr-wal-%s" % suffix
    return dict(type="local", path=path)


def test_settings_idempotent_with_check_mode_diff_and_restart_only_when_needed(ansible, lab, host, pristine, suffix):
    pristine(host)
    name = "test-%s" % suffix
    archive = local_archive(host, suffix)
    args = dict(connection(lab, host), archive_mode="on", archive=archive, archive_name=name, wal_keep_size="0MB", archive_timeout="0")
    config = "/etc/pgdr/wal/%s.json" % name
    try:
        # check mode: says what would change, changes nothing (settings, helper config, archive folder)
        checked = assert_ok(ansible.module(host.name, MODULE, args, become_postgres=False, check=True, diff=True))
        assert checked["changed"] is True
        assert set(checked["diff"]["after"]) == {"archive_mode", "archive_command"}  # 0MB == 0, 0 == 0s
        assert checked["diff"]["before"]["archive_mode"] == "off"
        assert checked["restart_required"] is True
        assert configured(host, "archive_mode") is None and setting(host, "archive_mode") == "off"
        assert host.run(["test", "-e", config], check=False).returncode != 0
        assert host.run(["test", "-e", archive["path"]], check=False).returncode != 0

        # the change: archive_mode waits for a restart, which is not done without restart: true
        done = assert_ok(ansible.module(host.name, MODULE, args, become_postgres=False, diff=True))
        assert done["changed"] is True and done["restarted"] is False
        assert done["restart_required"] is True and done["pending_restart"] == ["archive_mode"]
        assert done["archive_command"] == "/usr/local/lib/pgdr/pgdr-wal --config %s push %%p %%f" % config
        assert configured(host, "archive_mode") == "on" and setting(host, "archive_mode") == "off"
        assert setting(host, "archive_command") == done["archive_command"] or setting(host, "archive_command") == "(disabled)"
        assert host.run(["stat", "-c", "%a %U", config]).stdout.split() == ["600", "postgres"]
        assert host.run(["stat", "-c", "%a %U", "/usr/local/lib/pgdr/pgdr-wal"]).stdout.split() == ["755", "root"]
        assert host.run(["stat", "-c", "%a %U", archive["path"]]).stdout.split() == ["700", "postgres"]

        # same again: nothing to change, but the restart is still owed
        again = assert_ok(ansible.module(host.name, MODULE, args, become_postgres=False))
        assert again["changed"] is False and again["restart_required"] is True
        assert again["executed_queries"] == []

        # restart: true restarts because it is needed, and waits until the server accepts connections
        started = host.psql("SELECT pg_postmaster_start_time()")
        restarted = assert_ok(ansible.module(host.name, MODULE, dict(args, restart=True), become_postgres=False))
        assert restarted["restarted"] is True and restarted["changed"] is True and restarted["restart_required"] is False
        assert setting(host, "archive_mode") == "on"
        assert host.psql("SELECT pg_postmaster_start_time()") != started

        # ... and only then: a rerun with restart: true leaves the server alone; verify proves archiving works
        started = host.psql("SELECT pg_postmaster_start_time()")
        verified = assert_ok(ansible.module(host.name, MODULE, dict(args, restart=True, verify=True), become_postgres=False))
        assert verified["changed"] is False and verified["restarted"] is False
        assert host.psql("SELECT pg_postmaster_start_time()") == started
        walfile = verified["verified"]["walfile"]
        assert host.run(["test", "-f", "%s/%s" % (archive["path"], walfile)]).returncode == 0
        assert verified["archiver"]["archived_count"] >= 1
        assert verified["archiver"]["last_archived_wal"] >= walfile
        assert any(s["slot_name"] for s in verified["slots"]) or verified["slots"] == []
    finally:
        host.run(["rm", "-rf", archive["path"], config])


@ON_PG15
def test_unwritable_destination_fails_verify_with_the_archivers_error(ansible, lab, pristine, suffix):
    host = lab.host("primary15")
    pristine(host)
    name = "test-%s" % suffix
    archive = local_archive(host, suffix)
    args = dict(connection(lab, host), archive_mode="on", archive=archive, archive_name=name, restart=True)
    try:
        assert_ok(ansible.module(host.name, MODULE, args, become_postgres=False))
        host.run(["chmod", "0500", archive["path"]])  # the archiver (postgres) can no longer write there
        failed = ansible.module(host.name, MODULE, dict(args, verify=True, verify_timeout=6), become_postgres=False)
        assert failed["_status"] == "failed"
        assert "was not archived" in failed["msg"] and "failed_count" in failed["msg"]
        assert "pgdr-wal: push" in failed["msg"] and "Permission denied" in failed["msg"]
        assert failed["archiver"]["failed_count"] > 0
        assert "Traceback" not in failed["msg"]

        host.run(["chmod", "0700", archive["path"]])  # fixed: the archiver catches up, nothing is missing
        fixed = assert_ok(ansible.module(host.name, MODULE, dict(args, verify=True, verify_timeout=60), become_postgres=False))
        assert host.run(["test", "-f", "%s/%s" % (archive["path"], failed["walfile"])]).returncode == 0
        assert fixed["verified"]["walfile"] > failed["walfile"]
    finally:
        host.run(["rm", "-rf", archive["path"], "/etc/pgdr/wal/%s.json" % name])


@ON_PG18
def test_s3_then_sftp_archive_verify_and_no_secret_in_output(ansible, lab, pristine, suffix):
    host = lab.host("primary18")
    backup = lab.host("backup1")
    pristine(host)
    name = "test-%s" % suffix
    s3 = dict(
        type="s3",
        endpoint_url=lab.s3["endpoint"],
        region=lab.s3["region"],
        bucket=lab.s3["bucket"],
        prefix="test-wal-%s" % suffix,
        access_key=lab.s3["access_key"],
        secret_key=lab.s3["secret_key"],
    )
    # pgdr-wal runs as postgres, with the key and pinned host keys the lab gives postgres on every host
    sftp = lab.sftp_repository(backup, "/var/backups/pgdr-wal-%s" % suffix)
    config = "/etc/pgdr/wal/%s.json" % name
    try:
        tasks = [
            {
                "name": "s3",
                MODULE: dict(connection(lab, host), archive_mode="on", archive=s3, archive_name=name, restart=True, verify=True),
                "ignore_errors": True,
            }
        ]
        run = ansible.play(host.name, tasks, become_postgres=False, verbosity=3, diff=True)
        result = assert_ok(run.result("s3", host.name))
        assert lab.s3["secret_key"] not in run.output and lab.pg_password not in run.output
        assert lab.s3["secret_key"] not in json.dumps(result)
        walfile = result["verified"]["walfile"]
        keys = lab.s3_client().list_objects_v2(Bucket=lab.s3["bucket"], Prefix="test-wal-%s/" % suffix).get("Contents", [])
        assert "test-wal-%s/%s" % (suffix, walfile) in [k["Key"] for k in keys]
        assert host.run(["stat", "-c", "%a %U", config]).stdout.split() == ["600", "postgres"]
        assert lab.s3["secret_key"] in host.run(["cat", config]).stdout  # only there

        # switching to SFTP is a reload, not a restart; the helper is unchanged, its config rewritten
        moved = assert_ok(
            ansible.module(
                host.name, MODULE, dict(connection(lab, host), archive_mode="on", archive=sftp, archive_name=name, verify=True), become_postgres=False
            )
        )
        assert moved["changed"] is True and moved["restarted"] is False and moved["restart_required"] is False
        assert moved["helper"]["changed"] is True
        walfile = moved["verified"]["walfile"]
        assert backup.run(["test", "-f", "%s/%s" % (sftp["path"], walfile)]).returncode == 0
        assert lab.s3["secret_key"] not in host.run(["cat", config]).stdout

        # restore side, as PostgreSQL runs it: postgres fetches over SFTP, falls back to .partial, missing -> exit 1
        fetch = ["/usr/local/lib/pgdr/pgdr-wal", "--config", config, "fetch"]
        got = host.run(fetch + [walfile, "/tmp/pgdr-fetch-%s" % suffix], user="postgres", check=False)
        assert got.returncode == 0, got.stderr
        digest = host.run(["sha256sum", "/tmp/pgdr-fetch-%s" % suffix]).stdout.split()[0]
        assert digest == backup.run(["sha256sum", "%s/%s" % (sftp["path"], walfile)]).stdout.split()[0]
        later = "%s%08X" % (walfile[:16], int(walfile[16:], 16) + 50)
        backup.run(["cp", "%s/%s" % (sftp["path"], walfile), "%s/%s.partial" % (sftp["path"], later)])
        partial = host.run(fetch + [later, "/tmp/pgdr-fetch-%s" % suffix], user="postgres", check=False)
        assert partial.returncode == 0, partial.stderr
        assert host.run(["sha256sum", "/tmp/pgdr-fetch-%s" % suffix]).stdout.split()[0] == digest
        absent = host.run(fetch + ["%s%08X" % (walfile[:16], int(walfile[16:], 16) + 51), "/tmp/pgdr-none"], user="postgres", check=False)
        assert (absent.returncode, absent.stderr) == (1, "")
    finally:
        host.run(["rm", "-f", config, "/tmp/pgdr-fetch-%s" % suffix])
        backup.run(["rm", "-rf", sftp["path"]])
        client = lab.s3_client()
        for item in client.list_objects_v2(Bucket=lab.s3["bucket"], Prefix="test-wal-%s/" % suffix).get("Contents", []):
            client.delete_object(Bucket=lab.s3["bucket"], Key=item["Key"])


def pid_alive(host, pid):
    """Running, not exited (a zombie waiting for its reaper has exited)."""
    stat = host.run(["cat", "/proc/%s/stat" % pid], check=False).stdout
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def remove_receiver(primary, backup, slot, directory, state_dir):
    """Whatever a receiver test left: its supervisor, its slot, its archive and state folders."""
    pid = backup.run(["cat", state_dir + "/supervisor.pid"], check=False).stdout.strip()
    if pid.isdigit():
        backup.run(["kill", pid], check=False)
        time.sleep(1)
    primary.psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s' AND NOT active" % slot)
    backup.run(["rm", "-rf", directory, state_dir])


@ON_PG15
def test_receiver_present_idempotent_and_absent(ansible, lab, suffix):
    primary = lab.host("primary15")
    backup = lab.host("backup1")
    slot = "test_wal_%s" % suffix
    directory = "/var/backups/pgdr-receivewal-%s" % suffix
    receiver = dict(directory=directory, slot=slot)
    args = dict(connection(lab, primary), receiver=receiver)
    state_dir = "/var/lib/pgdr/receivewal/%s" % slot
    try:
        checked = assert_ok(ansible.module(backup.name, MODULE, args, become_postgres=False, check=True))
        assert checked["changed"] is True and checked["receiver"]["running"] is False
        assert primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'" % slot).strip() == "0"

        started = assert_ok(ansible.module(backup.name, MODULE, dict(args, verify=True), become_postgres=False))
        info = started["receiver"]
        assert started["changed"] is True and info["running"] is True
        assert info["slot_info"]["slot_type"] == "physical" and info["slot_info"]["active"] is True
        walfile = started["verified"]["walfile"]
        assert backup.run(["test", "-f", "%s/%s" % (directory, walfile)]).returncode == 0
        # WAL written after the switch streams into the next segment, held as .partial until it is full
        primary.psql("CREATE TABLE IF NOT EXISTS pgdr_wal_probe (n int); DROP TABLE pgdr_wal_probe")
        deadline = time.time() + 10
        while not any(f.endswith(".partial") for f in backup.run(["ls", directory]).stdout.split()):
            assert time.time() < deadline, backup.run(["ls", directory]).stdout
            time.sleep(0.2)

        # a new SSH session later: still running (it outlived the first one), same settings -> no change
        again = assert_ok(ansible.module(backup.name, MODULE, args, become_postgres=False))
        assert again["changed"] is False and again["receiver"]["pid"] == info["pid"]
        assert pid_alive(backup, info["supervisor_pid"]) and pid_alive(backup, info["pid"])
        lag = [s for s in again["slots"] if s["slot_name"] == slot][0]["lag_bytes"]
        assert lag is not None and lag >= 0

        # pg_receivewal dies: the supervisor starts a new one
        backup.run(["kill", str(info["pid"])])
        deadline = time.time() + 15
        while time.time() < deadline:
            pid = backup.run(["cat", state_dir + "/receivewal.pid"], check=False).stdout.strip()
            if pid and pid != str(info["pid"]) and pid_alive(backup, pid):
                break
            time.sleep(0.3)
        else:
            pytest.fail("pg_receivewal was not restarted: %s" % backup.run(["cat", state_dir + "/receiver.log"]).stdout)

        gone = assert_ok(ansible.module(backup.name, MODULE, dict(args, receiver=dict(slot=slot, state="absent")), become_postgres=False))
        assert gone["changed"] is True and gone["receiver"]["running"] is False
        assert not pid_alive(backup, info["supervisor_pid"])
        assert primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'" % slot).strip() == "0"
        assert backup.run(["test", "-f", "%s/%s" % (directory, walfile)]).returncode == 0  # the archive is kept

        still = assert_ok(ansible.module(backup.name, MODULE, dict(args, receiver=dict(slot=slot, state="absent")), become_postgres=False))
        assert still["changed"] is False
    finally:
        remove_receiver(primary, backup, slot, directory, state_dir)


@ON_PG15
def test_receiver_managed_by_a_role_with_only_login_replication(ansible, lab, suffix):
    """The documented setup: the receiver's task logs in as a replicator that may not read data_directory, the log or pg_file_settings."""
    primary = lab.host("primary15")
    backup = lab.host("backup1")
    role = "pgdr_repl_%s" % suffix
    password = "pw-%s" % uuid.uuid4().hex
    slot = "test_wal_%s" % suffix
    directory = "/var/backups/pgdr-receivewal-%s" % suffix
    state_dir = "/var/lib/pgdr/receivewal/%s" % slot
    args = dict(login_host=primary.address, login_user=role, login_password=password, receiver=dict(directory=directory, slot=slot))
    primary.psql("CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s'" % (role, password))
    try:
        # the premise: this role really cannot read what a settings task reads
        for query in ("SELECT count(*) FROM pg_file_settings", "SELECT current_setting('data_directory')", "SELECT pg_current_logfile()"):
            with pytest.raises(HostCommandError, match="permission denied|pg_read_all_settings"):
                primary.psql(query, user=role, password=password)

        checked = assert_ok(ansible.module(backup.name, MODULE, args, become_postgres=False, check=True))
        assert checked["changed"] is True and checked["settings"] == {} and checked["restart_required"] is False

        started = assert_ok(ansible.module(backup.name, MODULE, args, become_postgres=False))
        assert started["changed"] is True and started["receiver"]["running"] is True
        assert started["receiver"]["slot_info"]["slot_type"] == "physical"
        assert [s["slot_name"] for s in started["slots"] if s["slot_name"] == slot] == [slot]
        assert "archived_count" in started["archiver"]

        again = assert_ok(ansible.module(backup.name, MODULE, args, become_postgres=False))
        assert again["changed"] is False and again["receiver"]["pid"] == started["receiver"]["pid"]

        gone = assert_ok(ansible.module(backup.name, MODULE, dict(args, receiver=dict(slot=slot, state="absent")), become_postgres=False))
        assert gone["changed"] is True and gone["receiver"]["running"] is False
        assert primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'" % slot).strip() == "0"
    finally:
        remove_receiver(primary, backup, slot, directory, state_dir)
        primary.psql("DROP ROLE IF EXISTS %s" % role)
