"""drill.report: the drill report model, its checks, parts of a sliced run, the history folder, JUnit XML, the
Prometheus textfile and set_stats. The textfile is read back by the strict exposition parser of test_schedule_status."""

import copy
import datetime
import itertools
import json
import os
import re
import stat
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.drill import report as rp
from tests.unit.test_schedule_status import parse_exposition

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA_PATH = os.path.join(PROJECT, "docs", "drill-report.schema.json")
T0 = 1_796_630_400.0  # 2026-12-07T08:00:00Z
HOSTILE = 'restore failed: "pg_ctl" said <FATAL> & \'quit\' \x00\x1b[31m\x7f]]> \u2028 end'


def drill(cluster="db1", host="replica1", kind="logical", result="passed", at=T0, reason=None, rto=12.3, rpo=3600.5, **changes):
    """A drill's JSON object; a failed one failed at recovery, after its RTO would have been the largest."""
    failed = result == "failed"
    data = dict(
        cluster=cluster, source_host=host.replace("replica", "primary"), drill_host=host, drill=kind, result=result,
        reason=(reason if reason is not None else "recovery did not reach the restore point") if failed else "",
        started_at=rp.utc_text(at), finished_at=rp.utc_text(at + 40.25),
        rto_seconds=None if failed else rto, rpo_seconds=None if failed else rpo,
        phases=[dict(name="select", seconds=0.4, result="ok"), dict(name="fetch", seconds=3.1, result="ok"),
                dict(name="deploy", seconds=2.0, result="ok"), dict(name="recovery", seconds=30.0, result="failed" if failed else "ok"),
                dict(name="verify", seconds=0.0 if failed else 4.0, result="skipped" if failed else "ok"),
                dict(name="cleanup", seconds=0.7, result="ok")],
        set={"backup_id": "20261207T020000Z", "kind": "logical-db" if kind == "logical" else "base", "size_bytes": 123456, "age_seconds": 21600,
             "repository": "s3://backups/pgdr"},
        verified=[] if failed else [dict(check="row counts and fingerprints", ok=True, detail="14 tables")],
        cleanup="done")
    data.update(changes)
    return data


def fleet_drills():
    """3 hosts x 2 drills; the pitr drill of db2 fails."""
    drills = []
    for number, cluster in enumerate(("db1", "db2", "db3"), 1):
        host = "replica%d" % number
        drills.append(drill(cluster, host, "logical", at=T0 + number, rto=10.0 + number, rpo=100.0 * number))
        failed = cluster == "db2"
        drills.append(drill(cluster, host, "pitr", "failed" if failed else "passed", at=T0 + 60 + number, rto=20.0 + number, rpo=5.0 * number))
    return drills


def fleet(drills=None, run_id="20261207T080000Z-ab12cd", **kw):
    values = dict(started_at=T0, finished_at=T0 + 300, controller="awx-node-1")
    values.update(kw)
    return rp.build_report(fleet_drills() if drills is None else drills, run_id, **values)


# --- times and run ids --------------------------------------------------------------------------------------


def test_times():
    assert rp.utc_text(T0) == "2026-12-07T08:00:00Z"
    assert rp.utc_text(T0 + 40.25) == "2026-12-07T08:00:40.250Z"
    assert rp.epoch_of("2026-12-07T08:00:40.250Z") == T0 + 40.25
    for bad in ("2026-12-07 08:00:00Z", "2026-12-07T08:00:00", "2026-02-30T08:00:00Z", "2026-12-07T25:00:00Z", 5, None):
        with pytest.raises(PgdrError):
            rp.epoch_of(bad)


