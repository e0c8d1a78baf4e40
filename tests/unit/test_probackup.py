"""module_utils.probackup against real pg_probackup 2.5.15 outputs, and the stand-in's fidelity to them.

The samples in tests/probackup_standin/samples/ were captured from a real pg_probackup 2.5.15 (PostgreSQL 15);
see that folder's README.md. Tests that run the stand-in here need no lab: only python3.
"""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as pb

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN_DIR = os.path.join(HERE, "..", "probackup_standin")
SAMPLES = os.path.join(STANDIN_DIR, "samples")
STANDIN = os.path.join(STANDIN_DIR, "pg_probackup.py")
PG = pb.Program("/usr/bin/pg_probackup", pb.PG, "2.5.15")
GS = pb.Program("/usr/bin/gs_probackup", pb.GS, "2.4.2")


def instance_config(**settings):
    """The instance settings of a task that sets ``settings``, as probackup_instance types them."""
    return typed(pb.InstanceConfig, settings)


def sample(name):
    with open(os.path.join(SAMPLES, name)) as f:
        return f.read()


def sample_json(name):
    return json.loads(sample(name))


# ------------------------------------------------------------------ parsing real outputs


def test_version_lines_name_the_tool():
    assert pb.parse_version(sample("00-pg_probackup-version.stdout.txt")) == ("pg_probackup", "2.5.15")
    assert pb.parse_version("gs_probackup (openGauss 5.0.0 build a07d57c3) 2.4.2\n") == ("gs_probackup", "2.4.2")
    assert pb.parse_version("pg_dump (PostgreSQL) 15.18") is None


def test_show_config_no_scale_units_compares_with_module_values():
    config = pb.parse_show_config(sample("10-show-config-format-json-no-scale-units.stdout.json"))
    assert config["system-identifier"] == 7710612375541675971  # > 2**53: must not pass through a float
    current = pb.current_config(config)
    assert current["pgport"] == "55432" and current["archive-timeout"] == "300" and current["compress-algorithm"] == "zlib"
    settings = dict(retention_redundancy=2, retention_window=7, compress_algorithm="zlib", compress_level=1, pgport=55432, archive_timeout=300)
    assert pb.config_changes(current, pb.desired_config(instance_config(**settings), PG)) == {}
    settings.update(retention_redundancy=3, log_level_file="info", pg_data="/data/15/")
    changes = pb.config_changes(current, pb.desired_config(instance_config(**settings), PG))
    assert changes == {"retention-redundancy": "3", "log-level-file": "INFO", "pgdata": "/data/15"}


def test_set_config_argv_carries_only_the_changes():
    argv = pb.set_config_argv(PG, "/bk", "main", {"retention-redundancy": "3", "pgdata": "/data"})
    assert argv == ["/usr/bin/pg_probackup", "set-config", "-B", "/bk", "--instance=main", "--retention-redundancy=3", "--pgdata=/data"]


def test_show_json_gives_backup_facts():
    catalog = pb.parse_show(sample("17-show-format-json.stdout.json"))
    backups = pb.backups_of(catalog, "main")
    assert [b["id"] for b in backups] == ["TOUSSJ", "TOUSS3", "TOUSRY"]
    page = pb.backup_summary(backups[0])
    assert page["mode"] == "PAGE" and page["wal"] == "ARCHIVE" and page["parent_backup_id"] == "TOUSS3"
    assert page["start_lsn"] == "0/6000028" and page["stop_lsn"] == "0/70000B8" and page["data_bytes"] == 1081573
    assert page["duration"] == 2 and page["status"] == "OK" and page["expire_time"] is None
    assert pb.backup_summary(pb.backups_of(sample_json("29-show-backup-id-after-ttl-format-json.stdout.json"))[0])["expire_time"] == "2026-11-22 13:14:28+00"
    assert pb.backups_of(sample_json("45-error-show-nonexistent-backup-id-format-json.stdout.json"), "main") == []
    failed = pb.backup_summary(pb.backups_of(sample_json("54-show-after-failed-backup-format-json.stdout.json"))[0])
    assert failed["status"] == "ERROR" and failed["data_bytes"] is None and failed["recovery_time"] is None


def test_latest_valid_backup_skips_invalid_statuses_and_broken_chains():
    assert pb.latest_valid_backup(sample("17-show-format-json.stdout.json"))["id"] == "TOUSSJ"
    assert pb.latest_valid_backup(sample_json("54-show-after-failed-backup-format-json.stdout.json"))["id"] == "TOUSSJ"  # ERROR is newest
    assert pb.latest_valid_backup(sample_json("63-show-after-delete-expired-format-json.stdout.json"))["id"] == "TOUSUJ"
    assert pb.latest_valid_backup(sample_json("69-show-after-corruption-format-json.stdout.json")) is None
    # before validate notices, a child of a CORRUPT parent still says OK: it is not restorable either
    catalog = sample_json("63-show-after-delete-expired-format-json.stdout.json")
    catalog[0]["backups"][1]["status"] = "CORRUPT"
    assert pb.latest_valid_backup(catalog) is None
    # an incremental whose parent was deleted is not restorable; the older FULL is
    backups = sample_json("17-show-format-json.stdout.json")[0]["backups"]
    del backups[1]
    assert pb.latest_valid_backup(backups)["id"] == "TOUSRY"
    two = sample_json("17-show-format-json.stdout.json") + [{"instance": "other", "backups": []}]
    with pytest.raises(PgdrError, match="2 instances"):
        pb.latest_valid_backup(two)
    assert pb.latest_valid_backup(two, instance="other") is None


def test_invalid_backups_after_corruption():
    backups = pb.backups_of(sample_json("69-show-after-corruption-format-json.stdout.json"))
    assert pb.invalid_backups(backups) == [("TOUSUJ", "ORPHAN"), ("TOUSU2", "CORRUPT")]


