"""docs/monitoring.md tells the truth about schedule.status: its metrics table, status example and alert rules.

promtool is not installed here, so the rules are checked as YAML and against the metrics the code writes.
"""

import json
import os
import re

import yaml

from ansible_collections.pgdr.backup.plugins.module_utils.schedule import status as st

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(PROJECT, "docs", "monitoring.md")
NODE_EXPORTER_METRICS = {"node_textfile_scrape_error", "node_textfile_mtime_seconds"}
EXPECTED_ALERTS = {"PgdrBackupTooOld", "PgdrBackupLastRunFailed", "PgdrWalArchiveFailing", "PgdrBackupVerifyFailed", "PgdrBackupStatusMissing"}


def doc_text():
    with open(DOC, encoding="utf-8") as handle:
        return handle.read()


def fenced_blocks(language):
    return re.findall(r"^```%s\n(.*?)^```$" % language, doc_text(), re.M | re.S)


def rules_file():
    found = [yaml.safe_load(block) for block in fenced_blocks("yaml")]
    found = [doc for doc in found if isinstance(doc, dict) and "groups" in doc]
    assert len(found) == 1, "one yaml block with the rule groups"
    return found[0]


def rules():
    return [rule for group in rules_file()["groups"] for rule in group["rules"]]


def test_the_rules_parse_and_are_complete():
    groups = rules_file()["groups"]
    assert [sorted(group) for group in groups] == [["name", "rules"]] * len(groups)
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    assert EXPECTED_ALERTS <= set(names)
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        for text in [rule["expr"]] + list(rule["annotations"].values()):
            assert text.count("{{") == text.count("}}"), rule["alert"]


def test_the_rules_use_only_metrics_and_labels_the_code_writes():
    written = {name for name, _kind, _help in st.METRICS}
    labels = {label for label, _key in st.BACKUP_LABELS} | {"instance", "result"}
    for rule in rules():
        used = set(re.findall(r"\b((?:pgdr|node)_[a-z_]+)\b", rule["expr"]))
        assert used, rule["alert"]
        assert used <= written | NODE_EXPORTER_METRICS, (rule["alert"], used - written)
        text = rule["expr"] + " ".join(rule["annotations"].values())
        for label in re.findall(r"\$labels\.(\w+)", text) + re.findall(r"by \(([^)]*)\)", text):
            for name in label.split(","):
                assert name.strip() in labels, (rule["alert"], name)
        for matcher in re.findall(r"(\w+)=~?\"", rule["expr"]):
            assert matcher in labels, (rule["alert"], matcher)


def test_the_threshold_is_the_stated_choice():
    too_old = [rule for rule in rules() if rule["alert"] == "PgdrBackupTooOld"][0]
    assert "26 * 3600" in too_old["expr"] and "max by (cluster, backup_job, kind)" in too_old["expr"]
    assert "**26 hours**" in doc_text()


def test_the_metrics_table_is_what_the_code_writes():
    rows = re.findall(r"^\| `((?:pgdr)_[a-z_]+)` \| (\w+) \| (.+) \|$", doc_text(), re.M)
    assert [(name, kind) for name, kind, _meaning in rows] == [(name, kind) for name, kind, _help in st.METRICS]


def test_the_status_example_has_the_keys_the_code_writes():
    blocks = fenced_blocks("json")
    assert len(blocks) == 1
    example = json.loads(blocks[0])
    outcome = st.RunOutcome("nightly", "db1", "logical-db", "r", "success", "", 1.0, 2.0, verify="ok", wal=dict(archived_count=1))
    written = st.next_status(None, outcome)
    assert sorted(example) == sorted(written)
    assert sorted(example["wal"]) == sorted(written["wal"]) and sorted(example["runs_total"]) == sorted(written["runs_total"])
    assert example["format"] == st.FORMAT


def test_the_paths_in_the_doc_are_the_codes():
    text = doc_text()
    assert st.status_path(st.STATE_DIR, "nightly").replace("nightly", "<name>") in text
    assert st.textfile_path(st.TEXTFILE_DIR, "nightly").replace("nightly", "<name>") in text