def test_run_ids():
    assert rp.new_run_id(T0, token="ab12cd") == "20261207T080000Z-ab12cd"
    first, second = rp.new_run_id(T0), rp.new_run_id(T0)
    assert first != second and first.startswith("20261207T080000Z-") and len(first) == len("20261207T080000Z-ab12cd")
    assert rp.new_run_id(datetime.datetime(2026, 12, 7, 8, 0, 0, 900000, tzinfo=datetime.timezone.utc), token="x") == "20261207T080000Z-x"
    assert rp.validate_run_id("awx-4711") == "awx-4711"
    for bad in ("", ".", "..", "../etc", "a/b", ".hidden", "-x", "a b", "x" * 101, "run\n", None, 7):
        with pytest.raises(PgdrError, match="not usable as a folder name"):
            rp.validate_run_id(bad)
    with pytest.raises(PgdrError):
        rp.run_folder("/reports", "../../etc")


# --- the report ---------------------------------------------------------------------------------------------


def test_build_report_computes_the_summary_and_orders_the_drills():
    drills = fleet_drills()
    report = fleet(list(reversed(drills)))
    assert report.summary == dict(drills=6, passed=5, failed=1, worst_rto_seconds=23.0, worst_rpo_seconds=300.0, hosts=3)
    assert [(d.cluster, d.drill_host, d.drill) for d in report.drills] == [
        ("db1", "replica1", "logical"), ("db1", "replica1", "pitr"), ("db2", "replica2", "logical"), ("db2", "replica2", "pitr"),
        ("db3", "replica3", "logical"), ("db3", "replica3", "pitr")]
    assert report.started_at == "2026-12-07T08:00:00Z" and report.finished_at == "2026-12-07T08:05:00Z"
    assert report.file_name == "report.json" and not report.is_part
    assert report.drills[3].duration_seconds == 40.25


def test_the_worst_values_come_from_passed_drills_only():
    # the failed drill measured an RTO larger than any passed one: a failure proves no recovery time
    drills = fleet_drills()
    drills[3].update(rto_seconds=999.0, rpo_seconds=9999.0)
    assert fleet(drills).summary["worst_rto_seconds"] == 23.0
    all_failed = [drill("db1", kind="logical", result="failed")]
    assert fleet(all_failed).summary == dict(drills=1, passed=0, failed=1, worst_rto_seconds=None, worst_rpo_seconds=None, hosts=1)
    assert fleet([]).summary == dict(drills=0, passed=0, failed=0, worst_rto_seconds=None, worst_rpo_seconds=None, hosts=0)


def test_hosts_are_distinct_drill_hosts():
    # two clusters drilled on one scratch host count one host
    drills = [drill("db1", "scratch1"), drill("db2", "scratch1"), drill("db3", "scratch2")]
    assert fleet(drills).summary["hosts"] == 2


def test_json_round_trip():
    report = fleet()
    text = report.to_json()
    data = json.loads(text)
    assert data["format"] == 1 and data["run"]["part"] == {"index": 1, "count": 1}
    assert data["summary"] == report.summary
    assert rp.check_report(data) == report
    assert rp.load_report(text).to_dict() == data
    assert rp.check_report(json.loads(json.dumps(data))).to_json() == text


def test_a_drill_result_made_by_hand_is_checked():
    good = rp.DrillResult.from_dict(drill())
    assert fleet([good]).drills == (good,)
    bad = good.__class__(**dict(good.to_dict(), result="nope"))
    with pytest.raises(PgdrError, match=r"^drills\[0\]\.result must be one of passed, failed, not 'nope'$"):
        fleet([bad])


