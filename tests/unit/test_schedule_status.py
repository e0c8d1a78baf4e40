"""schedule.status: the status a run leaves, its Prometheus textfile, and how both are written and read back.

prometheus_client is not installed in .venv, so the textfile is checked by the strict parser below (the text
exposition format 0.0.4 as Prometheus documents it), which its own tests prove refuses what Prometheus refuses.
"""

import json
import os
import re
import stat

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import status as st

T0 = 1_765_000_000.0  # epoch seconds, Dec 2025


def outcome(result="success", at=T0, **kw):
    values = dict(job="nightly", cluster="main15", kind="logical-db", repository="local:/var/backups/pgdr", result=result,
                  reason="" if result == "success" else "why: %s" % result, started_at=at, finished_at=at + 90.5)
    if result == "success":
        values.update(backup_id="20251206T050000Z", size_bytes=123456, sets_kept=3, bytes_kept=400000, oldest_set_at=at - 3 * 86400)
    values.update(kw)
    return st.RunOutcome(**values)


# --- a strict parser of the text exposition format ----------------------------------------------------------

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_exposition(text):
    """{family: dict(type=, help=, samples=[(labels dict, float)])}; AssertionError on anything Prometheus would
    refuse (and a little more: every family needs HELP and TYPE before its samples, and samples are contiguous)."""
    assert text.endswith("\n"), "the last line must end with a line feed"
    families, order, seen_series = {}, [], set()
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d: %r" % (number, line)
        assert line.strip() == line and line, where
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert NAME_RE.match(name), where
                family = families.setdefault(name, dict(type=None, help=None, samples=[]))
                assert not family["samples"], "HELP/TYPE after samples, " + where
                key = parts[1].lower()
                assert family[key] is None, "second %s, %s" % (parts[1], where)
                value = parts[3] if len(parts) == 4 else ""
                if key == "type":
                    assert value in TYPES, where
                else:
                    assert re.fullmatch(r"(?:[^\\]|\\[\\n])*", value), "bad escape in HELP, " + where
                family[key] = value
                if not order or order[-1] != name:
                    assert name not in order, "family %s split, %s" % (name, where)
                    order.append(name)
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?", line)
        assert match, "not a sample, " + where
        name, _braces, label_text, value, timestamp = match.groups()
        labels = {}
        if label_text:
            rest = label_text
            while rest:
                pair = LABEL_RE.match(rest)
                assert pair, "bad label in " + where
                assert pair.group(1) not in labels, "label twice, " + where
                labels[pair.group(1)] = pair.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
                rest = rest[pair.end():]
                assert rest == "" or rest.startswith(","), where
                rest = rest[1:]
        assert value in ("+Inf", "-Inf", "NaN") or re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value), "bad value, " + where
        assert timestamp is None, "a timestamp, which node_exporter's textfile collector refuses, " + where
        family = families.get(name)
        assert family and family["type"] and family["help"] is not None, "a sample without HELP and TYPE before it, " + where
        assert order[-1] == name, "family %s split, %s" % (name, where)
        series = (name, tuple(sorted(labels.items())))
        assert series not in seen_series, "a series twice, " + where
        seen_series.add(series)
        family["samples"].append((labels, float(value)))
    return families