def test_archive_timelines():
    summary = pb.archive_summary(pb.parse_archive(sample("19-show-archive-format-json.stdout.json")))
    assert summary == [
        dict(instance="main", tli=1, parent_tli=0, switchpoint="0/0", min_segno="000000010000000000000001", max_segno="000000010000000000000007",
             n_segments=7, size=5436276, zratio=21.60, status="OK", lost_segments=[], backups=["TOUSSJ", "TOUSS3", "TOUSRY"])
    ]  # fmt: skip
    after = pb.archive_summary(pb.parse_archive(sample("64-show-archive-after-delete-wal-format-json.stdout.json")))
    assert after[0]["min_segno"] == "000000010000000000000009" and after[0]["n_segments"] == 3
    with pytest.raises(PgdrError, match="show --archive"):
        pb.parse_archive(sample("17-show-format-json.stdout.json"))


def test_retention_verdicts_of_a_dry_run():
    verdicts = pb.retention_verdicts(sample("61-delete-expired-dry-run-redundancy-1.stderr.txt"))
    assert [(v["id"], v["verdict"]) for v in verdicts] == [("TOUSUJ", "Active"), ("TOUSU2", "Active"), ("TOUSSJ", "Expired")]


# ------------------------------------------------------------------ errors of the real tool

ERROR_SAMPLES = [
    ("40-error-add-instance-twice", "add-instance", "Instance 'main' backup directory already exists", "already registered"),
    ("41-error-backup-nonexistent-instance", "backup", "Instance 'nosuch' does not exist in this backup catalog", "add the instance first"),
    ("42-error-init-nonempty-dir", "init", "The backup catalog already exists and is not empty", "not empty and is not a backup catalog"),
    ("43-error-restore-into-nonempty-dir", "restore", 'Restore destination is not empty: "$RESTORE_PGDATA"', "empty folder"),
    ("44-error-show-nonexistent-instance-format-json", "show", "Instance 'nosuch' does not exist", "add the instance first"),
    ("47-error-validate-nonexistent-backup-id", "validate", "Requested backup ZZZZZZ is not found.", "no such backup id"),
    ("48-error-delete-nonexistent-backup-id", "delete", "Failed to find backup ZZZZZZ, cannot delete", "no such backup id"),
    ("49-error-unknown-command", "frobnicate", 'Unknown subcommand "frobnicate"', "does not have that subcommand"),
    ("50-error-missing-backup-path", "show",
     "No backup catalog path specified. Please specify it either using environment variable BACKUP_PATH or command line option "
     "--backup-path (-B)", "set backup_path"),
    ("51-error-invalid-option-value", "set-config", 'Invalid compress algorithm value "foo"', "compression algorithm"),
    ("52-error-unknown-option", "show", "Option '--no-such-option' requires an argument.", "rejected an option"),
    ("53-error-backup-connection-refused", "backup", "could not connect to database postgres: connection to server at \"localhost\" "
     "(127.0.0.1), port 1 failed: Connection refused Is the server running on that host and accepting TCP/IP connections?", "pghost/pgport"),
    ("71-validate-corrupt-backup-id", "validate", "Backup TOUSU2 is corrupt.", "take a new FULL backup"),
    ("72-error-restore-from-corrupt-backup", "restore", "Backup satisfying target options is not found.", "CORRUPT, ORPHAN and ERROR"),
    ("75-error-backup-nonexistent-instance-log-format-console-json", "backup", "Instance 'nosuch' does not exist", "add the instance"),
]  # fmt: skip


@pytest.mark.parametrize("step,subcommand,reason,hint", ERROR_SAMPLES, ids=[s[0][:2] for s in ERROR_SAMPLES])
def test_every_sampled_error_becomes_one_clear_line(step, subcommand, reason, hint):
    index = {row["step"]: row for row in sample_json("index.json")}
    assert index[step]["exit_code"] == 1
    msg = pb.failure_message("pg_probackup", subcommand, 1, sample(step + ".stderr.txt"))
    assert msg.startswith("pg_probackup %s failed (exit code 1): " % subcommand)
    assert reason in msg and hint in msg and "\n" not in msg


def test_validate_without_error_line_reports_its_last_warning():
    stderr = sample("68-validate-corrupt-instance.stderr.txt")
    assert pb.error_lines(stderr) == []
    assert pb.failure_message("pg_probackup", "validate", 1, stderr).endswith("(exit code 1): Some backups are not valid")
    json_log = sample("73-validate-corrupt-log-format-console-json.stderr.txt")
    assert pb.failure_message("pg_probackup", "validate", 1, json_log).endswith("Some backups are not valid")


# ------------------------------------------------------------------ argv per tool


def test_backup_argv_and_what_gs_probackup_lacks():
    assert pb.backup_argv(PG, "/bk", "main", "delta", stream=True, threads=2, note="n 1", delete_expired=True) == [
        "/usr/bin/pg_probackup", "backup", "-B", "/bk", "--instance=main", "-b", "DELTA", "--stream", "-j", "2", "--note=n 1", "--delete-expired"]  # fmt: skip
    assert pb.backup_argv(PG, "/bk", "main", "PAGE")[-2:] == ["-b", "PAGE"]  # archive WAL mode: no --stream
    assert "--ttl=30d" in pb.backup_argv(PG, "/bk", "main", "FULL", ttl="30d")
    with pytest.raises(PgdrError, match="gs_probackup has no backup mode PAGE"):
        pb.backup_argv(GS, "/bk", "og", "PAGE")
    with pytest.raises(PgdrError, match="gs_probackup has no backup mode DELTA"):
        pb.backup_argv(GS, "/bk", "og", "DELTA")
    with pytest.raises(PgdrError, match="gs_probackup has no --stream"):
        pb.backup_argv(GS, "/bk", "og", "FULL", stream=True)
    assert pb.backup_argv(GS, "/bk", "og", "PTRACK", rw_timeout=300)[-2:] == ["-t", "300"]
    with pytest.raises(PgdrError, match="pg_probackup has no --rw-timeout"):
        pb.backup_argv(PG, "/bk", "main", "FULL", rw_timeout=300)
    with pytest.raises(PgdrError, match="need stream"):
        pb.backup_argv(PG, "/bk", "main", "FULL", temp_slot=True)
    with pytest.raises(PgdrError, match="ttl and expire_time"):
        pb.backup_argv(PG, "/bk", "main", "FULL", ttl="1d", expire_time="2030-01-01 00:00:00+00")