def _set(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value


@pytest.mark.parametrize("path, value, message", [
    (("format",), 2, "drill report format 2 is newer than this collection reads (1): upgrade pgdr.backup"),
    (("format",), "1", "report.format must be 1"),
    (("extra",), 1, "report.extra is not a field of a drill report format 1"),
    (("run",), KeyError, "report.run is missing"),
    (("run", "id"), "../x", "run.id must be a run id"),
    (("run", "started_at"), "yesterday", "run.started_at must be a UTC time"),
    (("run", "finished_at"), "2026-12-07T07:00:00Z", "run.finished_at 2026-12-07T07:00:00Z is before run.started_at"),
    (("run", "controller"), "", "run.controller must be a non-empty one-line string"),
    (("run", "part", "index"), 3, "run.part.index must be between 1 and run.part.count 1"),
    (("run", "part", "count"), True, "run.part.count must be an integer >= 0"),
    (("summary", "passed"), 6, "summary.passed must be 5 as its drills say, not 6"),
    (("summary", "failed"), True, "summary.failed must be 1 as its drills say, not True"),
    (("summary", "worst_rto_seconds"), 99.0, "summary.worst_rto_seconds must be 23.0 as its drills say"),
    (("summary", "hosts"), KeyError, "summary.hosts is missing"),
    (("drills",), {}, "drills must be a list, not dict"),
    (("drills", 1, "drill"), "restore", "drills[1].drill must be one of logical, standalone, pitr, latest"),
    (("drills", 1, "cluster"), "", "drills[1].cluster must be a non-empty one-line string"),
    (("drills", 1, "drill_host"), "a\nb", "drills[1].drill_host must be a non-empty one-line string"),
    (("drills", 3, "reason"), "", "drills[3].reason must be one line saying why the drill failed"),
    (("drills", 3, "reason"), "two\nlines", "drills[3].reason must be a one-line string"),
    (("drills", 0, "reason"), "but why", "drills[0].reason must be '' for a passed drill"),
    (("drills", 0, "finished_at"), "2026-12-07T07:00:00Z", "drills[0].finished_at must be at or after started_at"),
    (("drills", 0, "rto_seconds"), None, "drills[0].rto_seconds must be measured (a number) for a passed drill"),
    (("drills", 0, "rpo_seconds"), -1, "drills[0].rpo_seconds must be a number of seconds >= 0 or null"),
    (("drills", 0, "rto_seconds"), float("nan"), "drills[0].rto_seconds must be a number of seconds"),
    (("drills", 0, "phases", 2, "name"), "select", "drills[0].phases[2].name must be a phase not already listed"),
    (("drills", 0, "phases", 2, "result"), "failed", "drills[0].phases[2].result must be ok or skipped in a passed drill"),
    (("drills", 0, "phases", 1, "seconds"), "3", "drills[0].phases[1].seconds must be a number of seconds >= 0"),
    (("drills", 0, "phases", 1, "when"), 3, "drills[0].phases[1].when is not a field"),
    (("drills", 0, "verified"), [], "drills[0].verified must list what proved a passed drill"),
    (("drills", 0, "verified", 0, "ok"), False, "drills[0].verified[0].ok must be true in a passed drill"),
    (("drills", 0, "verified", 0, "ok"), "yes", "drills[0].verified[0].ok must be true or false"),
    (("drills", 0, "set"), None, "drills[0].set must name the backup set a passed drill restored"),
    (("drills", 0, "set", "size_bytes"), 1.5, "drills[0].set.size_bytes must be an integer >= 0 or null"),
    (("drills", 0, "set", "backup_id"), KeyError, "drills[0].set.backup_id is missing"),
    (("drills", 0, "cleanup"), "skipped", "drills[0].cleanup must be one of done, kept, failed"),
    (("drills", 2, "drill"), "logical", "drills[2]: drill logical of db2 on replica2 is already drills[2]"),
])
def test_check_report_names_the_wrong_field_in_one_line(path, value, message):
    data = json.loads(fleet().to_json())
    if path == ("drills", 2, "drill"):
        data["drills"][3]["drill"] = "logical"  # the failed pitr drill of db2 becomes a second logical one
        data["drills"][3]["phases"] = data["drills"][2]["phases"]
    else:
        _set(data, path, value)
    with pytest.raises(PgdrError) as caught:
        rp.check_report(data)
    assert "\n" not in caught.value.msg
    assert message.replace("drills[2]: drill logical of db2 on replica2 is already drills[2]", "drills[3]: drill logical of db2 on replica2 is "
                           "already drills[2]") in caught.value.msg


def test_check_report_refuses_what_is_not_a_report():
    for data, message in (([], "a drill report must be a JSON object, not list"), (None, "not NoneType")):
        with pytest.raises(PgdrError, match=message):
            rp.check_report(data)
    with pytest.raises(PgdrError, match="^not JSON: "):
        rp.load_report("{")


def test_a_failed_drill_may_carry_what_it_measured_before_failing():
    data = drill(result="failed", rpo_seconds=7.5, set=None)
    report = fleet([data])
    assert report.drills[0].rpo_seconds == 7.5 and report.drills[0].set is None


# --- the schema ---------------------------------------------------------------------------------------------


def schema():
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def test_the_schema_is_valid_and_accepts_a_report():
    jsonschema.Draft202012Validator.check_schema(schema())
    validator = jsonschema.Draft202012Validator(schema())
    validator.validate(json.loads(fleet().to_json()))
    validator.validate(json.loads(merge_input()[1][0].to_json()))  # a part
    validator.validate(json.loads(fleet([]).to_json()))


@pytest.mark.parametrize("path, value", [
    (("format",), 2), (("extra",), 1), (("run", "id"), "../x"), (("run", "started_at"), "yesterday"), (("run", "part", "index"), 0),
    (("summary", "passed"), -1), (("drills", 1, "drill"), "restore"), (("drills", 0, "result"), "ok"), (("drills", 0, "rto_seconds"), -1),
    (("drills", 0, "phases", 0, "name"), "prepare"), (("drills", 0, "cleanup"), "skipped"), (("drills", 0, "verified", 0, "ok"), "yes"),
    (("drills", 0, "reason"), "two\nlines"), (("drills", 0, "set", "size_bytes"), 1.5), (("drills", 0, "typo"), 1),
])
def test_the_schema_refuses_what_check_report_refuses(path, value):
    data = json.loads(fleet().to_json())
    _set(data, path, value)
    with pytest.raises(PgdrError):
        rp.check_report(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema()).validate(data)


# --- parts of a sliced run ----------------------------------------------------------------------------------


def merge_input():
    """The unsliced report, and its 3 parts as 3 AWX slices (one host each, their own times) would write them."""
    drills = fleet_drills()
    run_id = "awx-4711"
    parts = [rp.build_report(drills[2 * n:2 * n + 2], run_id, T0 + 10 * n, T0 + 100 + 100 * n, "awx-node-1", n + 1, 3) for n in range(3)]
    whole = rp.build_report(drills, run_id, T0, T0 + 300, "awx-node-1")
    return whole, parts


def test_merge_of_the_parts_in_any_order_is_the_unsliced_report():
    whole, parts = merge_input()
    assert [part.file_name for part in parts] == ["part-1-of-3.json", "part-2-of-3.json", "part-3-of-3.json"]
    for order in itertools.permutations(parts):
        assert rp.merge_parts(list(order)) == whole
    assert rp.merge_parts([json.loads(part.to_json()) for part in reversed(parts)]).to_json() == whole.to_json()


def test_merge_lists_the_controllers_of_the_slices():
    _whole, parts = merge_input()
    parts[2] = rp.build_report(parts[2].drills, "awx-4711", T0, T0 + 310, "awx-node-2", 3, 3)
    merged = rp.merge_parts(parts)
    assert merged.controller == "awx-node-1, awx-node-2" and merged.finished_at == rp.utc_text(T0 + 310)
    assert (merged.part_index, merged.part_count) == (1, 1)


def test_merge_refusals():
    _whole, parts = merge_input()
    other = rp.build_report(parts[1].drills, "awx-4712", T0, T0 + 300, "awx-node-1", 2, 3)
    cases = [
        ([parts[0], other, parts[2]], "^the parts are of different runs \\(awx-4711, awx-4712\\): merge the parts of one run id$"),
        ([parts[0], parts[1], parts[1], parts[2]], "^part 2 of 3 of run awx-4711 is given twice: give each part once$"),
        ([parts[2], parts[0]], "^part 2 of 3 of run awx-4711 is missing: wait for its slice to finish, or run the sliced job again$"),
        ([parts[1]], "^parts 1, 3 of 3 of run awx-4711 are missing: wait for their slices to finish, or run the sliced job again$"),
        ([parts[0], parts[1], rp.build_report(parts[2].drills, "awx-4711", T0, T0 + 1, "n", 3, 4)], "disagree on the number of parts \\(3, 4\\)"),
        ([], "^no part to merge"),
        ([parts[0], parts[1], rp.build_report(parts[0].drills, "awx-4711", T0, T0 + 1, "n", 3, 3)],
         "^drill logical of db1 on replica1 is in parts 1 and 3 of run awx-4711: a host belongs to one slice$"),
    ]
    for given, message in cases:
        with pytest.raises(PgdrError, match=message):
            rp.merge_parts(given)


def test_parts_written_by_the_slices_merge_from_the_folder(tmp_path):
    whole, parts = merge_input()
    for part in parts:
        paths = rp.write_run(str(tmp_path), part, {"junit-part-%d.xml" % part.part_index: rp.junit_xml(part)})
        assert sorted(paths) == ["junit-part-%d.xml" % part.part_index, part.file_name]
    assert rp.history(str(tmp_path)) == dict(runs=[], skipped=[dict(run="awx-4711", reason="no report.json: 3 parts not merged yet")])
    merged = rp.merge_parts(rp.read_parts(str(tmp_path), "awx-4711"))
    assert merged == whole
    rp.write_run(str(tmp_path), merged)
    assert [entry["id"] for entry in rp.history(str(tmp_path))["runs"]] == ["awx-4711"]
    (tmp_path / "awx-4711" / "part-2-of-3.json").write_text("{")
    with pytest.raises(PgdrError, match="part-2-of-3.json: not JSON"):
        rp.read_parts(str(tmp_path), "awx-4711")


# --- the report folder --------------------------------------------------------------------------------------


def test_write_run_writes_atomically_and_the_json_last(tmp_path):
    report = fleet()
    paths = rp.write_run(str(tmp_path / "reports"), report, {"junit.xml": "<x/>\n", "report.html": "<html></html>\n"})
    folder = tmp_path / "reports" / report.run_id
    assert list(paths) == ["junit.xml", "report.html", "report.json"]  # the JSON last: its presence means the run is complete
    assert paths["report.json"] == str(folder / "report.json")
    assert sorted(os.listdir(folder)) == ["junit.xml", "report.html", "report.json"]  # no temporary file left
    assert rp.load_report((folder / "report.json").read_text()) == report
    assert stat.S_IMODE((folder / "junit.xml").stat().st_mode) == 0o644
    rp.write_run(str(tmp_path / "reports"), report, {"junit.xml": "<y/>\n"})  # a rewrite replaces
    assert (folder / "junit.xml").read_text() == "<y/>\n"


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "report.json", "part-1-of-2.json", ""])
def test_write_run_refuses_names_that_are_not_plain_files(tmp_path, name):
    with pytest.raises(PgdrError, match="cannot write .* into a run folder"):
        rp.write_run(str(tmp_path), fleet(), {name: "x"})
    assert os.listdir(tmp_path) == []


