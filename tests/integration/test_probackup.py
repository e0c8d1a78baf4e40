"""probackup_instance through ansible-playbook on primary15, against the pg_probackup stand-in or a real binary.

Without PG_PROBACKUP the stand-in (tests/probackup_standin/pg_probackup.py) is installed on the lab host as
pg_probackup and gs_probackup. With PG_PROBACKUP=/path/to/pg_probackup (a binary on this machine built for PostgreSQL 15,
copied onto primary15) the same tests run against the real tool; the gs_probackup checks then need PG_GS_PROBACKUP too.
Expected messages come from the real outputs in tests/probackup_standin/samples/.
"""

import json
import os
import re
import time
import uuid

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.probackup import catalog as pb

MODULE = "pgdr.backup.probackup_instance"
HOST = "primary15"
STANDIN = os.path.join(os.path.dirname(__file__), "..", "probackup_standin", "pg_probackup.py")
SAMPLES = os.path.join(os.path.dirname(__file__), "..", "probackup_standin", "samples")
STANDIN_DIR = "/var/lib/postgresql/pgdr-probackup-standin"  # private to the lab host
REAL_DIR = "/var/lib/postgresql/pgdr-probackup-real"  # a copy of PG_PROBACKUP, private to the lab host
SCRATCH_PORT = 5499  # restored clusters
CLUSTER_PORT = 55432  # the cluster backed up by the lifecycle test


