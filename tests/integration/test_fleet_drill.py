"""playbooks/fleet_drill.yml on the lab's fleet pairs (at least 3): every primary drilled on its paired drill host at
once, one pair made to fail (its drill host is given PostgreSQL 15 binaries for a PostgreSQL 18 source), the others
still pass, the report holds every host and says why the failed one failed, and the play fails at the end."""

import json
import os
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.drill.report import check_report

pytestmark = pytest.mark.lab

PLAYBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "playbooks", "fleet_drill.yml")
DRILLS = ["logical", "standalone"]


def test_a_fleet_drill_reports_every_pair_and_fails_only_after_the_report(ansible, lab, fleet, tmp_path):
    failing = fleet[1][1].name  # the second pair's drill host
    report_dir = tmp_path / "reports"
    run = ansible.playbook(PLAYBOOK, forks=len(fleet) + 1, extra_vars=dict(
        fleet_primaries="fleet_primary", fleet_replicas="fleet_replica", restore_drill_drills=",".join(DRILLS),
        restore_drill_login_password=lab.pg_password, restore_drill_report_dir=str(report_dir),
        restore_drill_textfile=str(tmp_path / "pgdr_drill.prom"),
        # a wrong client for one pair only: a configuration mistake the drill must report, not stop the fleet for
        restore_drill_pg_bin_dir="{{ '/usr/lib/postgresql/15/bin' if inventory_hostname == '%s' else '' }}" % failing))
    assert run.rc != 0, run.output[-3000:]
    assert "failed on %s" % failing in run.output

    runs = sorted(report_dir.iterdir())
    assert len(runs) == 1
    report = check_report(json.loads((runs[0] / "report.json").read_text()))
    assert {(d.source_host, d.drill_host) for d in report.drills} == {(p.name, r.name) for p, r in fleet}
    assert len(report.drills) == len(fleet) * len(DRILLS)
    for drill in report.drills:
        if drill.drill_host == failing:
            assert drill.result == "failed" and "pg_bin_dir /usr/lib/postgresql/15/bin" in drill.reason, drill.reason
            assert drill.cleanup == "done"
        else:
            assert drill.result == "passed", (drill.drill_host, drill.reason)
    assert report.summary["failed"] == len(DRILLS) and report.summary["hosts"] == len(fleet)

    suite = ET.parse(runs[0] / "junit.xml").getroot()
    failures = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert len(list(suite.iter("testcase"))) == len(report.drills) and len(failures) == len(DRILLS)
    assert all(failing in case.get("classname", "") + case.get("name", "") for case in failures)

    stats = run.result("Hand the fleet summary to the next nodes of an AWX workflow", fleet[0][1].name)["ansible_stats"]["data"]
    assert stats["pgdr_drill_failed"] == len(DRILLS) and stats["pgdr_drill_passed"] == len(report.drills) - len(DRILLS)
    assert stats["pgdr_drill_report_paths"]["html"] == str(runs[0] / "report.html")
    for primary, replica in fleet:  # nothing stays: no slot, no scratch folder
        assert replica.run(["ls", "-A", "/var/lib/postgresql/pgdr-drill"], check=False).stdout.split() == []
        assert primary.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgdr_drill_%'").strip() == "0"