def test_write_run_fails_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PgdrError) as caught:
        rp.write_run(str(blocker), fleet())
    assert "\n" not in caught.value.msg and caught.value.msg.startswith("cannot write the drill report into %s" % (blocker / fleet().run_id))


def run_at(start, failed_pitr_db2=True, run_id=None):
    drills = fleet_drills()
    for item in drills:
        shift = start - T0
        item["started_at"] = rp.utc_text(rp.epoch_of(item["started_at"]) + shift)
        item["finished_at"] = rp.utc_text(rp.epoch_of(item["finished_at"]) + shift)
    if not failed_pitr_db2:
        drills[3] = drill("db2", "replica2", "pitr", at=start + 62, rto=22.0, rpo=10.0)
    return rp.build_report(drills, run_id or rp.new_run_id(start), start, start + 300, "ctl")


def test_history_oldest_first_with_a_limit_and_the_unreadable_runs_said(tmp_path):
    folder = str(tmp_path)
    day = 86400
    # written out of order: the history sorts by when the runs started, not by folder name or write order
    names = {0: "run-b", 1: "run-c", 2: "run-a"}
    reports = [run_at(T0 + n * day, run_id=names[n]) for n in (2, 0, 1)]
    for report in reports:
        rp.write_run(folder, report)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text('{"format": 1, "run": ')
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "report.json").write_text(json.dumps({"format": 2}))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "copied").mkdir()
    (tmp_path / "copied" / "report.json").write_text(reports[0].to_json())
    (tmp_path / "notes.txt").write_text("not a run")
    (tmp_path / "locked").mkdir(mode=0o000)  # no listing, no reading: skipped too (root reads it anyway: then it is unfinished)
    (tmp_path / ".report.json.x.tmp").mkdir()
    found = rp.history(folder)
    assert [entry["id"] for entry in found["runs"]] == ["run-b", "run-c", "run-a"]
    assert found["runs"][0]["summary"] == reports[1].summary
    assert found["runs"][0]["drills"][0] == dict(cluster="db1", drill_host="replica1", drill="logical", result="passed",
                                                 finished_at=rp.utc_text(T0 + 41.25), rto_seconds=11.0, rpo_seconds=100.0)
    skipped = {entry["run"]: entry["reason"] for entry in found["skipped"]}
    assert sorted(skipped) == ["broken", "copied", "locked", "newer", "unfinished"]
    assert skipped["locked"] == ("no report.json: an unfinished run" if os.geteuid() == 0 else
                                 "cannot read %s: [Errno 13] Permission denied: '%s'" % ((os.path.join(folder, "locked"),) * 2))
    assert skipped["broken"].startswith(os.path.join(folder, "broken", "report.json") + ": not JSON")
    assert "format 2 is newer than this collection reads" in skipped["newer"]
    assert skipped["unfinished"] == "no report.json: an unfinished run"
    assert skipped["copied"] == "its report.json is of run run-a: a copied folder?"
    assert all("\n" not in reason for reason in skipped.values())
    assert [entry["id"] for entry in rp.history(folder, limit=2)["runs"]] == ["run-c", "run-a"]
    assert rp.history(folder, limit=0)["runs"] == []
    assert len(rp.history(folder, limit=None)["runs"]) == 3
    assert rp.history(str(tmp_path / "none")) == dict(runs=[], skipped=[])


