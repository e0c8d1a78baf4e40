"""drill_report through ansible-playbook on the controller, as the restore_drill role calls it: every drill host's
results gathered from hostvars by one task with run_once and delegate_to localhost.

The drill hosts here are inventory names on the local connection (the module runs on the controller only, so no
lab host is needed): each play first sets each host's drill results as a fact, as the drill task registers them,
then writes the report. The drill results are report.py's test drills (tests/unit/test_drill_report.py).
"""

import json
import os
import re
import sys
import types
import xml.etree.ElementTree as ET

import pytest
import yaml

from ansible_collections.pgdr.backup.plugins.module_utils.drill import report as rp
from tests.integration.conftest import Ansible
from tests.unit.test_drill_report import T0, drill

HOSTS = ("replica1", "replica2", "replica3")
REPORT_TASK = "write the drill report"


@pytest.fixture
def controller(tmp_path):
    """Runs plays against an inventory of three drill host names, all on the local connection."""
    inventory = tmp_path / "inventory.yml"
    local = dict(ansible_connection="local", ansible_python_interpreter=sys.executable)
    inventory.write_text(yaml.safe_dump({"all": {"children": {"replica": {"hosts": {host: dict(local) for host in HOSTS}}}}}))
    return Ansible(types.SimpleNamespace(inventory_path=inventory), tmp_path)


def run_drills(day=0, failed_host="replica2"):
    """Each host's drill results of one run: a logical drill on every host, the one of ``failed_host`` failed."""
    return {host: [drill("db%d" % number, host, "logical", "failed" if host == failed_host else "passed", at=T0 + day * 86400 + number,
                         reason="restore of db%d failed: pg_restore exited 1" % number)]
            for number, host in enumerate(HOSTS, 1)}


def report_play(controller, results, args, check=False, hosts="replica"):
    """The role's two steps: each drill host's results as a fact, then one report task on the controller."""
    tasks = [
        {"name": "the drill results of this host", "ansible.builtin.set_fact": {"restore_drill_results": "{{ drill_results[inventory_hostname] }}"},
         "when": "inventory_hostname in drill_results"},
        {"name": REPORT_TASK, "pgdr.backup.drill_report": dict(
            drills="{{ ansible_play_hosts_all | map('extract', hostvars, 'restore_drill_results') | select('defined') | flatten }}", **args),
         "run_once": True, "delegate_to": "localhost", "ignore_errors": True, "register": "drill_report"},
    ]
    run = controller.play(hosts, tasks, become_postgres=False, check=check, extra_vars=dict(drill_results=results))
    assert "Traceback" not in run.output and "MODULE FAILURE" not in run.output, run.output[-3000:]
    return run.result(REPORT_TASK, HOSTS[0] if hosts == "replica" else hosts.split(",")[0])  # run_once: the play's first host


def test_a_fleet_run_writes_json_junit_html_and_textfile_then_a_second_run_charts_both(controller, tmp_path):
    folder, textfile = tmp_path / "reports", tmp_path / "textfile" / "pgdr_drill.prom"
    textfile.parent.mkdir()
    args = dict(folder=str(folder), textfile=str(textfile), controller="controller-1")
    result = report_play(controller, run_drills(), dict(args, run_id="run-1"))
    assert result["_status"] == "ok" and result["changed"] is True and result["complete"] is True, result

    report = rp.check_report(json.loads((folder / "run-1" / "report.json").read_text()))
    assert (report.summary["drills"], report.summary["passed"], report.summary["failed"], report.summary["hosts"]) == (3, 2, 1, 3)
    assert result["failures"] == ["drill logical of db2 on replica2: restore of db2 failed: pg_restore exited 1"]
    assert result["stats"]["pgdr_drill_failed"] == 1 and result["stats"]["pgdr_drill_report_paths"] == result["paths"]

    junit = ET.parse(result["paths"]["junit"]).getroot()
    cases = list(junit.iter("testcase"))
    failures = [case.find("failure") for case in cases if case.find("failure") is not None]
    assert len(cases) == 3 and len(failures) == 1 and failures[0].get("message") == "restore of db2 failed: pg_restore exited 1"

    page = open(result["paths"]["html"], encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "controller-1" in page and 'id="no-history"' in page
    # self-contained: nothing it would fetch, no script
    assert not re.search(r"<script|<link|<img|<iframe|\bsrc=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", page, re.I)

    prom = textfile.read_text()
    series = [line for line in prom.splitlines() if line.startswith("pgdr_drill_")]
    assert {line.split("{")[0] for line in series} == {name for name, _help in rp.METRICS}
    assert 'pgdr_drill_last_result{cluster="db2",host="replica2",drill="logical"} 0' in series

    second = report_play(controller, run_drills(day=1, failed_host=None), dict(args, run_id="run-2"))
    assert second["_status"] == "ok" and second["failures"] == []
    page = open(second["paths"]["html"], encoding="utf-8").read()
    assert 'id="no-history"' not in page and "in each of the last 2 runs" in page
    assert [entry["id"] for entry in rp.history(str(folder))["runs"]] == ["run-1", "run-2"]


def test_the_second_slice_merges_and_a_merge_node_then_changes_nothing(controller, tmp_path):
    folder = tmp_path / "reports"
    results = run_drills()
    first_slice = {host: results[host] for host in ("replica1", "replica2")}
    args = dict(folder=str(folder), run_id="awx-4711", part_count=2)
    part = report_play(controller, first_slice, dict(args, part_index=1, controller="node-a"), hosts="replica1,replica2")
    assert (part["_status"], part["merged"], part["parts_missing"]) == ("ok", False, [2]), part
    assert sorted(os.listdir(folder / "awx-4711")) == ["part-1-of-2.json"]

    last = report_play(controller, {"replica3": results["replica3"]}, dict(args, part_index=2, controller="node-b"), hosts="replica3")
    assert last["_status"] == "ok" and last["merged"] is True and last["parts_present"] == [1, 2], last
    merged = rp.check_report(json.loads((folder / "awx-4711" / "report.json").read_text()))
    assert merged.part_count == 1 and merged.summary["drills"] == 3 and merged.controller == "node-a, node-b"

    merge = controller.module("localhost", "pgdr.backup.drill_report", dict(folder=str(folder), run_id="awx-4711", merge=True), become_postgres=False)
    assert (merge["_status"], merge["changed"], merge["merged"], merge["summary"]) == ("ok", False, True, last["summary"])


def test_check_mode_writes_nothing(controller, tmp_path):
    folder = tmp_path / "reports"
    result = report_play(controller, run_drills(), dict(folder=str(folder), run_id="run-1"), check=True)
    assert result["_status"] == "ok" and result["changed"] is True and len(result["written"]) == 3
    assert not folder.exists()


def test_bad_input_fails_in_one_line_naming_the_field(controller, tmp_path):
    results = run_drills()
    results["replica3"][0]["rto_seconds"] = "fast"
    failed = report_play(controller, results, dict(folder=str(tmp_path / "reports")))
    assert failed["_status"] == "failed"
    assert failed["msg"] == "drills[2].rto_seconds must be a number of seconds >= 0 or null, not 'fast'"
    relative = controller.module("localhost", "pgdr.backup.drill_report", dict(folder="reports", merge=True, run_id="r"), become_postgres=False)
    assert relative["_status"] == "failed" and relative["msg"].startswith("folder 'reports' must be an absolute path") and "\n" not in relative["msg"]
    assert not (tmp_path / "reports").exists()
