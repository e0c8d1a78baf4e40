"""Settings comparison and planning (no server), and the receiver's supervisor with a stand-in program."""

import os
import signal
import time

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive_settings
from ansible_collections.pgdr.backup.plugins.module_utils.wal import receiver as receivewal
from ansible_collections.pgdr.backup.plugins.modules import wal_archive_config


def module_options(**given):
    """wal_archive_config's params as Ansible validates them (defaults applied, relations checked): (params, errors)."""
    result = ArgumentSpecValidator(wal_archive_config.argument_spec(), **wal_archive_config.ARGUMENT_RELATIONS).validate(given)
    return result.validated_parameters, result.error_messages


def settings(**given):
    params, errors = module_options(**given)
    assert errors == []
    return typed(archive_settings.SettingsOptions, params)


def receiver_options(**given):
    return typed(receivewal.ReceiverOptions, given)


@pytest.mark.parametrize(
    "a, b, vartype, unit",
    [
        ("0", "0MB", "integer", "MB"),
        ("1GB", "1024", "integer", "MB"),
        ("1024MB", "1GB", "integer", "MB"),
        ("60s", "1min", "integer", "s"),
        ("0", "0s", "integer", "s"),
        ("5min", "300", "integer", "s"),
        ("on", "true", "bool", None),
        ("Replica", "replica", "enum", None),
        ("128MB", "16384", "integer", "8kB"),
    ],
)
def test_equal_values_normalize_alike(a, b, vartype, unit):
    assert archive_settings.normalize(a, vartype, unit) == archive_settings.normalize(b, vartype, unit)


@pytest.mark.parametrize(
    "a, b, vartype, unit",
    [("1GB", "1000", "integer", "MB"), ("on", "always", "enum", None), ("cp %p /a", "cp %p /b", "string", None), ("59s", "1min", "integer", "s")],
)
def test_different_values_stay_different(a, b, vartype, unit):
    assert archive_settings.normalize(a, vartype, unit) != archive_settings.normalize(b, vartype, unit)


def meta(configured, running=None, vartype="string", unit=None, context="sighup", pending=False):
    return dict(configured=configured, running=configured if running is None else running, vartype=vartype, unit=unit, context=context, pending_restart=pending)


def test_plan_changes_only_what_differs_and_pending_restart():
    current = dict(
        archive_mode=meta("off", vartype="enum", context="postmaster"),
        wal_keep_size=meta("0", vartype="integer", unit="MB"),
        archive_command=meta(""),
        archive_library=meta(""),
    )
    wanted = dict(archive_mode="on", wal_keep_size="0MB", archive_command="cp %p /x/%f", archive_library="")
    changes = archive_settings.plan_changes(current, wanted)
    assert changes == [("archive_mode", "off", "on"), ("archive_command", "", "cp %p /x/%f")]
    assert archive_settings.restart_pending(current) == []
    current["archive_mode"] = meta("on", running="off", vartype="enum", context="postmaster")
    assert archive_settings.restart_pending(current) == ["archive_mode"]
    assert archive_settings.plan_changes(current, dict(archive_mode="on")) == []


def test_unknown_setting_is_refused_unless_it_is_being_cleared():
    assert archive_settings.plan_changes({}, dict(archive_library="")) == []
    with pytest.raises(PgdrError, match="no setting archive_library"):
        archive_settings.plan_changes({}, dict(archive_library="basic_archive"))


def test_desired_settings_from_options():
    spec = dict(type="local", path="/wal")
    wanted = archive_settings.desired_settings(settings(archive=spec, archive_mode="on", max_wal_senders=10), "16-main")
    assert wanted["archive_command"].endswith("/etc/pgdr/wal/16-main.json push %p %f")
    assert wanted["archive_library"] == "" and wanted["archive_mode"] == "on" and wanted["max_wal_senders"] == "10"
    assert archive_settings.desired_settings(settings(archive_library="basic_archive"), "n") == dict(archive_library="basic_archive", archive_command="")
    # one way to archive: declared in the module, so Ansible refuses the task before it runs
    for given in (dict(archive=spec, archive_command="cp"), dict(archive_library="x", archive_command="cp")):
        _params, errors = module_options(**given)
        assert any("mutually exclusive" in error for error in errors), errors