# --- JUnit XML ----------------------------------------------------------------------------------------------


def test_junit_xml_parses_back_with_counts_and_reasons():
    drills = fleet_drills()
    drills[3]["reason"] = HOSTILE
    report = fleet(drills)
    text = rp.junit_xml(report)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    assert "\x00" not in text and "\x1b" not in text
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "1", "0")
    suites = root.findall("testsuite")
    assert [suite.get("name") for suite in suites] == ["replica1", "replica2", "replica3"]
    counts = [(suite.get("tests"), suite.get("failures"), suite.get("time")) for suite in suites]
    assert counts == [("2", "0", "80.500"), ("2", "1", "80.500"), ("2", "0", "80.500")]
    cases = root.findall("testsuite/testcase")
    assert [(case.get("classname"), case.get("name"), case.get("time")) for case in cases[:2]] == [
        ("pgdr.drill.db1", "logical on replica1", "40.250"), ("pgdr.drill.db1", "pitr on replica1", "40.250")]
    failures = root.findall(".//failure")
    assert len(failures) == 1 and cases[3].find("failure") is failures[0]
    expected = 'restore failed: "pg_ctl" said <FATAL> & \'quit\' [31m\x7f]]> \u2028 end'  # only what XML 1.0 forbids is gone
    assert failures[0].get("message") == expected
    assert failures[0].text.split("\n")[0] == expected
    assert "recovery  failed   30.000 s" in failures[0].text and "verify    skipped  0.000 s" in failures[0].text
    out = cases[0].find("system-out").text.splitlines()
    assert out[:3] == ["RTO 11.000 s", "RPO 100.000 s", "set 20261207T020000Z (logical-db, s3://backups/pgdr)"]
    assert "verified ok: row counts and fingerprints (14 tables)" in out
    assert cases[3].find("system-out").text.splitlines()[:2] == ["RTO not measured", "RPO not measured"]
    assert all(case.find("failure") is None for index, case in enumerate(cases) if index != 3)


