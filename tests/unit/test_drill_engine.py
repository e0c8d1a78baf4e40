"""The pure parts of a drill: names on the source, RPO, the set's facts, the scratch place, marker checks, phases."""

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.drill import engine, proof
from ansible_collections.pgdr.backup.plugins.module_utils.drill.scratch import Place, check_name


def test_the_slot_is_one_per_drill_host_and_cluster_and_a_valid_slot_name():
    slot = engine.slot_name("replica1", "db1")
    assert slot == engine.slot_name("replica1", "db1") != engine.slot_name("replica2", "db1") != engine.slot_name("replica1", "db2")
    assert slot.startswith("pgdr_drill_") and len(slot) <= 63 and slot.replace("_", "").isalnum() and slot == slot.lower()


def test_marker_prefixes_of_two_drills_never_prefix_each_other():
    first, second = engine.marker_prefix("r1", "db", "pitr"), engine.marker_prefix("r1", "db1", "pitr")
    assert not first.startswith(second) and not second.startswith(first)


@pytest.mark.parametrize("reference, recovered, expected", [(100.0, 90.5, 9.5), (100.0, 100.2, 0.0), (100.0, None, None)])
def test_rpo_is_the_reference_minus_the_newest_commit_never_below_zero(reference, recovered, expected):
    assert engine.rpo(reference, recovered) == expected


def test_set_facts_sum_the_files_and_age_from_the_end():
    manifest = dict(backup_id="20261207T080000Z", kind="base", finished_at="2026-12-07T08:00:10Z",
                    files=[dict(size=10), dict(size=32)])
    facts = engine.set_facts(manifest, "local:/r", engine.moment(manifest, "finished_at") + 50)
    assert facts == dict(backup_id="20261207T080000Z", kind="base", size_bytes=42, age_seconds=50.0, repository="local:/r")


def test_the_scratch_place_keeps_everything_under_its_folder_and_listens_on_no_tcp_address():
    place = Place("/var/lib/postgresql/pgdr-drill", "db1-pitr", 5499)
    assert place.root == "/var/lib/postgresql/pgdr-drill/db1-pitr"
    for path in (place.pg_data, place.server_log, place.hba_file, place.wal_dir, place.sets_dir, place.receiver_pid_file):
        assert path.startswith(place.root + "/")
    settings = place.server_settings()
    assert settings["listen_addresses"] == "" and settings["unix_socket_directories"] == place.root and settings["port"] == "5499"


@pytest.mark.parametrize("args, words", [
    (("relative", "x", 5499), "must be an absolute path"),
    (("/" + "d" * 100, "x", 5499), "too long for the scratch server's socket"),
    (("/srv/drill", "../escape", 5499), "must be letters, digits"),
])
def test_a_place_outside_the_rules_is_refused_in_one_line(args, words):
    with pytest.raises(PgdrError) as caught:
        Place(*args)
    assert words in caught.value.msg and "\n" not in caught.value.msg


def test_drill_names_are_folder_names():
    assert check_name("db-1.main_x") == "db-1.main_x"
    for bad in ("", ".hidden", "a/b", "a b", "x" * 64):
        with pytest.raises(PgdrError):
            check_name(bad)


def test_the_marker_check_names_what_is_missing_and_what_should_not_be_there():
    assert proof.marker_check({"before": 1.0}, ["before"], ["after"])["ok"]
    wrong = proof.marker_check({"after": 2.0}, ["before"], ["after"])
    assert not wrong["ok"] and wrong["detail"] == "marker rows: missing before; present but written after the target: after"


def test_a_phase_left_by_an_exception_is_failed_and_timed():
    phases = engine.Phases()
    with phases.phase("select"):
        pass
    with pytest.raises(engine.DrillFailed):
        with phases.phase("deploy"):
            raise engine.DrillFailed("no")
    phases.skip("recovery")
    assert [(item["name"], item["result"]) for item in phases.items] == [("select", "ok"), ("deploy", "failed"), ("recovery", "skipped")]
    assert all(item["seconds"] >= 0 for item in phases.items)


@pytest.mark.parametrize("options, words", [
    (dict(drill="standalone", login_host=None), "give login_host"),
    (dict(drill="latest", latest_kind="base", archive=None), "give archive"),
    (dict(port=80), "port 80 is not a port"),
    (dict(recovery_timeout=0), "recovery_timeout must be at least 1 second"),
])
def test_bad_options_are_refused_before_anything_is_made(options, words):
    values = dict(drill="standalone", cluster="db1", source_host=None, drill_host=None, database=None, repository=None, archive=None,
                  latest_kind="base", passphrase=None, drill_dir="/srv/drill", port=5499, pg_bin_dir=None, os_user="postgres",
                  heapallindexed=False, keep=False, recovery_timeout=600)
    login_host = options.pop("login_host", "10.0.0.1")
    values.update(options)
    connection = engine.typed(engine.ConnectionOptions, dict(login_host=login_host))
    with pytest.raises(PgdrError) as caught:
        engine.check_options(engine.DrillOptions(**values), connection)
    assert words in caught.value.msg


def test_a_data_directory_without_its_configuration_gets_empty_files_and_an_existing_one_is_left_alone(tmp_path):
    import pwd  # pylint: disable=import-outside-toplevel

    from ansible_collections.pgdr.backup.plugins.module_utils.drill.scratch import complete_config

    user = pwd.getpwuid(__import__("os").getuid()).pw_name
    (tmp_path / "pg_ident.conf").write_text("mymap root postgres\n")
    assert complete_config(str(tmp_path), user) == ["postgresql.conf"]  # a Debian-layout copy: postgresql.conf was in /etc
    assert (tmp_path / "pg_ident.conf").read_text() == "mymap root postgres\n"
    assert (tmp_path / "postgresql.conf").read_text().startswith("# written by pgdr.backup restore_drill")
    assert oct((tmp_path / "postgresql.conf").stat().st_mode & 0o777) == "0o600"
    assert complete_config(str(tmp_path), user) == []