def test_compression_per_tool():
    assert pb.desired_config(instance_config(compress_algorithm="lz4"), GS) == {"compress-algorithm": "lz4"}
    with pytest.raises(PgdrError, match="pg_probackup has no compression algorithm lz4"):
        pb.desired_config(instance_config(compress_algorithm="lz4"), PG)
    with pytest.raises(PgdrError, match="remote-libpath"):
        pb.desired_config(instance_config(remote_libpath="/opt/og/lib"), PG)


def test_delete_validate_and_pin_argv():
    assert pb.delete_argv(PG, "/bk", "main", expired=True, delete_wal=True, dry_run=True)[-3:] == ["--delete-expired", "--delete-wal", "--dry-run"]
    assert pb.delete_argv(PG, "/bk", "main", status="error")[-1] == "--status=ERROR"
    with pytest.raises(PgdrError, match="one of backup_id, delete_expired or status"):
        pb.delete_argv(PG, "/bk", "main", backup_id="X", expired=True)
    with pytest.raises(PgdrError, match="needs backup_id"):
        pb.delete_argv(PG, "/bk", "main")
    assert pb.validate_argv(PG, "/bk") == ["/usr/bin/pg_probackup", "validate", "-B", "/bk"]
    assert pb.validate_argv(PG, "/bk", "main", target={"kind": "time", "value": "2026-11-21 13:14:44+00"})[-1] == (
        "--recovery-target-time=2026-11-21 13:14:44+00"
    )
    with pytest.raises(PgdrError, match="needs instance"):
        pb.validate_argv(PG, "/bk", backup_id="X")
    assert pb.set_backup_argv(PG, "/bk", "main", "TOUSS3", ttl="1d")[-3:] == ["-i", "TOUSS3", "--ttl=1d"]
    assert pb.set_backup_argv(PG, "/bk", "main", "TOUSS3", ttl="0")[-1] == "--ttl=0"
    with pytest.raises(PgdrError, match="not an interval"):
        pb.set_backup_argv(PG, "/bk", "main", "TOUSS3", ttl="a week")


def test_restore_argv_pg_probackup():
    argv = pb.restore_argv("/usr/bin/pg_probackup", "/bk", "main", "/restore", target={"kind": "immediate"})
    assert argv == [
        "/usr/bin/pg_probackup",
        "restore",
        "-B",
        "/bk",
        "--instance=main",
        "-D",
        "/restore",
        "--recovery-target=immediate",
        "--recovery-target-action=promote",
    ]  # the sample 34 command line, action always explicit
    argv = pb.restore_argv(PG, "/bk", "main", "/r", backup_id="TOUSSJ", threads=4, incremental_mode="checksum",
                           target={"kind": "xid", "value": "727"}, target_action="pause", inclusive=False, timeline="latest",
                           db_include=["app", "audit"])  # fmt: skip
    assert argv[7:] == ["-i", "TOUSSJ", "-j", "4", "-I", "checksum", "--recovery-target-xid=727", "--recovery-target-inclusive=false",
                        "--recovery-target-timeline=latest", "--recovery-target-action=pause", "--db-include=app", "--db-include=audit"]  # fmt: skip
    # without a target the real tool refuses --recovery-target-action (and PostgreSQL would ignore it)
    assert not [a for a in pb.restore_argv(PG, "/bk", "main", "/r", backup_id="latest") if a.startswith("--recovery-target-action")]
    assert pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "latest", "value": None})[-1] == "--recovery-target-action=promote"
    assert "--recovery-target=latest" in pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "latest", "value": None})
    assert "--recovery-target-lsn=0/70000B8" in pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "lsn", "value": "0/70000B8"})
    assert "--recovery-target-name=before-upgrade" in pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "name", "value": "before-upgrade"})
    assert "--db-exclude=big" in pb.restore_argv(PG, "/bk", "main", "/r", db_exclude=["big"])
    for kwargs, message in [
        (dict(target={"kind": "lsn", "value": "70000B8"}), "not an LSN"),
        (dict(target={"kind": "xid", "value": "12a"}), "not a transaction id"),
        (dict(target={"kind": "time"}), "needs a value"),
        (dict(target={"kind": "immediate", "value": "x"}), "takes no value"),
        (dict(target={"kind": "soon", "value": "x"}), "is not one of"),
        (dict(target={"kind": "immediate"}, inclusive=True), "inclusive applies only"),
        (dict(incremental_mode="fast"), "checksum or lsn"),
        (dict(target={"kind": "immediate"}, target_action="stop"), "not one of pause, promote, shutdown"),
        (dict(db_include=["a"], db_exclude=["b"]), "exclude each other"),
        (dict(timeline="newest"), "not current, latest"),
    ]:
        with pytest.raises(PgdrError, match=message):
            pb.restore_argv(PG, "/bk", "main", "/r", **kwargs)


def test_restore_argv_gs_probackup_refuses_what_it_lacks():
    argv = pb.restore_argv("gs_probackup", "/bk", "og", "/r", backup_id="X", incremental_mode="lsn",
                           target={"kind": "time", "value": "2026-01-01 00:00:00+00"}, target_action=None)  # fmt: skip
    assert argv == ["gs_probackup", "restore", "-B", "/bk", "--instance=og", "-D", "/r", "-i", "X", "-I", "lsn",
                    "--recovery-target-time=2026-01-01 00:00:00+00"]  # fmt: skip
    for kwargs, message in [
        (dict(target={"kind": "name", "value": "x"}), "no --recovery-target-action"),  # the default promote: gs_probackup callers pass None
        (dict(target={"kind": "immediate"}, target_action=None), "no --recovery-target=immediate"),
        (dict(target_action=None, db_exclude=["big"]), "no partial restore"),
        (dict(target_action=None, timeline="2"), "no --recovery-target-timeline"),
    ]:
        with pytest.raises(PgdrError, match=message):
            pb.restore_argv("/opt/og/bin/gs_probackup", "/bk", "og", "/r", **kwargs)