def test_junit_follows_the_common_schema():
    # the structure Jenkins' and GitLab's readers expect: no unknown elements, numeric counts, ISO timestamps without zone
    root = ET.fromstring(rp.junit_xml(fleet()))
    for suite in root:
        assert suite.tag == "testsuite"
        assert set(suite.attrib) == {"name", "id", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname"}
        assert rp.epoch_of(suite.get("timestamp") + "Z") >= T0
        for case in suite:
            assert case.tag == "testcase" and set(case.attrib) == {"classname", "name", "time"}
            assert {child.tag for child in case} <= {"failure", "system-out"}
            float(case.get("time"))


def test_junit_strips_what_xml_forbids_in_names_too():
    report = fleet([drill("db\x01one", "replica\x0b1")])
    root = ET.fromstring(rp.junit_xml(report))
    assert root.find("testsuite").get("name") == "replica1"
    assert root.find(".//testcase").get("classname") == "pgdr.drill.dbone"


def test_junit_of_an_empty_run():
    root = ET.fromstring(rp.junit_xml(fleet([])))
    assert (root.get("tests"), root.get("failures"), list(root)) == ("0", "0", [])


# --- the Prometheus textfile --------------------------------------------------------------------------------


def samples(families, name):
    return {(labels["cluster"], labels["host"], labels["drill"]): value for labels, value in families[name]["samples"]}


def test_textfile_parses_with_one_series_per_drill():
    report = fleet()
    families = parse_exposition(rp.textfile(report))
    assert set(families) == {name for name, _help in rp.METRICS}
    assert all(family["type"] == "gauge" for family in families.values())
    assert set(families["pgdr_drill_last_result"]["samples"][0][0]) == {"cluster", "host", "drill"}
    assert samples(families, "pgdr_drill_last_result") == {("db1", "replica1", "logical"): 1, ("db1", "replica1", "pitr"): 1,
                                                           ("db2", "replica2", "logical"): 1, ("db2", "replica2", "pitr"): 0,
                                                           ("db3", "replica3", "logical"): 1, ("db3", "replica3", "pitr"): 1}
    rto = samples(families, "pgdr_drill_rto_seconds")
    assert ("db2", "replica2", "pitr") not in rto and rto[("db3", "replica3", "pitr")] == 23.0 and len(rto) == 5
    assert samples(families, "pgdr_drill_rpo_seconds")[("db1", "replica1", "logical")] == 100.0
    last_run = samples(families, "pgdr_drill_last_run_timestamp_seconds")
    assert last_run[("db2", "replica2", "pitr")] == T0 + 62 + 40.25
    success = samples(families, "pgdr_drill_last_success_timestamp_seconds")
    assert success[("db2", "replica2", "pitr")] == 0  # never, as far as this run knows
    assert success[("db1", "replica1", "logical")] == T0 + 1 + 40.25


def test_metric_names_follow_prometheus_conventions():
    for name, text in rp.METRICS:
        assert name.startswith("pgdr_drill_") and not name.endswith("_total")
        if "timestamp" in name or name.endswith(("_rto_seconds", "_rpo_seconds")):
            assert name.endswith("_seconds"), name
        assert text.endswith(".")


def test_textfile_carries_the_last_success_from_the_history(tmp_path):
    folder = str(tmp_path)
    day = 86400
    runs = [run_at(T0, failed_pitr_db2=False, run_id="r1"), run_at(T0 + day, run_id="r2"), run_at(T0 + 2 * day, run_id="r3")]
    for report in runs[:2]:
        rp.write_run(folder, report)
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "report.json").write_text("garbage")  # a corrupt run on the way does not break the chain
    previous = rp.last_successes(rp.history(folder, limit=None)["runs"])
    assert previous[("db2", "replica2", "pitr")] == T0 + 62 + 40.25  # r1: it failed in r2
    families = parse_exposition(rp.textfile(runs[2], previous))
    success = samples(families, "pgdr_drill_last_success_timestamp_seconds")
    assert success[("db2", "replica2", "pitr")] == T0 + 62 + 40.25
    assert success[("db1", "replica1", "logical")] == T0 + 2 * day + 41.25  # this run's own success wins over an older one
    assert samples(families, "pgdr_drill_last_result")[("db2", "replica2", "pitr")] == 0
    # a Report works as well as history entries
    assert rp.last_successes([runs[0]])[("db2", "replica2", "pitr")] == T0 + 62 + 40.25