@pytest.mark.parametrize("bad", [
    'pgdr_x{job="a"} 1\n',  # no TYPE/HELP
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x{job="a"b"} 1\n',  # unescaped quote
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x{job="a\\tb"} 1\n',  # an escape the format does not have
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x{job="a"} 1\npgdr_x{job="a"} 2\n',  # the same series twice
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x{job="a"} one\n',
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x{job="a"} 1 1765000000000\n',  # a timestamp
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x{job="a"} 1',  # no final line feed
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\n# TYPE pgdr_x counter\npgdr_x 1\n',
    '# HELP pgdr_x h\n# TYPE pgdr_x meter\npgdr_x 1\n',
    '# HELP pgdr-x h\n# TYPE pgdr-x gauge\npgdr-x 1\n',
    '# HELP pgdr_x h\n# TYPE pgdr_x gauge\npgdr_x 1\n# HELP pgdr_y h\n# TYPE pgdr_y gauge\npgdr_y 1\npgdr_x 2\n',  # split family
])
def test_the_parser_refuses_what_prometheus_refuses(bad):
    with pytest.raises(AssertionError):
        parse_exposition(bad)


def test_the_parser_reads_a_good_exposition():
    text = '# HELP pgdr_x a \\\\ help\\nline\n# TYPE pgdr_x counter\npgdr_x{job="a\\"b\\\\c\\nd",k="v"} 1.5e3\npgdr_x{job="z"} 2\n'
    assert parse_exposition(text) == {"pgdr_x": dict(type="counter", help="a \\\\ help\\nline",
                                                     samples=[({"job": 'a"b\\c\nd', "k": "v"}, 1500.0), ({"job": "z"}, 2.0)])}


# --- next_status --------------------------------------------------------------------------------------------


def test_first_success():
    status = st.next_status(None, outcome(pruned=("old1", "old2"), verify="ok"))
    assert status["format"] == st.FORMAT
    assert status["last_result"] == "success" and status["last_reason"] == ""
    assert status["last_success_timestamp"] == T0 + 90.5
    assert status["last_run_duration_seconds"] == status["last_success_duration_seconds"] == 90.5
    assert (status["last_backup_id"], status["last_size_bytes"], status["sets_kept"], status["bytes_kept"]) == ("20251206T050000Z", 123456, 3, 400000)
    assert status["oldest_set_timestamp"] == T0 - 3 * 86400
    assert status["runs_total"] == {"success": 1, "failed": 0, "skipped": 0}
    assert status["last_pruned"] == ["old1", "old2"] and status["pruned_sets_total"] == 2
    assert (status["verify"], status["verify_timestamp"]) == ("ok", T0 + 90.5)
    assert status["wal"] is None
    assert json.loads(json.dumps(status)) == status  # plain JSON


def test_a_failed_or_skipped_run_keeps_the_last_good_values():
    good = st.next_status(None, outcome(pruned=("old1",)))
    keep = ("last_success_timestamp", "last_success_duration_seconds", "last_backup_id", "last_size_bytes", "sets_kept", "bytes_kept",
            "oldest_set_timestamp")
    failed = st.next_status(good, outcome("failed", at=T0 + 86400))
    for key in keep:
        assert failed[key] == good[key], key
    assert (failed["last_result"], failed["last_reason"]) == ("failed", "why: failed")
    assert failed["last_run_finished_at"] == T0 + 86400 + 90.5
    assert failed["runs_total"] == {"success": 1, "failed": 1, "skipped": 0}
    assert failed["last_pruned"] == [] and failed["pruned_sets_total"] == 1
    skipped = st.next_status(failed, outcome("skipped", at=T0 + 2 * 86400, reason="not the primary (pg_is_in_recovery)"))
    for key in keep:
        assert skipped[key] == good[key], key
    assert skipped["last_reason"] == "not the primary (pg_is_in_recovery)"
    assert skipped["runs_total"] == {"success": 1, "failed": 1, "skipped": 1}
    again = st.next_status(skipped, outcome(at=T0 + 3 * 86400, backup_id="new", pruned=("a", "b")))
    assert (again["last_backup_id"], again["last_success_timestamp"]) == ("new", T0 + 3 * 86400 + 90.5)
    assert again["runs_total"] == {"success": 2, "failed": 1, "skipped": 1} and again["pruned_sets_total"] == 3


def test_a_run_that_never_succeeded():
    status = st.next_status(None, outcome("failed"))
    assert status["last_success_timestamp"] is None and status["last_backup_id"] is None
    assert "pgdr_backup_last_success_timestamp_seconds{" in st.textfile(status)
    families = parse_exposition(st.textfile(status))
    assert families["pgdr_backup_last_success_timestamp_seconds"]["samples"][0][1] == 0.0  # never: 0, so "too old" fires
    assert "pgdr_backup_last_size_bytes" not in families


def test_verify_and_wal_are_fresh_observations():
    wal = dict(last_archived_at=T0 - 30, last_failed_at=None, failed_count=0, archived_count=812, checked_at=T0)
    good = st.next_status(None, outcome(verify="ok", wal=wal))
    assert good["wal"] == wal
    # the verify that fails the run is what the status must show
    bad = st.next_status(good, outcome("failed", at=T0 + 100, verify="failed", wal=dict(wal, failed_count=4, last_failed_at=T0 + 50)))
    assert (bad["verify"], bad["verify_timestamp"]) == ("failed", T0 + 190.5)
    assert bad["wal"]["failed_count"] == 4 and bad["wal"]["last_failed_at"] == T0 + 50
    # a run that looked at neither keeps what the last look saw
    quiet = st.next_status(bad, outcome("skipped", at=T0 + 200))
    assert (quiet["verify"], quiet["wal"]) == ("failed", bad["wal"])
    assert st.next_status(None, outcome(wal={"archived_count": 3}))["wal"] == dict(last_archived_at=None, last_failed_at=None, failed_count=None,
                                                                                   archived_count=3, checked_at=None)


@pytest.mark.parametrize("previous", [None, {}, [], "text", {"format": 99, "runs_total": {"success": 50}}, {"format": 1, "runs_total": "x"},
                                      {"format": 1, "runs_total": {"success": -3, "failed": True}, "pruned_sets_total": "7"}])
def test_an_unusable_previous_status_starts_afresh(previous):
    status = st.next_status(previous, outcome("failed"))
    assert status["runs_total"] == {"success": 0, "failed": 1, "skipped": 0}
    assert status["pruned_sets_total"] == 0


def test_bad_outcomes_refused():
    with pytest.raises(PgdrError, match="result must be one of success, failed, skipped"):
        st.next_status(None, outcome(result="ok"))
    with pytest.raises(PgdrError, match="verify"):
        st.next_status(None, outcome(verify="yes"))
    with pytest.raises(PgdrError, match="wal"):
        st.next_status(None, outcome(wal=[1]))


def test_summary_is_the_modules_status_return():
    status = st.next_status(st.next_status(None, outcome(pruned=("p1",))), outcome("failed", at=T0 + 10, reason="pg_dump exited 1"))
    assert st.summary(status) == dict(result="failed", reason="pg_dump exited 1", backup_id="20251206T050000Z", size_bytes=123456,
                                      duration_seconds=90.5, sets_kept=3, bytes_kept=400000, pruned=[], last_success_timestamp=T0 + 90.5)


# --- the textfile -------------------------------------------------------------------------------------------


def full_status():
    wal = dict(last_archived_at=T0 - 30.25, last_failed_at=T0 - 3600, failed_count=2, archived_count=812, checked_at=T0 - 1)
    first = st.next_status(None, outcome(pruned=("old1",), verify="ok", wal=wal))
    return st.next_status(first, outcome("failed", at=T0 + 86400, verify="failed"))


def test_textfile_parses_and_holds_every_metric():
    families = parse_exposition(st.textfile(full_status()))
    assert set(families) == {name for name, _type, _help in st.METRICS}
    labels = {"backup_job": "nightly", "cluster": "main15", "kind": "logical-db", "repository": "local:/var/backups/pgdr"}

    def value(name, **extra):
        found = [v for lbls, v in families[name]["samples"] if lbls == (dict(labels, **extra) if name.startswith("pgdr_backup_") else
                                                                        dict(backup_job="nightly", cluster="main15", **extra))]
        assert len(found) == 1, (name, families[name])
        return found[0]

    assert value("pgdr_backup_last_success_timestamp_seconds") == T0 + 90.5
    assert value("pgdr_backup_last_run_timestamp_seconds") == T0 + 86400 + 90.5
    assert value("pgdr_backup_last_run_duration_seconds") == value("pgdr_backup_last_duration_seconds") == 90.5
    assert value("pgdr_backup_last_size_bytes") == 123456
    assert value("pgdr_backup_last_run_success") == 0 and value("pgdr_backup_last_run_skipped") == 0
    assert [value("pgdr_backup_runs_total", result=r) for r in ("success", "failed", "skipped")] == [1, 1, 0]
    assert (value("pgdr_backup_sets_kept"), value("pgdr_backup_kept_bytes")) == (3, 400000)
    assert value("pgdr_backup_oldest_set_timestamp_seconds") == T0 - 3 * 86400
    assert value("pgdr_backup_pruned_sets_total") == 1
    assert value("pgdr_backup_verify_success") == 0 and value("pgdr_backup_last_verify_timestamp_seconds") == T0 + 86400 + 90.5
    assert value("pgdr_wal_archive_last_archived_timestamp_seconds") == T0 - 30.25
    assert value("pgdr_wal_archive_last_failed_timestamp_seconds") == T0 - 3600
    assert (value("pgdr_wal_archive_failures_total"), value("pgdr_wal_archive_archived_total")) == (2, 812)


def test_metric_names_follow_prometheus_conventions():
    names = [name for name, _type, _help in st.METRICS]
    assert len(names) == len(set(names))
    for name, kind, text in st.METRICS:
        assert name.startswith(("pgdr_backup_", "pgdr_wal_archive_")), name
        assert (kind == "counter") == name.endswith("_total"), name
        assert not re.search(r"_(milliseconds|ms|minutes|hours|kilobytes|mb|gb|time)(_|$)", name), name  # base units only
        if "timestamp" in name or "duration" in name:
            assert name.endswith("_seconds"), name
        if "size" in name or "bytes" in name:
            assert name.endswith("_bytes"), name
        assert text and text.endswith(".")


def test_skipped_run_metrics():
    skipped = st.next_status(st.next_status(None, outcome()), outcome("skipped", at=T0 + 100, reason="a standby"))
    families = parse_exposition(st.textfile(skipped))
    assert "pgdr_backup_last_run_success" not in families  # neither success nor failure: no alert on a standby
    assert families["pgdr_backup_last_run_skipped"]["samples"][0][1] == 1
    assert families["pgdr_backup_last_success_timestamp_seconds"]["samples"][0][1] == T0 + 90.5
    assert "pgdr_backup_verify_success" not in families and "pgdr_wal_archive_failures_total" not in families
    success = parse_exposition(st.textfile(st.next_status(None, outcome())))
    assert success["pgdr_backup_last_run_success"]["samples"][0][1] == 1


def test_label_values_are_escaped():
    strange = 's3:bucket "b\\ck"\nprefix'
    status = st.next_status(None, outcome(repository=strange, cluster='c"1'))
    text = st.textfile(status)
    assert 'repository="s3:bucket \\"b\\\\ck\\"\\nprefix"' in text
    families = parse_exposition(text)
    assert families["pgdr_backup_sets_kept"]["samples"][0][0]["repository"] == strange
    assert families["pgdr_backup_sets_kept"]["samples"][0][0]["cluster"] == 'c"1'


def test_numbers():
    assert [st._number(v) for v in (True, 0, 12, 1.5, 1765000000.0, 0.1234, 1e20)] == ["1", "0", "12", "1.5", "1765000000", "0.123",
                                                                                       "100000000000000000000"]
    with pytest.raises(PgdrError):
        st._number(float("nan"))


# --- files --------------------------------------------------------------------------------------------------


def test_paths():
    assert st.status_path("/var/lib/pgdr/backup", "nightly") == "/var/lib/pgdr/backup/nightly.json"
    assert st.textfile_path("/var/lib/prometheus/node-exporter", "nightly") == "/var/lib/prometheus/node-exporter/pgdr_backup_nightly.prom"
    with pytest.raises(PgdrError):
        st.status_path("/x", "../etc")


def test_write_atomic_creates_folders_readable_whatever_the_umask(tmp_path):
    path = tmp_path / "a" / "b" / "pgdr_backup_n.prom"
    old = os.umask(0o077)
    try:
        st.write_atomic(str(path), "one\n")
    finally:
        os.umask(old)
    assert path.read_text() == "one\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755 and stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o755
    st.write_atomic(str(path), "two\n", mode=0o600)
    assert path.read_text() == "two\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == [path.name]  # no temporary file left


def test_write_atomic_replaces_by_rename(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("old\n")
    reader = open(path, encoding="utf-8")  # a reader that opened the old file keeps reading it whole
    try:
        st.write_atomic(str(path), "new\n")
        assert reader.read() == "old\n"
    finally:
        reader.close()
    assert path.read_text() == "new\n"


def test_write_atomic_owner(tmp_path):
    path = tmp_path / "own" / "s.json"
    st.write_atomic(str(path), "x", owner=(12345, 23456))
    if os.geteuid() == 0:
        assert (path.stat().st_uid, path.stat().st_gid) == (12345, 23456)
        assert (path.parent.stat().st_uid, path.parent.stat().st_gid) == (12345, 23456)  # the job's user writes there later
        assert tmp_path.stat().st_uid == 0
    else:
        assert path.stat().st_uid == os.geteuid()  # only root can give files away
    with pytest.raises(PgdrError, match="user 'pgdrt-no-such-user' does not exist"):
        st.write_atomic(str(path), "x", owner="pgdrt-no-such-user")


def test_write_atomic_fails_in_one_line_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PgdrError) as caught:
        st.write_atomic(str(blocker / "s.json"), "x")
    assert "\n" not in caught.value.msg and caught.value.msg.startswith("cannot write %s" % (blocker / "s.json"))
    # the rename fails after the temporary file was written: it is removed
    target = tmp_path / "d" / "s.json"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(PgdrError, match="cannot write"):
        st.write_atomic(str(target), "x")
    assert os.listdir(target.parent) == ["s.json"]


def test_load_status(tmp_path):
    path = tmp_path / "nightly.json"
    assert st.load_status(str(path)) is None
    status = st.next_status(None, outcome())
    st.write_status(str(path), status)
    assert st.load_status(str(path)) == status
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b"null", b"\xff\xfe{}", b'{"format": 1'])
def test_a_corrupt_status_is_not_fatal(tmp_path, content):
    path = tmp_path / "nightly.json"
    path.write_bytes(content)
    assert st.load_status(str(path)) is None
    # the next run starts afresh and its write replaces the broken file
    st.write_status(str(path), st.next_status(st.load_status(str(path)), outcome()))
    assert st.load_status(str(path))["runs_total"] == {"success": 1, "failed": 0, "skipped": 0}


