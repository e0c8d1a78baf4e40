"""drill.report_run: what module drill_report runs on the controller (typed options, check_mode, now), on real
folders: the files of a run, the history in the page, the textfile (its last successes and the drills a run did not
drill), the parts of a sliced run and their merge, check mode, and one-line refusals."""

import os
import socket
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.drill import report as rp
from ansible_collections.pgdr.backup.plugins.module_utils.drill import report_run as rr
from ansible_collections.pgdr.backup.plugins.modules import drill_report as module
from tests.unit.test_drill_report import T0, drill, fleet_drills, samples
from tests.unit.test_probackup_instance_entry import import_without_ansible
from tests.unit.test_schedule_status import parse_exposition

DAY = 86400


def test_report_run_imports_nothing_from_ansible():
    assert import_without_ansible("ansible_collections.pgdr.backup.plugins.module_utils.drill.report_run") == (0, "[]", "")


def params(**given):
    """The params Ansible gives the module for ``given`` (spec defaults applied)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    validated = ArgumentSpecValidator(module.argument_spec()).validate(given)
    assert validated.error_messages == []
    return validated.validated_parameters


def options(folder, **given):
    return rr.options_from(params(folder=str(folder), **given))


def run(folder, check_mode=False, now=T0 + 400, **given):
    return rr.run(options(folder, **given), check_mode=check_mode, now=now)


def files_under(path):
    return sorted(os.path.relpath(os.path.join(root, name), path) for root, _dirs, names in os.walk(path) for name in names)


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "reports"


@pytest.fixture
def prom(tmp_path):
    (tmp_path / "textfile").mkdir()
    return str(tmp_path / "textfile" / "pgdr_drill.prom")


def test_options_are_typed_with_the_spec_defaults(folder):
    typed = options(folder)
    assert isinstance(typed, rr.ReportOptions)
    assert (typed.drills, typed.run_id, typed.part_index, typed.part_count, typed.merge, typed.history, typed.textfile, typed.controller) == (
        [], None, 1, 1, False, 30, None, None)


# --- a whole run --------------------------------------------------------------------------------------------


def test_a_run_writes_its_report_junit_page_and_textfile(folder, prom):
    result = run(folder, drills=fleet_drills(), run_id="r1", textfile=prom, controller="awx-node-1")
    target = folder / "r1"
    assert result["changed"] is True and result["complete"] is True and result["merged"] is False
    assert result["paths"] == dict(json=str(target / "report.json"), junit=str(target / "junit.xml"), html=str(target / "report.html"), textfile=prom)
    assert sorted(result["written"]) == sorted(result["paths"].values())
    assert files_under(folder) == ["r1/junit.xml", "r1/report.html", "r1/report.json"]

    report = rp.load_report((target / "report.json").read_text())
    assert (report.run_id, report.controller, report.summary["drills"], report.summary["failed"]) == ("r1", "awx-node-1", 6, 1)
    assert report.started_at == rp.utc_text(T0 + 1)  # the earliest drill's start
    assert report.finished_at == rp.utc_text(T0 + 400)  # now: the report is written when the run is over

    junit = ET.parse(target / "junit.xml").getroot()
    assert (junit.get("tests"), junit.get("failures")) == ("6", "1")
    (failure,) = junit.iter("failure")
    assert failure.get("message") == "recovery did not reach the restore point"

    page = (target / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="no-history"' in page  # the first run: nothing to compare with

    families = parse_exposition(open(prom).read())
    assert samples(families, "pgdr_drill_last_result")[("db2", "replica2", "pitr")] == 0 and len(samples(families, "pgdr_drill_last_result")) == 6

    assert result["failures"] == ["drill pitr of db2 on replica2: recovery did not reach the restore point"]
    assert result["stats"] == rp.stats(report, result["paths"])
    assert result["summary"] == report.summary and result["parts_present"] == [] and result["parts_missing"] == []
    assert "6 drills on 3 hosts, 5 passed, 1 failed" in result["msg"] and "\n" not in result["msg"]


def test_the_run_id_is_made_from_the_start_and_the_controller_is_this_host(folder):
    result = run(folder, drills=[drill(at=T0 + 5)])
    assert result["run_id"].startswith("20261207T080005Z-") and len(result["run_id"]) == len("20261207T080005Z-ab12cd")
    assert rp.load_report(open(result["paths"]["json"]).read()).controller == socket.gethostname()


@pytest.mark.parametrize("given, expected", [(T0 - 60, T0 - 60), (str(int(T0 - 60)), T0 - 60), ("%.1f" % (T0 - 60.5), T0 - 60.5),
                                             ("2026-12-07T07:59:00Z", T0 - 60)])
def test_started_at_takes_epoch_seconds_as_number_or_text_and_report_times(folder, given, expected):
    result = run(folder, drills=[drill()], run_id="r1", started_at=given)
    assert rp.epoch_of(rp.load_report(open(result["paths"]["json"]).read()).started_at) == expected


def test_a_drill_host_clock_ahead_of_the_controller_does_not_end_the_run_before_its_drills(folder):
    ahead = drill(at=T0 + 500)  # ends at T0 + 540.25, after the controller's now
    report = rp.load_report(open(run(folder, drills=[ahead], run_id="r1", now=T0 + 400)["paths"]["json"]).read())
    assert report.finished_at == ahead["finished_at"]


def test_a_run_without_drills_still_gets_a_report(folder, prom):
    result = run(folder, run_id="r0", textfile=prom)
    assert result["complete"] is True and result["summary"]["drills"] == 0 and result["failures"] == []
    assert "holds no drills" in open(result["paths"]["html"]).read()
    assert ET.parse(result["paths"]["junit"]).getroot().get("tests") == "0"
    assert all(family["samples"] == [] for family in parse_exposition(open(prom).read()).values())


def test_failed_drills_do_not_fail_the_task(folder):
    failing = [drill("db1", "replica1", "pitr", "failed"), drill("db2", "replica2", "logical", "failed", reason="no set to restore")]
    result = run(folder, drills=failing, run_id="r1")
    assert result["complete"] is True and result["stats"]["pgdr_drill_failed"] == 2 and len(result["failures"]) == 2


# --- history: the page's trend and the textfile --------------------------------------------------------------


def test_a_second_run_charts_the_first_and_history_bounds_the_chart(folder):
    run(folder, drills=fleet_drills(), run_id="r1")
    second = run(folder, drills=[drill(at=T0 + DAY + i) for i in range(1)], run_id="r2", now=T0 + DAY + 400)
    page = open(second["paths"]["html"]).read()
    assert 'id="no-history"' not in page and "in each of the last 2 runs" in page
    alone = run(folder, drills=[drill(at=T0 + 2 * DAY)], run_id="r3", now=T0 + 2 * DAY + 400, history=1)
    assert 'id="no-history"' in open(alone["paths"]["html"]).read()
    three = run(folder, drills=[drill(at=T0 + 3 * DAY)], run_id="r4", now=T0 + 3 * DAY + 400, history=3)
    assert "in each of the last 3 runs" in open(three["paths"]["html"]).read()


def test_a_run_written_again_is_not_its_own_history(folder):
    run(folder, drills=fleet_drills(), run_id="r1")
    again = run(folder, drills=fleet_drills(), run_id="r1", now=T0 + 500)
    assert 'id="no-history"' in open(again["paths"]["html"]).read()


def test_the_textfile_keeps_the_last_success_and_the_drills_this_run_did_not_drill(folder, prom):
    run(folder, drills=fleet_drills(), run_id="r1", textfile=prom)  # db2's pitr failed; everything else passed
    # the next day replica3 is unreachable and db1's pitr fails
    day2 = [drill("db1", "replica1", "logical", at=T0 + DAY), drill("db1", "replica1", "pitr", "failed", at=T0 + DAY + 60),
            drill("db2", "replica2", "logical", at=T0 + DAY), drill("db2", "replica2", "pitr", at=T0 + DAY + 60)]
    result = run(folder, drills=day2, run_id="r2", textfile=prom, now=T0 + DAY + 400)
    assert result["carried"] == [dict(cluster="db3", drill_host="replica3", drill="logical"), dict(cluster="db3", drill_host="replica3", drill="pitr")]
    families = parse_exposition(open(prom).read())
    success = samples(families, "pgdr_drill_last_success_timestamp_seconds")
    assert success[("db1", "replica1", "pitr")] == T0 + 61 + 40.25  # failed today: its success of r1
    assert success[("db2", "replica2", "pitr")] == T0 + DAY + 60 + 40.25
    assert success[("db3", "replica3", "pitr")] == T0 + 63 + 40.25  # not drilled today: still there, with r1's values
    assert samples(families, "pgdr_drill_last_run_timestamp_seconds")[("db3", "replica3", "pitr")] == T0 + 63 + 40.25
    assert samples(families, "pgdr_drill_rto_seconds")[("db3", "replica3", "pitr")] == 23.0
    assert len(samples(families, "pgdr_drill_last_result")) == 6
    # a drill older than the history window leaves the textfile: a host retired for good stops alerting
    later = run(folder, drills=day2, run_id="r3", textfile=prom, now=T0 + 2 * DAY + 400, history=1)
    assert later["carried"] == [] and len(samples(parse_exposition(open(prom).read()), "pgdr_drill_last_result")) == 4


def test_an_unreadable_earlier_run_is_named_not_fatal(folder):
    run(folder, drills=fleet_drills(), run_id="r1")
    (folder / "r0").mkdir()
    (folder / "r0" / "report.json").write_text("{broken")
    result = run(folder, drills=fleet_drills(), run_id="r2", now=T0 + DAY)
    assert result["complete"] is True and 'id="skipped-runs"' in open(result["paths"]["html"]).read()


# --- check mode ---------------------------------------------------------------------------------------------


def test_check_mode_writes_nothing_and_says_what_it_would(folder, prom):
    result = run(folder, check_mode=True, drills=fleet_drills(), run_id="r1", textfile=prom)
    assert result["changed"] is True and sorted(result["written"]) == sorted(result["paths"].values())
    assert result["msg"].startswith("would write ") and not folder.exists() and not os.path.exists(prom)
    run(folder, drills=fleet_drills(), run_id="r1", textfile=prom)
    before = {path: open(path).read() for path in run(folder, check_mode=True, drills=fleet_drills(), run_id="r1", textfile=prom)["written"]}
    assert all(open(path).read() == text for path, text in before.items())


def test_check_mode_of_the_last_part_says_it_would_merge(folder):
    run(folder, drills=fleet_drills()[:2], run_id="awx-1", part_index=1, part_count=2)
    result = run(folder, check_mode=True, drills=fleet_drills()[2:], run_id="awx-1", part_index=2, part_count=2)
    assert result["merged"] is True and result["summary"]["drills"] == 6
    assert files_under(folder) == ["awx-1/part-1-of-2.json"]


# --- parts of a sliced run ----------------------------------------------------------------------------------


def test_the_last_slice_to_finish_merges(folder, prom):
    drills = fleet_drills()
    first = run(folder, drills=drills[4:], run_id="awx-4711", part_index=3, part_count=3, textfile=prom, controller="node-a")
    assert (first["merged"], first["complete"], first["parts_present"], first["parts_missing"]) == (False, False, [3], [1, 2])
    assert first["paths"] == dict(json=str(folder / "awx-4711" / "part-3-of-3.json"), junit=None, html=None, textfile=None)
    assert first["summary"]["drills"] == 2 and "waiting for parts 1, 2" in first["msg"]
    assert not os.path.exists(prom)  # a part writes no textfile: it would drop the other slices' series
    assert rp.history(str(folder))["skipped"] == [dict(run="awx-4711", reason="no report.json: 1 parts not merged yet")]

    second = run(folder, drills=drills[:2], run_id="awx-4711", part_index=1, part_count=3, textfile=prom, controller="node-b")
    assert (second["merged"], second["parts_present"], second["parts_missing"]) == (False, [1, 3], [2])
    last = run(folder, drills=drills[2:4], run_id="awx-4711", part_index=2, part_count=3, textfile=prom, controller="node-a", now=T0 + 500)
    assert (last["merged"], last["complete"], last["parts_present"], last["parts_missing"]) == (True, True, [1, 2, 3], [])
    merged = rp.load_report(open(last["paths"]["json"]).read())
    assert merged.part_count == 1 and merged.controller == "node-b, node-a" and merged.summary["drills"] == 6
    assert [d.to_dict() for d in merged.drills] == [d.to_dict() for d in rp.build_report(drills, "x", T0, T0 + 1, "c").drills]
    assert last["stats"]["pgdr_drill_drills"] == 6 and last["failures"] == ["drill pitr of db2 on replica2: recovery did not reach the restore point"]
    assert files_under(folder) == ["awx-4711/junit.xml", "awx-4711/part-1-of-3.json", "awx-4711/part-2-of-3.json", "awx-4711/part-3-of-3.json",
                                   "awx-4711/report.html", "awx-4711/report.json"]
    assert 'id="skipped-runs"' not in open(last["paths"]["html"]).read()  # its own parts are not an unreadable earlier run
    assert len(samples(parse_exposition(open(prom).read()), "pgdr_drill_last_result")) == 6
    assert rp.history(str(folder))["runs"][0]["id"] == "awx-4711"

    # the workflow node after the sliced job merges the same parts: nothing to write
    again = run(folder, run_id="awx-4711", merge=True, textfile=prom, now=T0 + 900)
    assert (again["changed"], again["written"], again["merged"], again["summary"]) == (False, [], True, last["summary"])


def test_a_slice_without_drills_still_writes_its_part(folder):
    run(folder, drills=fleet_drills(), run_id="awx-2", part_index=1, part_count=2)
    result = run(folder, run_id="awx-2", part_index=2, part_count=2)
    assert result["merged"] is True and result["summary"]["drills"] == 6


def test_merge_names_the_missing_parts_in_one_line(folder):
    run(folder, drills=fleet_drills()[:2], run_id="awx-9", part_index=2, part_count=4)
    with pytest.raises(PgdrError, match=r"^parts 1, 3, 4 of 4 of run awx-9 are missing: wait for their slices to finish, or run the sliced job again$"):
        run(folder, run_id="awx-9", merge=True)
    with pytest.raises(PgdrError, match=r"^no part of run awx-10 in .*: did the sliced job write its parts"):
        run(folder, run_id="awx-10", merge=True)
    with pytest.raises(PgdrError, match=r"^parts 1, 2, 3 of 3 of run awx-10 are missing"):
        run(folder, run_id="awx-10", merge=True, part_count=3)
    with pytest.raises(PgdrError, match=r"^run awx-9 already holds parts of 4 parts, this is of 3"):
        run(folder, run_id="awx-9", merge=True, part_count=3)
    assert files_under(folder) == ["awx-9/part-2-of-4.json"]


def test_slices_that_disagree_on_the_count_fail_before_writing(folder):
    run(folder, drills=fleet_drills()[:2], run_id="awx-5", part_index=1, part_count=2)
    with pytest.raises(PgdrError, match=r"^run awx-5 already holds parts of 2 parts, this is of 3: the slices of one run must agree"):
        run(folder, drills=fleet_drills()[2:], run_id="awx-5", part_index=2, part_count=3)
    assert files_under(folder) == ["awx-5/part-1-of-2.json"]


def test_a_host_in_two_slices_fails_the_merge(folder):
    run(folder, drills=fleet_drills()[:2], run_id="awx-6", part_index=1, part_count=2)
    with pytest.raises(PgdrError, match=r"^drill logical of db1 on replica1 is in parts 1 and 2 of run awx-6: a host belongs to one slice$"):
        run(folder, drills=fleet_drills()[:1], run_id="awx-6", part_index=2, part_count=2)


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, message", [
    (dict(folder="reports"), r"^folder 'reports' must be an absolute path on the controller"),
    (dict(textfile="/tmp/pgdr_drill.txt"), r"^textfile '/tmp/pgdr_drill.txt' must end in \.prom"),
    (dict(textfile="pgdr.prom"), r"^textfile 'pgdr.prom' must be an absolute path"),
    (dict(run_id="../up"), r"^run id '\.\./up' is not usable as a folder name"),
    (dict(history=0), r"^history 0 must be between 1 and 30"),
    (dict(history=31), r"^history 31 must be between 1 and 30"),
    (dict(controller="a\nb"), r"^controller 'a\\nb' must be one line"),
    (dict(merge=True, run_id="r", drills=[drill()]), r"^merge: true merges the parts the slices already wrote and takes no drills"),
    (dict(merge=True), r"^merge: true needs run_id"),
    (dict(merge=True, run_id="r", part_index=2), r"^part_index has no meaning with merge: true"),
    (dict(part_index=3, part_count=2, run_id="r"), r"^part_index 3 of part_count 2: give a slice's number i"),
    (dict(part_index=0), r"^part_index 0 of part_count 1"),
    (dict(part_index=1, part_count=2), r"^a part of a sliced run \(part_count 2\) needs run_id"),
    (dict(started_at="yesterday"), r"^started_at: 'yesterday' is not a report time"),
    (dict(started_at=-5), r"^started_at -5 must be epoch seconds >= 0"),
    (dict(drills=[drill(), drill(kind="pitr", phases=[dict(name="fetch", seconds=1, result="bad")])]),
     r"^drills\[1\]\.phases\[0\]\.result must be one of ok, failed, skipped, not 'bad'$"),
    (dict(drills=[drill(), drill()]), r"^drills\[1\]: drill logical of db1 on replica1 is already drills\[0\]"),
    (dict(drills=[dict(drill(), changed=False)]), r"^drills\[0\]\.changed is not a field of a drill report format 1"),
])
def test_bad_input_fails_in_one_line_naming_the_option_and_writes_nothing(tmp_path, given, message):
    given = dict(dict(folder=str(tmp_path / "reports")), **given)
    with pytest.raises(PgdrError, match=message) as caught:
        rr.run(rr.options_from(params(**given)), check_mode=False, now=T0 + 400)
    assert "\n" not in caught.value.msg and not (tmp_path / "reports").exists()


def test_an_unwritable_folder_or_textfile_folder_fails_in_one_line(tmp_path, prom):
    (tmp_path / "plain").write_text("a file where the folder should be")
    with pytest.raises(PgdrError, match=r"^cannot read the report folder .*/plain: .*Not a directory"):
        run(tmp_path / "plain", drills=[drill()], run_id="r1")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "r1").write_text("a file where the run folder should be")
    with pytest.raises(PgdrError, match=r"^cannot write the drill report into .*/taken/r1: .*; make the report folder writable"):
        run(tmp_path / "taken", drills=[drill()], run_id="r1")
    with pytest.raises(PgdrError, match=r"^the textfile's folder .*/missing does not exist: create it"):
        run(tmp_path / "reports", drills=[drill()], run_id="r1", textfile=str(tmp_path / "missing" / "x.prom"))
    assert not (tmp_path / "reports").exists()