def sample(name):
    with open(os.path.join(SAMPLES, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def primary(lab):
    return lab.host(HOST)


@pytest.fixture(scope="module")
def tools(primary):
    """Paths of pg_probackup (and gs_probackup, or None) on the host: the real ones, or the stand-in installed."""
    real = os.environ.get("PG_PROBACKUP")
    if real:
        # a copy on the host for the postgres user: a build may sit in a folder only root can enter (a mktemp clone)
        primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0755", REAL_DIR])
        primary.run(["install", "-o", "postgres", "-g", "postgres", "-m", "0755", real, REAL_DIR + "/pg_probackup"])
        yield dict(pg=REAL_DIR + "/pg_probackup", gs=os.environ.get("PG_GS_PROBACKUP"), standin=False)
        primary.run(["rm", "-rf", REAL_DIR])
        return
    primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0755", STANDIN_DIR])
    with open(STANDIN) as f:
        program = "#!/usr/bin/python3\n" + f.read()  # the host's own python3, as a real tool would be run
    for name in ("pg_probackup", "gs_probackup"):
        path = "%s/%s" % (STANDIN_DIR, name)
        primary.run(["sh", "-c", 'cat > "$1" && chmod 0755 "$1" && chown postgres:postgres "$1"', "install-standin", path], input=program)
    yield dict(pg=STANDIN_DIR + "/pg_probackup", gs=STANDIN_DIR + "/gs_probackup", standin=True)
    primary.run(["rm", "-rf", STANDIN_DIR])


@pytest.fixture
def catalog(primary):
    """An empty folder for a catalog, owned by postgres as an admin would prepare it."""
    path = "/var/backups/probackup-%s" % uuid.uuid4().hex[:8]
    primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", path])
    yield path
    primary.run(["rm", "-rf", path, path + "-other", path + "-restore", path + "-nonempty"])


def play(ansible, tasks, **kwargs):
    """Run [(name, module args or {module: args}[, task keywords])] as one play; returns {name: result}."""
    built = []
    for name, args, *keywords in tasks:
        task = dict(name=name, ignore_errors=True, **(keywords[0] if keywords else {}))
        if isinstance(args, dict) and len(args) == 1 and "." in next(iter(args)):
            task.update(args)
        else:
            task[MODULE] = args
        if name.startswith("reg_"):
            task["register"] = name
        built.append(task)
    run = ansible.play(HOST, built, **kwargs)
    return {task[0]: run.result(task[0], HOST) for task in tasks}


def ok(result):
    assert result["_status"] in ("ok", "changed"), result.get("msg")
    return result


def failed(result):
    assert result["_status"] == "failed", result
    return result["msg"]


def cli(primary, argv, check=False):
    return primary.run(argv, user="postgres", check=check, env={"LC_ALL": "C.UTF-8"})


def sql(statement, port=5432):
    return ["/usr/lib/postgresql/15/bin/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-p", str(port), "-d", "postgres",
            "-c", statement]  # fmt: skip


def test_catalog_instance_and_config_idempotent_with_check_mode_and_diff(ansible, primary, tools, catalog):
    base = dict(binary=tools["pg"], backup_path=catalog, instance="main")
    config = dict(base, pg_data=primary.pg_data, retention_redundancy=2, retention_window=7, compress_algorithm="zlib", compress_level=1)
    old_name = dict({k: v for k, v in config.items() if k != "pg_data"}, pgdata=primary.pg_data)  # the deprecated alias

    checked = ok(play(ansible, [("plan", config)], check=True, diff=True)["plan"])
    assert checked["changed"] is True and checked["catalog_created"] is True and checked["instance_added"] is True
    assert [argv[1] for argv in checked["would_run"]] == ["init", "add-instance", "set-config"]
    assert checked["diff"]["after"]["retention-redundancy"] == "2"
    assert cli(primary, ["ls", "-A", catalog]).stdout == ""  # check mode wrote nothing

    tighter = dict(config, retention_redundancy=3, pgport=5432)
    nonempty = catalog + "-nonempty"
    primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", nonempty])
    primary.run(["install", "-o", "postgres", "-m", "0600", "/dev/null", nonempty + "/notes.txt"])
    gs = dict(base, binary=tools["gs"])
    done = play(ansible, [
        ("create", config),
        ("again", config),
        ("again by the old name", old_name),
        ("plan change", tighter, {"check_mode": True, "diff": True}),
        ("tighten", tighter),
        ("tightened", tighter),
        ("not a catalog", dict(config, backup_path=nonempty)),
        ("action with config", dict(base, action="backup", retention_redundancy=1)),
        ("config option as action option", dict(base, note="x")),
        ("rw_timeout is gs only", dict(base, action="backup", rw_timeout=30)),
        ("lz4 is gs only", dict(config, compress_algorithm="lz4")),
        ("missing instance", dict(base, instance="nosuch", action="backup", stream=True)),
    ] + ([
        ("gs stream", dict(gs, action="backup", stream=True)),
        ("gs page", dict(gs, action="backup", backup_mode="PAGE")),
        ("gs delta", dict(gs, action="backup", backup_mode="DELTA")),
    ] if tools["gs"] else []))  # fmt: skip
    create, again = ok(done["create"]), ok(done["again"])
    assert create["changed"] is True and create["catalog_created"] is True and create["instance_added"] is True
    assert create["config"]["retention-redundancy"] == 2 and create["config"]["compress-algorithm"] == "zlib"
    assert create["config"]["pgdata"] == primary.pg_data and create["tool"] == "pg_probackup"
    assert again["changed"] is False and again["config_changes"] == {} and again["catalog_created"] is False
    by_old_name = ok(done["again by the old name"])
    assert by_old_name["changed"] is False and by_old_name["config_changes"] == {}

    checked = ok(done["plan change"])
    assert checked["changed"] is True and checked["config_changes"] == {"retention-redundancy": "3", "pgport": "5432"}
    assert checked["diff"]["before"]["retention-redundancy"] == "2" and checked["diff"]["after"]["retention-redundancy"] == "3"
    tighten = ok(done["tighten"])  # still a change: check mode applied nothing
    assert tighten["changed"] is True and tighten["config_changes"] == checked["config_changes"]
    assert tighten["config"]["retention-redundancy"] == 3
    assert tighten["config"]["pgport"] == "5432"  # show-config keeps pgport a string, the module compares it as a number
    assert ok(done["tightened"])["changed"] is False

    msg = failed(done["not a catalog"])  # sample 42: the tool's own refusal, with what to do
    assert "init failed (exit code 1): The backup catalog already exists and is not empty; backup_path is not empty and is not a backup catalog" in msg
    assert "configure the instance; set them in a task without action" in failed(done["action with config"])
    assert "go with an action" in failed(done["config option as action option"])
    assert failed(done["rw_timeout is gs only"]) == "pg_probackup has no --rw-timeout (-t); that is a gs_probackup option"
    assert failed(done["lz4 is gs only"]).startswith("pg_probackup has no compression algorithm lz4")
    assert "instance nosuch is not in the catalog" in failed(done["missing instance"])

    if tools["gs"]:
        assert failed(done["gs stream"]).startswith("gs_probackup has no --stream")
        assert failed(done["gs page"]) == "gs_probackup has no backup mode PAGE (it has FULL, PTRACK)"
        assert failed(done["gs delta"]) == "gs_probackup has no backup mode DELTA (it has FULL, PTRACK)"


class ScratchCluster:
    """A throwaway PostgreSQL 15 cluster on the lab host, as the samples used: the lab's own clusters are shared
    with other tests, which change their archive settings and restart them."""

    def __init__(self, primary):
        self.host = primary
        self.root = "/var/lib/postgresql/pgdr-pb-%s" % uuid.uuid4().hex[:8]
        self.pgdata = self.root + "/data"
        self.pg_ctl = [primary.pg_bin_dir + "/pg_ctl", "-D", self.pgdata, "-l", self.root + "/server.log", "-w", "-t", "60"]
        primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", self.root])
        cli(primary, [primary.pg_bin_dir + "/initdb", "-D", self.pgdata, "--data-checksums", "-U", "postgres", "--auth-local=peer",
                      "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"], check=True)  # fmt: skip

    def start(self, archive_command, port=CLUSTER_PORT):
        settings = dict(port=str(port), listen_addresses="''", unix_socket_directories="'/run/postgresql'", wal_level="replica",
                        max_wal_senders="4", archive_mode="on", archive_command="'%s'" % archive_command.replace("'", "''"))  # fmt: skip
        text = "".join("%s = %s\n" % item for item in settings.items())
        self.host.run(["tee", "-a", self.pgdata + "/postgresql.conf"], user="postgres", input=text)
        cli(self.host, self.pg_ctl + ["start"], check=True)

    def stop(self):
        cli(self.host, self.pg_ctl + ["-m", "immediate", "stop"])
        self.host.run(["rm", "-rf", self.root])


@pytest.fixture
def cluster(primary):
    made = ScratchCluster(primary)
    yield made
    made.stop()


def test_backup_lifecycle_show_validate_pin_merge_retention_and_restore(ansible, primary, tools, catalog, cluster):
    binary = tools["pg"]
    base = dict(binary=binary, backup_path=catalog, instance="main")
    table = "pb_lifecycle"
    instance = dict(base, pg_data=cluster.pgdata, pghost="/run/postgresql", pgport=CLUSTER_PORT, pgdatabase="postgres",
                    compress_algorithm="zlib", compress_level=1, retention_redundancy=2, archive_timeout=60)  # fmt: skip
    ok(play(ansible, [("create", instance)])["create"])  # the instance exists before archive-push runs
    cluster.start("%s archive-push -B %s --instance=main --wal-file-name=%%f" % (binary, catalog))
    cli(primary, sql("CREATE TABLE %s (id int PRIMARY KEY, payload text); INSERT INTO %s SELECT g, md5(g::text) FROM generate_series(1, 1000) g"
                     % (table, table), CLUSTER_PORT), check=True)  # fmt: skip
    insert = "INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series((SELECT max(id) + 1 FROM {t}), (SELECT max(id) + 1000 FROM {t})) g"
    done = play(ansible, [
        ("reg_full", dict(base, action="backup", backup_mode="FULL", stream=True, note="first full")),
        ("insert 1", {"ansible.builtin.command": {"argv": sql(insert.format(t=table), CLUSTER_PORT)}}),
        ("reg_delta", dict(base, action="backup", backup_mode="DELTA", stream=True, threads=2)),
        ("reg_now", {"ansible.builtin.command": {"argv": sql("SELECT now()", CLUSTER_PORT)}}),  # with microseconds, as users copy it
        ("insert 2", {"ansible.builtin.command": {"argv": sql(insert.format(t=table), CLUSTER_PORT)}}),
        ("reg_page", dict(base, action="backup", backup_mode="PAGE")),
        ("show", dict(base, action="show", archive=True)),
        ("validate", dict(base, action="validate")),
        ("validate one", dict(base, action="validate", backup_id="{{ reg_page.backup_id }}")),
        ("validate to a time", dict(base, action="validate", recovery_target_time="{{ reg_page.backup.recovery_time }}")),
        ("validate to a time, old form", dict(base, action="validate", recovery_target=dict(kind="time", value="{{ reg_page.backup.recovery_time }}"))),
        ("validate to now()", dict(base, action="validate", recovery_target_time="{{ reg_now.stdout }}")),
        ("validate to now() in whole seconds", dict(base, action="validate", recovery_target_time="{{ reg_now.stdout | regex_replace('[.][0-9]+', '') }}")),
        ("validate to a time with a T", dict(base, action="validate", recovery_target_time="{{ reg_page.backup.recovery_time | replace(' ', 'T') }}")),
        ("pin", dict(base, action="pin", backup_id="{{ reg_delta.backup_id }}", ttl="1d")),
        ("pin again", dict(base, action="pin", backup_id="{{ reg_delta.backup_id }}", ttl="1d")),
        ("merge", dict(base, action="merge", backup_id="{{ reg_page.backup_id }}")),
        ("merge again", dict(base, action="merge", backup_id="{{ reg_page.backup_id }}")),
    ])  # fmt: skip
    full, delta, page = ok(done["reg_full"]), ok(done["reg_delta"]), ok(done["reg_page"])
    for result, mode, wal in ((full, "FULL", "STREAM"), (delta, "DELTA", "STREAM"), (page, "PAGE", "ARCHIVE")):
        backup = result["backup"]
        assert result["changed"] is True and result["backup_id"] == backup["id"]
        assert (backup["mode"], backup["wal"], backup["status"]) == (mode, wal, "OK")
        assert backup["data_bytes"] > 0 and backup["duration"] >= 0 and backup["timeline"] == 1
        assert pb.parse_tool_time(backup["end_time"]) >= pb.parse_tool_time(backup["start_time"])
    assert full["backup"]["note"] == "first full" and full["backup"]["parent_backup_id"] is None
    assert delta["backup"]["parent_backup_id"] == full["backup_id"] and page["backup"]["parent_backup_id"] == delta["backup_id"]
    assert int(full["backup"]["stop_lsn"].replace("/", ""), 16) < int(delta["backup"]["start_lsn"].replace("/", ""), 16)
    rows_at_page = int(cli(primary, sql("SELECT count(*) FROM %s" % table, CLUSTER_PORT), check=True).stdout)
    assert rows_at_page == 3000

    shown = ok(done["show"])
    assert [b["id"] for b in shown["backups"]] == [page["backup_id"], delta["backup_id"], full["backup_id"]]
    assert shown["latest_valid"] == page["backup_id"] and shown["changed"] is False
    (timeline,) = shown["archive"]
    assert timeline["tli"] == 1 and timeline["n_segments"] >= 2 and timeline["lost_segments"] == [] and timeline["status"] == "OK"
    assert page["backup_id"] in timeline["backups"]
    assert ok(done["validate"])["invalid"] == [] and ok(done["validate one"])["invalid"] == []
    to_time, old_form = ok(done["validate to a time"]), ok(done["validate to a time, old form"])
    assert to_time["invalid"] == [] and old_form["invalid"] == []
    validated = [[argv for argv in result["commands"] if argv[1] == "validate"] for result in (to_time, old_form)]
    assert validated[0] == validated[1] and "--recovery-target-time=%s" % page["backup"]["recovery_time"] in validated[0][0]
    # a time from now() has microseconds, which the tool refuses: the module says so before running it, naming the
    # two whole seconds around it; the earlier one (the delta backup, then the WAL of insert 2) validates
    now = done["reg_now"]["stdout"].strip()
    whole = re.sub(r"[.][0-9]+", "", now)
    assert "." in now and whole != now, now
    assert failed(done["validate to now()"]).startswith(
        "recovery_target_time '%s' has a fraction of a second, which pg_probackup does not take; give whole seconds: '%s' leaves out " % (now, whole)
    )
    in_seconds = ok(done["validate to now() in whole seconds"])
    assert in_seconds["invalid"] == [] and [argv[-1] for argv in in_seconds["commands"] if argv[1] == "validate"] == ["--recovery-target-time=" + whole]
    # the tool reads a 'T' as the end of the date (midnight, so no backup before it): the module passes a space
    with_t = ok(done["validate to a time with a T"])
    validated = [argv[-1] for argv in with_t["commands"] if argv[1] == "validate"]
    assert with_t["invalid"] == [] and validated == ["--recovery-target-time=" + page["backup"]["recovery_time"]]
    pinned = ok(done["pin"])
    assert pinned["changed"] is True
    expected = pb.parse_tool_time(delta["backup"]["recovery_time"]).timestamp() + 86400
    assert pb.parse_tool_time(pinned["backup"]["expire_time"]).timestamp() == expected
    assert ok(done["pin again"])["changed"] is False

    merged = ok(done["merge"])
    assert merged["changed"] is True and merged["deleted"] == sorted([full["backup_id"], delta["backup_id"]])  # the pinned DELTA too (sample 31)
    assert (merged["backup"]["id"], merged["backup"]["mode"], merged["backup"]["wal"]) == (page["backup_id"], "FULL", "ARCHIVE")
    assert merged["backup"]["expire_time"] is None and merged["backup"]["parent_backup_id"] is None
    assert ok(done["merge again"])["changed"] is False

    # the merged FULL restores to a cluster that starts and holds the rows of the PAGE backup's time
    scratch = catalog + "-restore"
    argv = pb.restore_argv(binary, catalog, "main", scratch, target={"kind": "immediate"})
    primary.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", scratch])
    restored = cli(primary, argv, check=True)
    assert "Restore of backup %s completed." % page["backup_id"] in restored.stderr
    auto = cli(primary, ["cat", scratch + "/postgresql.auto.conf"], check=True).stdout
    assert "recovery_target = 'immediate'" in auto and "recovery_target_action = 'promote'" in auto and "archive-get" in auto
    assert cli(primary, ["test", "-f", scratch + "/recovery.signal"]).returncode == 0
    pg_ctl = [primary.pg_bin_dir + "/pg_ctl", "-D", scratch, "-l", scratch + "/startup.log", "-w", "-t", "60"]
    cli(primary, pg_ctl + ["-o", "-p %d -c archive_mode=off -c listen_addresses=''" % SCRATCH_PORT, "start"], check=True)
    try:
        deadline = time.monotonic() + 60  # pg_ctl -w returns at consistency; the promotion follows
        while True:
            check = cli(primary, sql("SELECT count(*), pg_is_in_recovery() FROM %s" % table, SCRATCH_PORT), check=True).stdout.strip()
            if check != "3000|t" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert check == "3000|f"
    finally:
        cli(primary, pg_ctl + ["-m", "immediate", "stop"])
        primary.run(["rm", "-rf", scratch])
    # sample 43: a restore never writes into a folder that is not empty
    primary.run(["install", "-d", "-o", "postgres", "-m", "0700", scratch])
    primary.run(["install", "-o", "postgres", "-m", "0600", "/dev/null", scratch + "/PG_VERSION"])
    nonempty = cli(primary, argv)
    assert nonempty.returncode == 1 and nonempty.stderr == sample("43-error-restore-into-nonempty-dir.stderr.txt").replace("$RESTORE_PGDATA", scratch)

    done = play(ansible, [
        ("insert 3", {"ansible.builtin.command": {"argv": sql(insert.format(t=table), CLUSTER_PORT)}}),
        ("reg_full2", dict(base, action="backup", backup_mode="FULL", stream=True, note="second full")),
        ("policy", dict(base, retention_redundancy=1, retention_window=0)),
        ("dry run", dict(base, action="delete", delete_expired=True, dry_run=True)),
        ("expire", dict(base, action="delete", delete_expired=True, delete_wal=True)),
        ("expire again", dict(base, action="delete", delete_expired=True)),
        ("reg_delta2", dict(base, action="backup", backup_mode="DELTA", stream=True)),
        ("unpinned", dict(base, action="unpin", backup_id="{{ reg_delta2.backup_id }}")),
    ])  # fmt: skip
    full2 = ok(done["reg_full2"])
    assert ok(done["policy"])["config_changes"] == {"retention-redundancy": "1"}  # the window is 0 already
    dry = ok(done["dry run"])
    assert dry["changed"] is False and dry["deleted"] == [] and dry["would_delete"] == [page["backup_id"]]
    assert {(v["id"], v["verdict"]) for v in dry["retention"]} == {(page["backup_id"], "Expired"), (full2["backup_id"], "Active")}
    expired = ok(done["expire"])
    assert expired["changed"] is True and expired["deleted"] == [page["backup_id"]] and expired["wal_purged"] > 0
    assert [b["id"] for b in expired["backups"]] == [full2["backup_id"]]
    assert ok(done["expire again"])["changed"] is False
    delta2 = ok(done["reg_delta2"])
    assert delta2["backup"]["parent_backup_id"] == full2["backup_id"]
    assert ok(done["unpinned"])["changed"] is False

    # corrupt a data file inside the FULL (same size, as sample 67 did): validation must find it
    database = "%s/backups/main/%s/database" % (catalog, full2["backup_id"])
    biggest = cli(primary, ["sh", "-c", "find %s/base -type f -size +8k -printf '%%s %%p\\n' | sort -n | tail -1" % database],
                  check=True).stdout.split()[1]  # fmt: skip
    primary.run(["sh", "-c", "printf CORRUPTCORRUPTCORRUPTCORRUPT | dd of=%s bs=1 seek=4096 conv=notrunc" % biggest])
    done = play(ansible, [
        ("validate", dict(base, action="validate")),
        ("show", dict(base, action="show")),
    ])  # fmt: skip
    msg = failed(done["validate"])
    assert "%s (ORPHAN)" % delta2["backup_id"] in msg and "%s (CORRUPT)" % full2["backup_id"] in msg
    assert {(x["id"], x["status"]) for x in done["validate"]["invalid"]} == {(full2["backup_id"], "CORRUPT"), (delta2["backup_id"], "ORPHAN")}
    assert ok(done["show"])["latest_valid"] is None

    # the real tool's messages for corrupt backups (samples 71 and 72)
    again = cli(primary, [binary, "validate", "-B", catalog, "--instance=main", "-i", full2["backup_id"]])
    assert again.returncode == 1 and again.stderr.splitlines()[-1] == "ERROR: Backup %s is corrupt." % full2["backup_id"]
    assert again.stderr.splitlines()[0] == "WARNING: Backup %s has status: CORRUPT" % full2["backup_id"]
    empty = catalog + "-other"
    primary.run(["install", "-d", "-o", "postgres", "-m", "0700", empty])
    refused = cli(primary, pb.restore_argv(binary, catalog, "main", empty))
    assert refused.returncode == 1 and refused.stderr == sample("72-error-restore-from-corrupt-backup.stderr.txt").replace(
        "TOUSUJ", delta2["backup_id"]
    ).replace("TOUSU2", full2["backup_id"])

    # a failed backup (sample 53: connection refused) fails the task naming the backup, which stays with status ERROR
    done = play(ansible, [
        ("bad port", dict(base, pgport=1)),
        ("failing", dict(base, action="backup", backup_mode="FULL", stream=True)),
        ("good port", dict(base, pgport=CLUSTER_PORT)),
        ("drop failed", dict(base, action="delete", status="ERROR")),
        ("validate missing", dict(base, action="validate", backup_id="ZZZZZZ")),
        ("delete missing", dict(base, action="delete", backup_id="ZZZZZZ")),
        ("absent", dict(base, state="absent")),
        ("purge", dict(base, state="absent", purge=True)),
        ("purged", dict(base, state="absent", purge=True)),
    ])  # fmt: skip
    ok(done["bad port"])
    failing = done["failing"]
    msg = failed(failing)
    assert failing["backup"]["status"] == "ERROR" and msg.startswith("backup %s of instance main failed (status ERROR): " % failing["backup_id"])
    assert "could not connect to database" in msg and "check pghost/pgport" in msg
    assert ok(done["drop failed"])["deleted"] == [failing["backup_id"]]
    assert failed(done["validate missing"]).startswith("pg_probackup validate failed (exit code 1): Requested backup ZZZZZZ is not found.")
    assert ok(done["delete missing"])["changed"] is False
    assert "set purge: true" in failed(done["absent"])
    purge = ok(done["purge"])
    assert purge["changed"] is True and sorted(purge["deleted"]) == sorted([full2["backup_id"], delta2["backup_id"]])
    assert ok(done["purged"])["changed"] is False
    assert cli(primary, ["test", "-e", catalog + "/backups/main"]).returncode == 1


def test_cli_error_paths_match_the_real_outputs(primary, tools, catalog):
    """The error paths of the samples, run on the lab host (stand-in or real tool): same exit code and stderr."""
    binary = tools["pg"]
    cli(primary, [binary, "init", "-B", catalog], check=True)
    cli(primary, [binary, "add-instance", "-B", catalog, "-D", primary.pg_data, "--instance=main"], check=True)
    cases = [
        ("40-error-add-instance-twice", ["add-instance", "-B", catalog, "-D", primary.pg_data, "--instance=main"]),
        ("41-error-backup-nonexistent-instance", ["backup", "-B", catalog, "--instance=nosuch", "-b", "FULL", "--stream"]),
        ("42-error-init-nonempty-dir", ["init", "-B", catalog]),
        ("44-error-show-nonexistent-instance-format-json", ["show", "-B", catalog, "--instance=nosuch", "--format=json"]),
        ("45-error-show-nonexistent-backup-id-format-json", ["show", "-B", catalog, "--instance=main", "-i", "ZZZZZZ", "--format=json"]),
        ("46-error-show-nonexistent-backup-id-plain", ["show", "-B", catalog, "--instance=main", "-i", "ZZZZZZ"]),
        ("47-error-validate-nonexistent-backup-id", ["validate", "-B", catalog, "--instance=main", "-i", "ZZZZZZ"]),
        ("48-error-delete-nonexistent-backup-id", ["delete", "-B", catalog, "--instance=main", "-i", "ZZZZZZ"]),
        ("49-error-unknown-command", ["frobnicate", "-B", catalog]),
        ("51-error-invalid-option-value", ["set-config", "-B", catalog, "--instance=main", "--compress-algorithm=foo"]),
        ("52-error-unknown-option", ["show", "-B", catalog, "--instance=main", "--no-such-option"]),
    ]  # fmt: skip
    index = {row["step"]: row for row in json.loads(sample("index.json"))}
    for step, args in cases:
        done = cli(primary, [binary, *args])
        expected = sample(index[step]["stderr_file"]).replace("$BACKUP_PATH", catalog).replace("$PGDATA", primary.pg_data)
        assert (step, done.returncode, done.stderr) == (step, index[step]["exit_code"], expected)
        assert done.stdout == sample(index[step]["stdout_file"]), step


def test_restore_cluster_from_the_catalog_latest_then_a_chosen_id_to_a_time(ansible, primary, tools, catalog, cluster):
    """restore_cluster's probackup source replaces a running cluster (port 5499) with the catalog's backups, kept safe as physical restores."""
    binary = tools["pg"]
    base = dict(binary=binary, backup_path=catalog, instance="main")
    ok(play(ansible, [("create", dict(base, pg_data=cluster.pgdata, pghost="/run/postgresql", pgport=CLUSTER_PORT, pgdatabase="postgres"))])["create"])
    cluster.start("%s archive-push -B %s --instance=main --wal-file-name=%%f" % (binary, catalog))
    cli(primary, sql("CREATE TABLE t (n int); INSERT INTO t VALUES (1)", CLUSTER_PORT), check=True)
    full = ok(play(ansible, [("reg_full", dict(base, action="backup", backup_mode="FULL", stream=True))])["reg_full"])
    cli(primary, sql("INSERT INTO t VALUES (2)", CLUSTER_PORT), check=True)
    time.sleep(1.2)
    moment = cli(primary, sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'", CLUSTER_PORT), check=True).stdout.strip()
    time.sleep(1.2)
    cli(primary, sql("INSERT INTO t VALUES (3)", CLUSTER_PORT), check=True)
    switched = cli(primary, sql("SELECT pg_walfile_name(pg_switch_wal())", CLUSTER_PORT), check=True).stdout.strip()
    deadline = time.monotonic() + 30
    while cli(primary, sql("SELECT coalesce(last_archived_wal, '') >= %s FROM pg_stat_archiver" % ("'%s'" % switched), CLUSTER_PORT)).stdout.strip() != "t":
        assert time.monotonic() < deadline, "segment %s was not archived into the catalog" % switched
        time.sleep(0.3)

    target = ScratchCluster(primary)  # the cluster the restores replace, with a marker table
    try:
        target.start("/bin/true", port=SCRATCH_PORT)
        cli(primary, sql("CREATE TABLE target_marker (x int)", SCRATCH_PORT), check=True)
        restore = dict(probackup=base, pg_data=target.pgdata, force=True, service_manager="pg_ctl", server_log=target.root + "/server.log",
                       login_host="/run/postgresql", login_port=SCRATCH_PORT, login_user="postgres", server_settings={"port": SCRATCH_PORT})  # fmt: skip
        restore_task = "pgdr.backup.restore_cluster"
        done = play(ansible, [
            ("plan", {restore_task: dict(restore)}, {"check_mode": True}),
            ("latest", {restore_task: dict(restore, backup_id="latest")}),
            # incremental (-I checksum): over a copy of the stopped "latest" cluster, which is kept as the previous one
            ("to a time", {restore_task: dict(restore, backup_id=full["backup_id"], recovery_target_time=moment, keep_previous=True,
                                              probackup=dict(base, incremental_mode="checksum"))}),
            ("before the backup", {restore_task: dict(restore, backup_id=full["backup_id"], recovery_target_time="2000-01-01 00:00:00+00")}),
            ("unknown id", {restore_task: dict(restore, backup_id="ZZZZZZ")}),
        ], become_postgres=True)  # fmt: skip
        plan = ok(done["plan"])
        assert plan["plan"]["was_running"] is True and plan["plan"]["chain"] == [full["backup_id"]] and plan["kind"] == "probackup"
        latest = ok(done["latest"])
        assert latest["backup_id"] == full["backup_id"] and latest["state"] == "promoted" and latest["wal_files_restored"] >= 1
        assert any(argv[:2] == [os.path.basename(binary), "restore"] and "--recovery-target-action=promote" in argv for argv in latest["commands"])
        timed = ok(done["to a time"])
        assert timed["state"] == "promoted" and timed["previous_data_dir"].endswith(".pgdr-previous-" + full["backup_id"])
        assert any(argv[1] == "restore" and "-I" in argv and "checksum" in argv for argv in timed["commands"]), timed["commands"]
        assert "lies before the end of backup %s" % full["backup_id"] in failed(done["before the backup"])
        assert failed(done["unknown id"]).startswith("backup ZZZZZZ is not in instance main of ")
        # the last restore stopped at the time: 1 and 2, not 3; archiving is off on the copy, its port is the target's
        assert cli(primary, sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t", SCRATCH_PORT), check=True).stdout.strip() == "1,2"
        assert cli(primary, sql("SHOW archive_mode", SCRATCH_PORT), check=True).stdout.strip() == "off"
        assert cli(primary, sql("SELECT to_regclass('target_marker') IS NULL", SCRATCH_PORT), check=True).stdout.strip() == "t"
        # the replaced cluster (after the first restore: the "latest" copy, with 1, 2, 3) was kept whole beside it
        previous = timed["previous_data_dir"]
        assert cli(primary, ["test", "-f", previous + "/PG_VERSION"]).returncode == 0
        assert cli(primary, ["ls", target.root]).stdout.split() == sorted(["data", os.path.basename(previous), "server.log"])
    finally:
        cli(primary, [primary.pg_bin_dir + "/pg_ctl", "-D", target.pgdata, "-m", "immediate", "-w", "stop"])
        target.stop()