def test_an_unreadable_status_is_not_fatal(tmp_path):
    folder = tmp_path / "nightly.json"
    folder.mkdir()  # open() fails with IsADirectoryError
    assert st.load_status(str(folder)) is None


def test_a_hand_edited_status_does_not_break_the_textfile():
    previous = {"format": 1, "last_success_timestamp": "yesterday", "last_size_bytes": True, "sets_kept": float("inf"), "wal": "x",
                "verify": ["ok"], "last_backup_id": 7}
    status = st.next_status(previous, outcome("failed"))
    assert [status[key] for key in ("last_success_timestamp", "last_size_bytes", "sets_kept", "wal", "verify", "last_backup_id")] == [None] * 6
    families = parse_exposition(st.textfile(status))
    assert families["pgdr_backup_last_success_timestamp_seconds"]["samples"][0][1] == 0
    kept = st.next_status({"format": 1, "wal": {"archived_count": 5, "failed_count": "many"}, "verify": "failed", "verify_timestamp": T0}, outcome("failed"))
    assert kept["wal"] == dict(last_archived_at=None, last_failed_at=None, failed_count=None, archived_count=5, checked_at=None)
    assert (kept["verify"], kept["verify_timestamp"]) == ("failed", T0)


def test_a_wal_watcher_writes_only_the_archive_metrics():
    wal = dict(last_archived_at=T0 - 30, last_failed_at=T0 - 10, failed_count=3, archived_count=812, checked_at=T0)
    status = st.next_status(None, outcome(kind=st.WATCH_KIND, wal=wal))
    families = parse_exposition(st.textfile(status))
    assert set(families) == {name for name, _type, _help in st.METRICS if name.startswith("pgdr_wal_archive_")}
    assert families["pgdr_wal_archive_last_check_timestamp_seconds"]["samples"][0][1] == T0
    # a backup job's textfile carries the same archive metrics beside its own
    assert "pgdr_backup_last_success_timestamp_seconds" in parse_exposition(st.textfile(st.next_status(None, outcome(wal=wal))))