def test_textfile_escapes_label_values():
    strange = 'db "one"\\two'
    families = parse_exposition(rp.textfile(fleet([drill(strange)])))
    assert families["pgdr_drill_last_result"]["samples"][0][0]["cluster"] == strange


def test_an_empty_run_writes_an_empty_but_valid_textfile():
    families = parse_exposition(rp.textfile(fleet([])))
    assert set(families) == {name for name, _help in rp.METRICS} and all(family["samples"] == [] for family in families.values())


# --- set_stats ----------------------------------------------------------------------------------------------


def test_stats_for_an_awx_workflow():
    report = fleet()
    paths = {"json": "/r/x/report.json", "junit": "/r/x/junit.xml", "html": "/r/x/report.html"}
    result = rp.stats(report, paths)
    assert result == dict(
        pgdr_drill_run_id="20261207T080000Z-ab12cd", pgdr_drill_drills=6, pgdr_drill_passed=5, pgdr_drill_failed=1, pgdr_drill_hosts=3,
        pgdr_drill_worst_rto_seconds=23.0, pgdr_drill_worst_rpo_seconds=300.0,
        pgdr_drill_failures=["drill pitr of db2 on replica2: recovery did not reach the restore point"], pgdr_drill_report_paths=paths)
    json.dumps(result)  # set_stats data must be plain JSON
    paths["json"] = "changed"
    assert result["pgdr_drill_report_paths"]["json"] == "/r/x/report.json"


