"""Settings from the server's command line (-c): applied when equal, never waiting for a restart (issue 11 item 16)."""

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive_settings


class FakeCursor:
    """Answers read_settings' two queries: pg_settings rows, then pg_file_settings rows."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.rows = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, query, params=None):
        self.rows = self.answers.pop(0)

    def fetchall(self):
        return self.rows


class FakeConnection:
    def __init__(self, settings_rows, file_rows):
        self.answers = [settings_rows, file_rows]

    def cursor(self):
        return FakeCursor(self.answers)


# name, setting, vartype, unit, context, pending_restart, boot_val, source: as pg_settings gives them
SETTINGS = [
    ("archive_mode", "on", "enum", None, "postmaster", True, "off", "command line"),  # ALTER SYSTEM wrote off, -c on wins
    ("archive_command", "cp %p /x/%f", "string", None, "sighup", False, "", "command line"),
    ("max_wal_senders", "5", "integer", None, "postmaster", False, "10", "command line"),  # in no file at all
    ("wal_level", "replica", "enum", None, "postmaster", False, "replica", "configuration file"),
    ("archive_timeout", "0", "integer", "s", "sighup", False, "0", "default"),
    ("wal_keep_size", "0", "integer", "MB", "sighup", False, "0", "default"),
]
FILES = [("archive_mode", "off"), ("wal_level", "logical")]  # wal_level logical waits for a restart


def current():
    return archive_settings.read_settings(FakeConnection(SETTINGS, FILES))


def test_a_command_line_setting_is_configured_as_it_runs():
    settings = current()
    assert {name: settings[name]["configured"] for name in settings} == {
        "archive_mode": "on", "archive_command": "cp %p /x/%f", "max_wal_senders": "5", "wal_level": "logical",
        "archive_timeout": "0", "wal_keep_size": "0"}
    assert settings["archive_mode"]["source"] == "command line" and settings["archive_mode"]["pending_restart"] is False


def test_a_command_line_setting_never_waits_for_a_restart():
    # before: archive_mode (file says off) and max_wal_senders (default 10) were pending forever, so restart: true
    # restarted on every run; a restart starts the server with the same command line
    assert archive_settings.restart_pending(current()) == ["wal_level"]


def test_a_command_line_setting_with_the_wanted_value_is_applied():
    wanted = dict(archive_mode="on", archive_command="cp %p /x/%f", max_wal_senders="5", archive_timeout="60")
    assert archive_settings.plan_changes(current(), wanted) == [("archive_timeout", "0", "60")]


@pytest.mark.parametrize("name,value", [("archive_mode", "always"), ("archive_command", "cp %p /y/%f"), ("max_wal_senders", "8")])
def test_another_value_than_the_command_lines_fails_naming_the_fix(name, value):
    with pytest.raises(PgdrError) as failure:
        archive_settings.plan_changes(current(), {name: value})
    msg = failure.value.msg
    assert msg.startswith("%s is " % name) and "on the server's command line (-c %s=..." % name in msg
    assert "overrides ALTER SYSTEM" in msg and "remove -c %s from the server's start command" % name in msg
    assert "\n" not in msg


def test_settings_from_files_still_wait_for_a_restart_and_change():
    settings = current()
    assert archive_settings.plan_changes(settings, dict(wal_level="replica")) == [("wal_level", "logical", "replica")]
    settings["wal_level"] = dict(settings["wal_level"], configured="replica")
    assert archive_settings.restart_pending(settings) == []
