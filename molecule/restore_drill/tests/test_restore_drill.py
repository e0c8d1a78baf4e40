"""Verifier: the report the role wrote on the controller (JSON, JUnit, HTML, textfile) holds the three drills, passed,
and neither host kept anything of them: no scratch folder or server on replica15, no slot or marker rows on primary15,
and replica15's own cluster still runs."""

import glob
import json
import os
import xml.etree.ElementTree as ET

import testinfra

from ansible_collections.pgdr.backup.plugins.module_utils.drill.report import check_report

testinfra_hosts = ["replica15"]

REPORT_DIR = os.environ["RD_REPORT_DIR"]
DRILL_DIR = "/var/lib/postgresql/rd-molecule"  # as in vars/rd.yml


def the_run():
    runs = sorted(glob.glob(os.path.join(REPORT_DIR, "*", "report.json")))
    assert len(runs) == 1, runs  # check mode wrote none, converge one
    return os.path.dirname(runs[0])


def test_the_report_holds_the_three_drills_passed():
    folder = the_run()
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as handle:
        report = check_report(json.load(handle))
    assert [(d.drill, d.result, d.drill_host, d.source_host) for d in report.drills] == [
        ("logical", "passed", "replica15", "primary15"), ("standalone", "passed", "replica15", "primary15"), ("pitr", "passed", "replica15", "primary15")]
    assert all(d.rto_seconds > 0 and d.cleanup == "done" for d in report.drills)
    cases = ET.parse(os.path.join(folder, "junit.xml")).getroot().iter("testcase")
    assert len(list(cases)) == 3
    with open(os.path.join(folder, "report.html"), encoding="utf-8") as handle:
        assert "rd-molecule" in handle.read()
    with open(REPORT_DIR + ".prom", encoding="utf-8") as handle:
        text = handle.read()
    assert 'pgdr_drill_last_result{cluster="rd-molecule",host="replica15",drill="pitr"} 1' in text


def test_nothing_of_the_drills_stayed_on_the_drill_host(host):
    assert host.run("ls -A %s" % DRILL_DIR).stdout.split() == []
    assert host.run("pg_isready -h /run/postgresql -p 5497").rc != 0  # the scratch server is gone
    assert host.run("/usr/lib/postgresql/15/bin/pg_isready -h /run/postgresql -p 5432").rc == 0  # the replica's own still runs


def test_nothing_of_the_drills_stayed_on_the_primary():
    primary = testinfra.get_host("ansible://primary15?ansible_inventory=%s/.lab/inventory.yml" % os.environ["MOLECULE_PROJECT_DIRECTORY"])
    sql = ("SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgdr_drill_%') || ',' || "
           "(SELECT count(*) FROM pgdr_drill.markers WHERE drill_id LIKE '%/rd-molecule/%')")
    out = primary.run("runuser -u postgres -- psql -X -At -h /run/postgresql -d postgres -c \"%s\"" % sql)
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "0,0"