def test_the_report_is_not_changed_by_its_readers():
    report = fleet()
    before = copy.deepcopy(report.to_dict())
    rp.junit_xml(report)
    rp.textfile(report, {})
    rp.stats(report, {})
    report.to_dict()["drills"][0]["phases"].append("x")
    assert report.to_dict() == before


# --- the examples in docs/drill-reports.md are what the code writes -----------------------------------------


def doc_blocks():
    with open(os.path.join(PROJECT, "docs", "drill-reports.md"), encoding="utf-8") as handle:
        text = handle.read()
    blocks = {}
    for language, body in re.findall(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        blocks.setdefault(language, []).append(body)
    return blocks


def test_the_doc_examples_are_what_the_code_writes():
    blocks = doc_blocks()
    report = rp.check_report(json.loads(blocks["json"][0]))
    assert report.summary["failed"] == 1 and report.summary["hosts"] == 2
    assert blocks["xml"] == [rp.junit_xml(report)]
    previous = {("main18", "replica18", "pitr"): rp.epoch_of("2026-12-06T08:01:49.300Z")}
    assert blocks["text"] == [rp.textfile(report, previous)]
    parse_exposition(blocks["text"][0])
    folder = "/var/lib/pgdr/drills/%s/" % report.run_id
    paths = {"json": folder + "report.json", "junit": folder + "junit.xml", "html": folder + "report.html"}
    assert json.loads(blocks["json"][1]) == rp.stats(report, paths)
    jsonschema.Draft202012Validator(schema()).validate(json.loads(blocks["json"][0]))