def test_last_archive_error_prefers_the_helpers_own_line(tmp_path):
    log = tmp_path / "postgresql.log"
    log.write_text(
        "LOG:  checkpoint starting\n"
        "pgdr-wal: push 000000010000000000000007 failed: creating x failed: Permission denied\n"
        "LOG:  archive command failed with exit code 1\n"
        "DETAIL:  The failed archive command was: /usr/local/lib/pgdr/pgdr-wal --config c push pg_wal/0007 0007\n"
    )
    assert "Permission denied" in archive_settings.last_archive_error(str(log))
    log.write_text("LOG:  archive command failed with exit code 3\nDETAIL:  The failed archive command was: false\n")
    assert archive_settings.last_archive_error(str(log)) == ("LOG:  archive command failed with exit code 3 DETAIL:  The failed archive command was: false")
    assert archive_settings.last_archive_error(str(tmp_path / "missing")) is None


def test_receivewal_argv_and_systemd_unit():
    argv = receivewal.receivewal_argv("/usr/lib/postgresql/16/bin/pg_receivewal", "/wal/db1", "arch", synchronous=True, compress=5)
    assert argv == ["/usr/lib/postgresql/16/bin/pg_receivewal", "--directory", "/wal/db1", "--slot", "arch", "--no-password", "--synchronous", "--compress=5"]
    unit = receivewal.unit_text("arch", ["/bin/pg_receivewal", "-D", "/w 1%"], {"PGHOST": "db$1"}, "postgres")
    assert 'ExecStart="/bin/pg_receivewal" "-D" "/w 1%%"' in unit
    assert 'Environment="PGHOST=db$$1"' in unit and "Restart=always" in unit and "User=postgres" in unit
    with pytest.raises(PgdrError, match="not a valid slot name"):
        receivewal.Receiver(receiver_options(slot="Bad-Slot"), None)


def test_supervisor_keeps_a_program_running_and_stops_by_pidfile(tmp_path):
    """The supervisor itself, with sleep standing in for pg_receivewal: detaches, restarts, stops."""
    receiver = receivewal.Receiver(receiver_options(slot="unit_test", state_dir=str(tmp_path / "state"), service_manager="supervisor"), None)
    os.makedirs(receiver.state_dir, mode=0o700)
    config = b'{"argv": ["sleep", "300"], "env": {"PATH": "/usr/bin:/bin"}, "slot": "unit_test"}\n'
    assert receiver._present_supervisor(config, None, check_mode=True) == ["start pg_receivewal"]
    assert receiver.running() is False
    try:
        assert receiver._present_supervisor(config, None, check_mode=False) == ["start pg_receivewal"]
        supervisor = receiver.supervisor_pid()
        assert supervisor and receiver.running()
        assert os.getsid(supervisor) != os.getsid(0)  # its own session: a closing SSH session does not take it along
        first = wait_for(receiver.receivewal_pid)
        assert receiver._present_supervisor(config, None, check_mode=False) == []  # same settings: nothing to do
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: receiver.receivewal_pid() if receiver.receivewal_pid() != first else None)
        assert second != first
        assert "exited" in (tmp_path / "state" / "receiver.log").read_text()
        changed = config.replace(b"300", b"301")
        assert receiver._present_supervisor(changed, None, check_mode=False) == ["restart pg_receivewal (settings changed)"]
        assert receiver.supervisor_pid() != supervisor
    finally:
        receiver._stop_supervisor()
    assert receiver.running() is False and not (tmp_path / "state" / "supervisor.pid").exists()


def wait_for(probe, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_server_archived_compares_segments_not_history_files():
    def stats(last):
        return dict(last_archived_wal=last)

    walfile = "000000010000000000000005"
    assert archive_settings.server_archived(stats(walfile), walfile)
    assert archive_settings.server_archived(stats("000000010000000000000006.00000028.backup"), walfile)
    assert not archive_settings.server_archived(stats("000000010000000000000004"), walfile)
    assert not archive_settings.server_archived(stats("00000002.history"), walfile)
    assert not archive_settings.server_archived(stats(None), walfile)


def test_verify_waits_for_the_server_as_well_as_the_store(tmp_path, monkeypatch):
    # the segment is already in the folder, but the archiver has not counted it yet: not verified until it has
    walfile = "000000010000000000000005"
    (tmp_path / walfile).write_bytes(b"x")
    reports = iter([dict(last_archived_wal="000000010000000000000004"), dict(last_archived_wal=walfile)])
    seen = []

    def archiver_stats(conn):
        seen.append(next(reports))
        return dict(seen[-1], failed_count=0, last_failed_wal=None, last_failed_time=None)

    monkeypatch.setattr(archive_settings, "archiver_stats", archiver_stats)
    archive = settings(archive={"type": "local", "path": str(tmp_path)}).archive
    done = archive_settings.wait_archived(None, walfile, 5, archive=archive, poll=0.01)
    assert len(seen) == 2 and done["archiver"]["last_archived_wal"] == walfile
