"""The pure rules of physical restores: targets, their bounds, recovery settings, postgresql.auto.conf."""

import datetime

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.physical import restore as pr

UTC = datetime.timezone.utc


def manifest(stop_lsn="0/5000100", stop_time="2026-11-22T10:00:00Z"):
    return {"backup_id": "b1", "stop_lsn": stop_lsn, "finished_at": stop_time, "physical": {"stop_time": stop_time}}


def test_lsn_and_segment_arithmetic():
    assert pr.lsn_to_int("0/5000100") == 0x5000100
    assert pr.lsn_to_int("1/0") == 1 << 32
    assert pr.segment_end("000000010000000000000005") == 6 * 16 * 1024 * 1024
    assert pr.segment_end("000000010000000100000000") == (1 << 32) + 16 * 1024 * 1024
    assert pr.segment_end("000000010000000000000005.partial") == 6 * 16 * 1024 * 1024
    assert pr.segment_end("00000002.history") is None
    with pytest.raises(PgdrError, match="not an LSN"):
        pr.lsn_to_int("5000100")


def test_target_time_needs_a_zone():
    assert pr.parse_target_time("2026-11-22 10:15:00+00") == datetime.datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
    assert pr.parse_target_time("2026-11-22T10:15:00.25Z").microsecond == 250000
    with pytest.raises(PgdrError, match="needs a date, a time and a time zone"):
        pr.parse_target_time("2026-11-22 10:15:00")


def test_one_target_at_most():
    assert pr.recovery_target({}) == ("latest", None)
    assert pr.recovery_target({"recovery_target_name": "before_upgrade"}) == ("name", "before_upgrade")
    assert pr.recovery_target({"recovery_target": "immediate"}) == ("immediate", None)
    with pytest.raises(PgdrError, match="give one recovery target"):
        pr.recovery_target({"recovery_target_name": "x", "recovery_target_xid": "42"})


def test_targets_before_the_backup_end_are_refused():
    with pytest.raises(PgdrError, match="lies before the end of backup b1"):
        pr.check_target_bounds(manifest(), ("lsn", "0/5000000"), ("000000010000000000000009", None), True)
    with pytest.raises(PgdrError, match="lies before the end of backup b1"):
        pr.check_target_bounds(manifest(), ("time", "2026-11-22 09:59:59+00"), None, True)


def test_targets_after_the_newest_archived_wal_are_refused():
    newest = ("000000010000000000000006", datetime.datetime(2026, 11, 22, 10, 5, tzinfo=UTC))
    pr.check_target_bounds(manifest(), ("lsn", "0/6FFFFFF"), newest, True)
    with pytest.raises(PgdrError, match="after the newest archived WAL"):
        pr.check_target_bounds(manifest(), ("lsn", "0/7000000"), newest, True)
    pr.check_target_bounds(manifest(), ("time", "2026-11-22 10:04:00+00"), newest, True)
    with pytest.raises(PgdrError, match="after the newest archived WAL"):
        pr.check_target_bounds(manifest(), ("time", "2026-11-22 10:06:00+00"), newest, True)
    with pytest.raises(PgdrError, match="holds no segment"):
        pr.check_target_bounds(manifest(), ("lsn", "0/6000000"), ("", None), True)


def test_targets_past_the_backup_need_an_archive():
    with pytest.raises(PgdrError, match="give archive"):
        pr.check_target_bounds(manifest(), ("name", "p1"), None, False)
    pr.check_target_bounds(manifest(), ("immediate", None), None, False)
    pr.check_target_bounds(manifest(), ("name", "p1"), None, True)  # unlistable archive: PostgreSQL decides


def test_recovery_settings_are_explicit_and_turn_archiving_off():
    settings = dict(pr.recovery_settings({"recovery_target_action": None}, ("name", "p1"), "cp /a/%f %p"))
    assert settings == {
        "restore_command": "cp /a/%f %p",
        "recovery_target_name": "p1",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",  # never PostgreSQL's default pause
        "archive_mode": "off",
    }
    standby = dict(pr.recovery_settings({"standby": {"primary_conninfo": "host=p1", "slot": "s1"}, "archive_mode": "on"}, ("latest", None), None))
    assert standby == {"primary_conninfo": "host=p1", "primary_slot_name": "s1", "archive_mode": "on"}


def test_auto_conf_replaces_an_earlier_restore_and_quotes():
    first = pr.auto_conf_text("work_mem = '8MB'\nrestore_command = 'old'\n", [("restore_command", "cp '%f' %p"), ("archive_mode", "off")])
    assert first.splitlines() == ["work_mem = '8MB'", pr.AUTO_CONF_MARK, "restore_command = 'cp ''%f'' %p'", "archive_mode = 'off'"]
    again = pr.auto_conf_text(first, [("recovery_target_inclusive", False)])
    assert again.splitlines() == ["work_mem = '8MB'", pr.AUTO_CONF_MARK, "recovery_target_inclusive = off"]


def test_telling_log_line_prefers_fatal():
    text = "LOG:  starting\nFATAL:  recovery ended before configured recovery target was reached\nLOG:  shut down\n"
    assert pr.telling_log_line(text) == "FATAL:  recovery ended before configured recovery target was reached"


def test_restored_wal_files_counts_distinct_segments():
    text = ('LOG:  restored log file "000000010000000000000086" from archive\n'
            'LOG:  restored log file "00000002.history" from archive\n'
            'LOG:  restored log file "000000010000000000000087" from archive\n'
            'LOG:  restored log file "000000010000000000000087" from archive\n')
    assert pr.restored_wal_files(text) == 2


def test_probackup_backup_becomes_the_facts_restores_check(tmp_path):
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import restore as pbr

    backup = {"id": "TOUSRY", "stop-lsn": "0/4000100", "recovery-time": "2026-11-22 10:00:05+00", "end-time": "2026-11-22 10:00:06+00",
              "server-version": "15"}
    facts = pbr.pseudo_manifest(backup, "7440", "main")
    assert facts["source"] == {"major": 15, "system_identifier": "7440"}
    assert facts["physical"]["stop_time"] == "2026-11-22T10:00:05Z" and facts["physical"]["chain"] == ["TOUSRY"]
    with pytest.raises(PgdrError, match="lies before the end of backup TOUSRY"):
        pr.check_target_bounds(facts, ("time", "2026-11-22 10:00:04+00"), None, True)

    wal = tmp_path / "wal" / "main"
    wal.mkdir(parents=True)
    assert pbr.newest_archived(str(tmp_path), "main") == ("", None)
    for name in ("000000010000000000000003.gz", "000000010000000000000004", "00000002.history", "000000010000000000000002.00000028.backup"):
        (wal / name).write_bytes(b"x")
    segment, mtime = pbr.newest_archived(str(tmp_path), "main")
    assert segment == "000000010000000000000004" and mtime.tzinfo is not None


def test_a_replay_of_the_whole_archive_must_reach_its_newest_segment():
    newest = ("000000010000000000000006", None)
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/6000100"}, newest) is None
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/6000000"}, newest) is None
    short = pr.archive_shortfall(("latest", None), {"reached_lsn": "0/5FFFF00"}, newest)
    assert short.startswith("recovery ended at 0/5FFFF00, before the newest archived segment 000000010000000000000006")
    assert pr.archive_shortfall(("name", "p1"), {"reached_lsn": "0/5000000"}, newest) is None  # a target stops earlier on purpose
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/5000000"}, ("", None)) is None  # an empty archive
    assert pr.archive_shortfall(("latest", None), {"reached_lsn": "0/5000000"}, None) is None  # an archive that cannot be listed