# ------------------------------------------------------------------ recovery_target_time as the tool parses it


@pytest.mark.parametrize("given, passed", [
    ("2026-12-06 23:05:16+00", "2026-12-06 23:05:16+00"),
    ("2026-12-06T23:05:16+00", "2026-12-06 23:05:16+00"),  # the tool would stop at the T and check against midnight
    ("2026-12-06 23:05:16Z", "2026-12-06 23:05:16+00"),
    ("2026-12-06 23:05:16 UTC", "2026-12-06 23:05:16+00"),
    ("2026-12-06 23:05:16.000000+00", "2026-12-06 23:05:16+00"),  # a zero fraction is the same instant
    ("2026-12-06 23:05:16+05:30", "2026-12-06 23:05:16+05:30"),
    ("2026-12-06 23:05:16+0530", "2026-12-06 23:05:16+05:30"),
    ("2026-12-06 23:05:16 -03", "2026-12-06 23:05:16-03"),
])  # fmt: skip
def test_recovery_target_time_is_passed_in_the_form_the_tool_reads_as_postgresql_does(given, passed):
    option = "--recovery-target-time=" + passed
    for program in (PG, GS):
        assert pb.validate_argv(program, "/bk", "main", target={"kind": "time", "value": given})[-1] == option
        assert option in pb.restore_argv(program, "/bk", "main", "/r", target={"kind": "time", "value": given}, target_action=None)
    # the same instant for the tool's own parser (ported in the stand-in, checked against the real binary below)
    from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import parse_target_time

    assert standin_module().tool_parse_time(passed) == parse_target_time(given).timestamp()


def test_recovery_target_time_with_a_fraction_of_a_second_is_refused_naming_both_whole_seconds():
    value = "2026-12-06 23:05:16.405805+00"  # straight from SELECT now()
    expected = (
        "recovery_target_time '2026-12-06 23:05:16.405805+00' has a fraction of a second, which pg_probackup does not take; give whole "
        "seconds: '2026-12-06 23:05:16+00' leaves out what committed in the 0.405805 s before the target, '2026-12-06 23:05:17+00' "
        "takes in what committed in the 0.594195 s after it"
    )
    for build in (
        lambda: pb.validate_argv(PG, "/bk", "main", target={"kind": "time", "value": value}),
        lambda: pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "time", "value": value}),
        lambda: pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "time", "value": value}, inclusive=False),
    ):
        with pytest.raises(PgdrError) as refused:
            build()
        assert refused.value.msg == expected
    # the later whole second keeps the offset and crosses midnight; gs_probackup names itself
    later = r"'2027-01-01 00:00:00\+05:30' takes in .* 0.5 s after it$"
    with pytest.raises(PgdrError, match=r"^recovery_target_time '2026-12-31T23:59:59.5\+05:30' .* which gs_probackup does not take; give whole "
                       r"seconds: '2026-12-31 23:59:59\+05:30' leaves out .* 0.5 s before the target, " + later):  # fmt: skip
        pb.validate_argv(GS, "/bk", "og", target={"kind": "time", "value": "2026-12-31T23:59:59.5+05:30"})


def test_recovery_target_time_without_a_time_zone_is_refused():
    # the tool would read it in its own TZ, PostgreSQL in the server's timezone setting
    with pytest.raises(PgdrError, match="needs a date, a time and a time zone"):
        pb.validate_argv(PG, "/bk", "main", target={"kind": "time", "value": "2026-12-06 23:05:16"})
    with pytest.raises(PgdrError, match="needs a date, a time and a time zone"):
        pb.restore_argv(PG, "/bk", "main", "/r", target={"kind": "time", "value": "yesterday"})


# ------------------------------------------------------------------ the stand-in against the same samples


def standin(args, env=None, personality=None):
    full_env = dict(os.environ, LC_ALL="C.UTF-8", **(env or {}))
    full_env.pop("BACKUP_PATH", None)
    if personality:
        full_env["PROBACKUP_STANDIN_PERSONALITY"] = personality
    return subprocess.run([sys.executable, STANDIN, *args], capture_output=True, text=True, env=full_env, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def catalog(tmp_path):
    """A catalog with instance main configured as in sample 07, and the FULL backup of sample 66 (no data files)."""
    root = tmp_path / "catalog"
    (root / "wal" / "main").mkdir(parents=True)
    instance = root / "backups" / "main"
    (instance / "TOUSU2").mkdir(parents=True)
    (instance / "pg_probackup.conf").write_text(sample("07-file-catalog-instance-pg_probackup.conf.txt"))
    (instance / "TOUSU2" / "backup.control").write_text(sample("66-file-catalog-backup.control-TOUSU2.txt"))
    (instance / "TOUSU2" / "backup_content.control").write_text("")
    return root


def real(text, catalog):
    return text.replace("$BACKUP_PATH", str(catalog))


def test_standin_show_config_prints_what_the_real_tool_printed(catalog):
    for args, step in [([], "08-show-config"), (["--format=json"], "09-show-config-format-json"),
                       (["--format=json", "--no-scale-units"], "10-show-config-format-json-no-scale-units")]:  # fmt: skip
        done = standin(["show-config", "-B", str(catalog), "--instance=main", *args])
        suffix = ".stdout.json" if "json" in step else ".stdout.txt"
        assert (done.returncode, done.stdout, done.stderr) == (0, sample(step + suffix), ""), step


def test_standin_show_json_of_a_backup_matches_the_real_listing(catalog):
    done = standin(["show", "-B", str(catalog), "--instance=main", "--format=json"])
    assert done.returncode == 0
    real_tousu2 = pb.backups_of(sample_json("63-show-after-delete-expired-format-json.stdout.json"))[1]
    assert json.loads(done.stdout) == [{"instance": "main", "backups": [real_tousu2]}]
    assert list(json.loads(done.stdout)[0]["backups"][0]) == list(real_tousu2)  # same keys in the same order
    plain = standin(["show", "-B", str(catalog), "--instance=main", "-i", "TOUSU2"])
    assert plain.stdout == sample("66-file-catalog-backup.control-TOUSU2.txt")


@pytest.mark.parametrize("step,args", [
    ("41-error-backup-nonexistent-instance", ["backup", "-B", "{B}", "--instance=nosuch", "-b", "FULL", "--stream"]),
    ("42-error-init-nonempty-dir", ["init", "-B", "{B}"]),
    ("44-error-show-nonexistent-instance-format-json", ["show", "-B", "{B}", "--instance=nosuch", "--format=json"]),
    ("45-error-show-nonexistent-backup-id-format-json", ["show", "-B", "{B}", "--instance=main", "-i", "ZZZZZZ", "--format=json"]),
    ("46-error-show-nonexistent-backup-id-plain", ["show", "-B", "{B}", "--instance=main", "-i", "ZZZZZZ"]),
    ("47-error-validate-nonexistent-backup-id", ["validate", "-B", "{B}", "--instance=main", "-i", "ZZZZZZ"]),
    ("48-error-delete-nonexistent-backup-id", ["delete", "-B", "{B}", "--instance=main", "-i", "ZZZZZZ"]),
    ("49-error-unknown-command", ["frobnicate", "-B", "{B}"]),
    ("50-error-missing-backup-path", ["show", "--instance=main"]),
    ("51-error-invalid-option-value", ["set-config", "-B", "{B}", "--instance=main", "--compress-algorithm=foo"]),
    ("52-error-unknown-option", ["show", "-B", "{B}", "--instance=main", "--no-such-option"]),
])  # fmt: skip
def test_standin_error_paths_match_the_real_tool(catalog, step, args):
    row = {r["step"]: r for r in sample_json("index.json")}[step]
    done = standin([a.replace("{B}", str(catalog)) for a in args])
    stdout_name = row["stdout_file"]
    assert done.returncode == row["exit_code"]
    assert done.stderr == real(sample(row["stderr_file"]), catalog)
    assert done.stdout == sample(stdout_name)


def test_standin_gs_personality_refuses_what_gs_probackup_lacks(catalog):
    assert standin(["version"], personality="gs_probackup").stdout.startswith("gs_probackup ")
    stream = standin(["backup", "-B", str(catalog), "--instance=main", "-b", "FULL", "--stream"], personality="gs_probackup")
    assert stream.returncode == 1 and "'--stream'" in stream.stderr
    page = standin(["backup", "-B", str(catalog), "--instance=main", "-b", "PAGE"], personality="gs_probackup")
    assert (page.returncode, page.stderr) == (1, 'ERROR: Invalid backup-mode "PAGE"\n')
    push = standin(["archive-push", "-B", str(catalog), "--instance=main", "--wal-file-name=x"], personality="gs_probackup")
    assert (push.returncode, push.stderr) == (1, 'ERROR: Unknown subcommand "archive-push"\n')
    for option in ("--recovery-target=immediate", "--recovery-target-action=promote", "--db-include=app"):
        done = standin(["restore", "-B", str(catalog), "--instance=main", "-D", "/nonexistent", option], personality="gs_probackup")
        assert done.returncode == 1 and "'%s'" % option.split("=", maxsplit=1)[0] in done.stderr
    rw = standin(["backup", "-B", str(catalog), "--instance=main", "-b", "FULL", "-t", "30"])
    assert rw.returncode == 1 and "invalid option -- 't'" in rw.stderr  # pg_probackup has no -t
    lz4 = standin(["set-config", "-B", str(catalog), "--instance=main", "--compress-algorithm=lz4"], personality="gs_probackup")
    assert (lz4.returncode, lz4.stderr) == (0, "")


# what the real pg_probackup 2.5.15 said to validate --recovery-target-time=<value>: accepted (then looked for a
# backup) or "Invalid value for '--recovery-target-time' option"; captured once from the built binary
REAL_TIME_PARSER = [
    ("2026-12-06 23:05:16.405805+00", False), ("2026-12-06 23:05:16+00", True), ("2026-12-06T23:05:16+00", True),
    ("2026-12-06 23:05:16Z", False), ("2026-12-06 23:05:16 UTC", False), ("2026-12-06 23:05:16+05:30", True),
    ("2026-12-06 23:05:16+0530", True), ("2026-12-06 23:05:16-03", True), ("2026-12-06 23:05:16 +02", True),
    ("2026-12-06 23:05:16+05:30:15", True), ("2026-12-06 23:05:16+16", False), ("2026-12-06 23:05:16+", False),
    ("2026-12-06 23:05:16", True), ("2026-12-06", True), ("2026-12", False), ("2026-12-06 23:05:16.000+00", False),
    ("2026/12/06 23.05.16+00", True), ("26-12-06 23:05:16+00", True), ("2026-12-06 23:05", True),
    ("2026-12-06 23:05:16+00 x", False), ("20261206 230516", True),
]  # fmt: skip


def standin_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pg_probackup_standin", STANDIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standin_parses_a_recovery_target_time_as_the_real_tool_does():
    parse = standin_module().tool_parse_time
    assert [(value, parse(value) is not None) for value, _accepted in REAL_TIME_PARSER] == REAL_TIME_PARSER
    assert parse("2026-12-06 23:05:16+05:30") == parse("2026-12-06 17:35:16+00") == parse("2026-12-06 17:35:16", utc_default=True)
    # the real tool stops at a 'T': 2026-12-07T23:59:59+00 found no backup of 01:02:57 that day, 2026-12-08T00:00:01+00 did
    assert parse("2026-12-07T23:59:59+00", utc_default=True) == parse("2026-12-07 00:00:00+00")


def test_standin_refuses_a_fractional_recovery_target_time_in_the_real_tools_words(catalog):
    value = "2026-11-21 13:15:40.405805+00"
    for command in (["validate"], ["restore", "-D", "/nonexistent"]):
        done = standin([command[0], "-B", str(catalog), "--instance=main", *command[1:], "--recovery-target-time=" + value])
        assert (done.returncode, done.stderr) == (1, "ERROR: Invalid value for '--recovery-target-time' option '%s'\n" % value)
    # a 'T' reads as midnight, before the backup's recovery time (13:15:39): as the real tool, no backup satisfies it
    midnight = standin(["validate", "-B", str(catalog), "--instance=main", "--recovery-target-time=2026-11-21T13:15:40+00"], env={"TZ": "UTC"})
    assert (midnight.returncode, midnight.stderr) == (1, "ERROR: Backup satisfying target options is not found.\n")
    spaced = standin(["validate", "-B", str(catalog), "--instance=main", "--recovery-target-time=2026-11-21 13:15:40+00"], env={"TZ": "UTC"})
    assert spaced.returncode == 0 and "Validate of backup TOUSU2 completed." in spaced.stderr
    # and the module passes the spaced form
    assert pb.validate_argv(PG, str(catalog), "main", target={"kind": "time", "value": "2026-11-21T13:15:40+00"})[-1] == (
        "--recovery-target-time=2026-11-21 13:15:40+00"
    )


def test_standin_retention_dry_run_wording(catalog):
    """The real dry run of sample 61, replayed on one real backup.control: the per-backup line and the summary."""
    done = standin(["delete", "-B", str(catalog), "--instance=main", "--delete-expired", "--retention-redundancy=1", "--retention-window=0",
                    "--dry-run"])  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.returncode == 0
    assert lines[0] == "INFO: Evaluate backups by retention"
    assert lines[1].startswith("INFO: Backup TOUSU2, mode: FULL, status: OK. Redundancy: 1/1, Time Window: ") and lines[1].endswith("d/0d. Active")
    assert lines[-3:] == sample("30-delete-expired-dry-run.stderr.txt").splitlines()[-3:]
    assert pb.retention_verdicts(done.stderr) == [dict(id="TOUSU2", mode="FULL", status="OK", verdict="Active")]


# ------------------------------------------------------------------ restore: postgresql.auto.conf after the tool


def test_restored_auto_conf_keeps_the_tools_recovery_lines_after_an_earlier_restores_mark():
    from ansible_collections.pgdr.backup.plugins.module_utils.physical.restore import AUTO_CONF_MARK, auto_conf_text
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup.restore import restored_auto_conf

    header = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"
    # the backed-up cluster had been restored by restore_cluster: its file ends with our section
    backed_up = auto_conf_text(header + "shared_buffers = '256MB'\n", [("archive_mode", "off"), ("work_mem", "8MB")])
    assert AUTO_CONF_MARK in backed_up
    # what pg_probackup restore appends to it (the real tool's lines, tests/probackup_standin/samples)
    tool_lines = sample("35-file-restored-postgresql.auto.conf.txt").split("\n\n", 1)[1]
    existing = backed_up + "\n" + tool_lines

    text = restored_auto_conf(existing, [("archive_mode", "off"), ("max_connections", "50")])

    lines = text.splitlines()
    restore_command = [line for line in lines if line.startswith("restore_command = ")]
    assert restore_command == [line for line in tool_lines.splitlines() if line.startswith("restore_command = ")]
    for line in ("recovery_target = 'immediate'", "recovery_target_timeline = 'current'", "recovery_target_action = 'promote'"):
        assert line in lines
    assert text.count(AUTO_CONF_MARK) == 1  # only this restore's section is ours now
    assert lines[lines.index(AUTO_CONF_MARK) :] == [AUTO_CONF_MARK, "archive_mode = 'off'", "max_connections = '50'"]
    assert [line for line in lines if line.startswith("archive_mode")] == ["archive_mode = 'off'"]
    assert "shared_buffers = '256MB'" in lines and "work_mem = '8MB'" in lines  # the backed-up cluster's settings stay


class _StoppedCluster:
    pg_data = "/nonexistent/pgdr-unit/data"

    def status(self):
        return "stopped"


def _probackup_restore(tmp_path, program, **target):
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import restore as pbr
    from tests.unit.test_physical_review import restore_options

    options = restore_options(pbr.ProbackupRestoreOptions, probackup=dict(backup_path=str(tmp_path), instance="og"), backup_id="latest", **target)
    backup = {"id": "TOUSU2", "stop-lsn": "0/2000100", "server-version": "15", "end-time": "2026-11-21 13:00:00+00"}
    manifest = pbr.pseudo_manifest(backup, "7312345678901234567", "og")
    return pbr.ProbackupRestore(options, _StoppedCluster(), pb.Probackup(program, str(tmp_path)), backup, manifest, connect=None)


@pytest.mark.parametrize(
    "target",
    [
        dict(recovery_target_time="2026-11-21 14:00:00+00"),
        dict(recovery_target_lsn="0/3000000"),
        dict(recovery_target_xid="1234"),
        dict(recovery_target_name="before-upgrade"),
        dict(recovery_target="immediate"),
    ],
)
def test_gs_probackup_restore_to_a_target_is_refused_before_anything_changes(tmp_path, target):
    restore = _probackup_restore(tmp_path, GS, **target)
    with pytest.raises(PgdrError) as refused:
        restore.plan()
    assert refused.value.msg.startswith("restore_cluster restores a gs_probackup backup only to the end of the archive (no recovery_target_*)")
    assert "openGauss pauses at a target" in refused.value.msg and "\n" not in refused.value.msg
    assert restore.was_running is None  # refused before the server was even looked at


def test_pg_probackup_restore_to_a_target_passes_that_check(tmp_path):
    restore = _probackup_restore(tmp_path, PG, recovery_target_time="2026-11-21 14:00:00+00")
    with pytest.raises(PgdrError, match="the WAL archive holds no segment"):  # the next check, on an empty catalog
        restore.plan()


def test_pg_probackup_restore_to_a_fractional_time_is_refused_in_plan_before_anything_is_looked_at(tmp_path):
    restore = _probackup_restore(tmp_path, PG, recovery_target_time="2026-11-21 14:00:00.25+00")
    with pytest.raises(PgdrError, match="has a fraction of a second"):
        restore.plan()
    assert restore.was_running is None  # check mode reports it too: nothing was looked at or changed

# ------------------------------------------------------------------ delete_wal: what a dry run says would be purged


def test_wal_purge_ranges_of_the_real_tools_runs():
    assert pb.wal_purge_ranges(sample("61-delete-expired-dry-run-redundancy-1.stderr.txt")) == [
        {"timeline": 1, "first": "000000010000000000000001", "last": "000000010000000000000006"}
    ]
    assert pb.wal_purge_ranges(sample("62-delete-expired-delete-wal-redundancy-1.stderr.txt")) == [
        {"timeline": 1, "first": "000000010000000000000001", "last": "000000010000000000000009"}
    ]
    assert pb.wal_purge_ranges(sample("30-delete-expired-dry-run.stderr.txt")) == []  # "There is no WAL to purge"


def _standin_catalog(catalog):
    from ansible_collections.pgdr.backup.plugins.module_utils.core import commands

    env = dict(os.environ, LC_ALL="C.UTF-8")
    env.pop("BACKUP_PATH", None)
    return pb.Probackup(pb.Program(STANDIN, pb.PG, "2.5.15"), str(catalog), env=env, run=lambda argv, **kw: commands.run([sys.executable, *argv], **kw))


@pytest.mark.parametrize("old_wal, changed", [(True, True), (False, False)], ids=["wal-to-purge", "nothing-to-purge"])
def test_delete_wal_in_check_mode_reports_changed_when_the_dry_run_would_purge(catalog, old_wal, changed):
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance as probackup_instance

    wal = catalog / "wal" / "main"
    # TOUSU2 (the only backup, kept) starts in segment 9: segments 5-8 are older than any backup needs
    for number in range(5 if old_wal else 9, 11):
        (wal / ("0000000100000000000000%02X" % number)).write_bytes(b"\0" * 1024)
    before = sorted(os.listdir(wal))
    options = probackup_instance.options_from(
        dict(backup_path=str(catalog), instance="main", backup_id=None, delete_expired=False, status=None, dry_run=False, delete_wal=True, merge_expired=False)
    )
    result = dict(changed=False, would_run=[])
    probackup_instance.delete_backups(_standin_catalog(catalog), options, result, check_mode=True)
    assert result["changed"] is changed
    assert result["would_delete"] == [] and result["deleted"] == [] and result["wal_purged"] == 0
    if old_wal:
        assert result["would_purge"] == [{"timeline": 1, "first": "000000010000000000000005", "last": "000000010000000000000009"}]
        assert result["would_run"] == [["pg_probackup.py", "delete", "-B", str(catalog), "--instance=main", "--delete-wal"]]
    else:
        assert result["would_purge"] == [] and result["would_run"] == []
    assert sorted(os.listdir(wal)) == before  # check mode removed nothing


# ------------------------------------------------------------------ probackup_instance's options: one shape across modules


def _validated(args):
    """Ansible's own argument checks of probackup_instance (spec and declared relations) on ``args``."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance as probackup_instance

    return ArgumentSpecValidator(probackup_instance.argument_spec(), **probackup_instance.ARGUMENT_RELATIONS).validate(args)


class _TaskModule:
    """What probackup_instance.run reads of an AnsibleModule, with the params Ansible would pass it."""

    def __init__(self, args, check_mode=True):
        validated = _validated(args)
        assert validated.error_messages == []
        self.params = validated.validated_parameters
        self.check_mode = check_mode
        self._diff = False
        self.deprecations = [dict(msg=d["msg"], version=d["version"], collection_name=d["collection_name"]) for d in validated._deprecations]

    def deprecate(self, msg, version=None, date=None, collection_name=None):
        self.deprecations.append(dict(msg=msg, version=version, collection_name=collection_name))


@pytest.fixture
def standin_binary(tmp_path, monkeypatch):
    """The stand-in as an executable pg_probackup, as the module finds a binary."""
    monkeypatch.delenv("BACKUP_PATH", raising=False)
    path = tmp_path / "bin" / "pg_probackup"
    path.parent.mkdir()
    path.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, os.path.abspath(STANDIN)))
    path.chmod(0o755)
    return str(path)


def test_instance_config_options_are_the_config_settings_and_in_the_spec():
    import dataclasses

    from ansible_collections.pgdr.backup.plugins.modules import probackup_instance

    assert [field.name for field in dataclasses.fields(pb.InstanceConfig)] == list(pb.CONFIG_OPTIONS)
    assert set(pb.CONFIG_OPTIONS) <= set(probackup_instance.argument_spec())
    assert instance_config(pg_data="/d", external_dirs=[], retention_window=0).managed() == ["pg_data", "retention_window"]


def test_pgdata_is_a_deprecated_alias_of_pg_data():
    old = _validated(dict(backup_path="/bk", instance="main", pgdata="/data/15/main"))
    assert old.error_messages == [] and old.validated_parameters["pg_data"] == "/data/15/main"
    assert [(d["msg"], d["version"], d["collection_name"]) for d in old._deprecations] == [
        ("Alias 'pgdata' is deprecated. See the module docs for more information", "1.0.0", "pgdr.backup")
    ]
    new = _validated(dict(backup_path="/bk", instance="main", pg_data="/data/15/main"))
    assert new.validated_parameters["pg_data"] == "/data/15/main" and new._deprecations == []


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(action="backup"), "action is backup but all of the following are missing: instance"),
        (dict(action="delete", delete_expired=True), "action is delete but all of the following are missing: instance"),
        (dict(action="merge", instance="main"), "action is merge but all of the following are missing: backup_id"),
        (dict(action="unpin", instance="main"), "action is unpin but all of the following are missing: backup_id"),
        (dict(action="pin", instance="main", backup_id="TOUSU2"), "action is pin but any of the following are missing: ttl, expire_time"),
        (dict(action="pin", instance="main", backup_id="X", ttl="1d", expire_time="2030-01-01 00:00:00+00"), "mutually exclusive: ttl|expire_time"),
    ],
)
def test_declared_argument_relations(args, message):
    assert message in " ".join(_validated(dict(backup_path="/bk", **args)).error_messages)


@pytest.mark.parametrize("args", [dict(action="show"), dict(action="validate"), dict(), dict(action="pin", instance="m", backup_id="X", ttl="1d")])
def test_declared_argument_relations_let_these_pass(args):
    assert _validated(dict(backup_path="/bk", **args)).error_messages == []


FLAT_AND_DICT_TARGETS = [
    (dict(recovery_target_time="2026-11-21 13:14:44+00"), dict(kind="time", value="2026-11-21 13:14:44+00"), "--recovery-target-time=2026-11-21 13:14:44+00"),
    (dict(recovery_target_xid="727"), dict(kind="xid", value=727), "--recovery-target-xid=727"),
    (dict(recovery_target_lsn="0/70000B8"), dict(kind="lsn", value="0/70000B8"), "--recovery-target-lsn=0/70000B8"),
    (dict(recovery_target_name="before-upgrade"), dict(kind="name", value="before-upgrade"), "--recovery-target-name=before-upgrade"),
    (dict(recovery_target="immediate"), dict(kind="immediate"), "--recovery-target=immediate"),
    (dict(recovery_target="latest"), dict(kind="latest", value=None), "--recovery-target=latest"),
]  # fmt: skip


@pytest.mark.parametrize("flat, legacy, option", FLAT_AND_DICT_TARGETS, ids=["time", "xid", "lsn", "name", "immediate", "latest"])
def test_flat_and_dict_recovery_targets_give_the_same_validate_command(catalog, standin_binary, flat, legacy, option):
    from ansible_collections.pgdr.backup.plugins.modules import probackup_instance

    base = dict(binary=standin_binary, backup_path=str(catalog), instance="main", action="validate", recovery_target_timeline="1")
    inclusive = not option.startswith("--recovery-target=")  # immediate and latest take no inclusive
    if inclusive:
        base["recovery_target_inclusive"] = False
    runs = {}
    for shape, target in (("flat", flat), ("dict", dict(recovery_target=legacy))):
        module = _TaskModule(dict(base, **target))
        runs[shape] = (probackup_instance.run(module)["would_run"], module.deprecations)
    (flat_argv,), flat_deprecations = runs["flat"]
    (dict_argv,), dict_deprecations = runs["dict"]
    assert flat_argv == dict_argv
    expected = ["pg_probackup", "validate", "-B", str(catalog), "--instance=main", option]
    expected += ["--recovery-target-inclusive=false"] if inclusive else []
    assert flat_argv == expected + ["--recovery-target-timeline=1"]
    assert flat_deprecations == []
    assert [(d["version"], d["collection_name"]) for d in dict_deprecations] == [("1.0.0", "pgdr.backup")]
    assert dict_deprecations[0]["msg"].startswith("recovery_target as a {kind, value} dict is deprecated; ")


def test_validate_without_a_target_validates_the_instance(catalog, standin_binary):
    from ansible_collections.pgdr.backup.plugins.modules import probackup_instance

    module = _TaskModule(dict(binary=standin_binary, backup_path=str(catalog), instance="main", action="validate"))
    assert probackup_instance.run(module)["would_run"] == [["pg_probackup", "validate", "-B", str(catalog), "--instance=main"]]


def _target(**options):
    from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import RecoveryTargetOptions

    return typed(RecoveryTargetOptions, options)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(recovery_target_time="2026-11-21 13:14:44+00", recovery_target_lsn="0/70000B8"),
         "give one recovery target, not recovery_target_time and recovery_target_lsn"),
        (dict(recovery_target="immediate", recovery_target_xid="727"), "give one recovery target, not recovery_target_xid and recovery_target=immediate"),
        (dict(recovery_target="latest", recovery_target_name="x"), "give one recovery target, not recovery_target=latest and recovery_target_name"),
        (dict(recovery_target=dict(kind="time", value="2026-11-21 13:14:44+00"), recovery_target_xid="727"),
         "give one recovery target, not recovery_target (a {kind, value} dict) and recovery_target_xid"),
        (dict(recovery_target="soon"), "recovery_target 'soon' is not immediate or latest"),
        (dict(recovery_target=dict(kind="soon", value="x")), "recovery_target kind 'soon' is not one of time, xid, lsn, name, immediate, latest"),
        (dict(recovery_target=dict(value="x")), "recovery_target kind None is not one of"),
        (dict(recovery_target=dict(kind="time", when="x")), "recovery_target as a dict takes kind and value, not when"),
    ],
)  # fmt: skip
def test_recovery_target_refusals(options, message):
    with pytest.raises(PgdrError) as refused:
        pb.validation_target(_target(**options))
    assert refused.value.msg.startswith(message)


def test_two_recovery_targets_are_refused_before_the_tool_runs(catalog):
    from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance
    from ansible_collections.pgdr.backup.plugins.modules import probackup_instance

    two = dict(recovery_target_time="2026-11-21 13:14:44+00", recovery_target_lsn="0/70000B8")
    module = _TaskModule(dict(binary="/nonexistent/pg_probackup", backup_path=str(catalog), instance="main", action="validate", **two))
    with pytest.raises(PgdrError, match="give one recovery target"):
        instance.validate_backups(_standin_catalog(catalog), instance.options_from(module.params), dict(would_run=[]), module.check_mode)
    malformed = _TaskModule(dict(binary="/nonexistent/pg_probackup", backup_path=str(catalog), action="show", recovery_target=dict(kind="soon")))
    with pytest.raises(PgdrError, match="recovery_target kind 'soon'"):
        probackup_instance.run(malformed)  # refused as its suboptions refused it, before the binary is looked for


def test_the_catalog_names_its_program():
    catalog = pb.Probackup(PG, "/bk")
    assert catalog.program is PG and not hasattr(catalog, "tool")  # one name: the Probackup is the catalog, its binary the program
    assert pb.parse_version("pg_probackup 2.5.15 (PostgreSQL 15.18)") == pb.ProgramVersion(kind="pg_probackup", version="2.5.15")
