"""Verifier: the probackup role's catalog and instance on primary15's throwaway cluster, the FULL its first converge
took (status success, in the catalog), the cron files of the FULL and DELTA jobs, and the DELTA job's cron line run
as cron runs it: a DELTA on top of that FULL."""

import json
import shlex

import pytest

testinfra_hosts = ["primary15"]

# as in vars/rp.yml
BASE = "/var/lib/postgresql/rp-molecule"
BINARY = BASE + "/bin/pg_probackup"
CATALOG = "/var/backups/rp-molecule-catalog"
INSTANCE = "rp"
FULL, INCR = "rp-molecule-full", "rp-molecule-incr"
STATE_DIR = "/var/lib/pgdr/backup"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def cron_entry(host, name):
    """(environment, [minute, hour, day, month, weekday], user, command) of a job's cron file."""
    text = host.file("/etc/cron.d/pgdr-backup-" + name).content_string
    env, entries = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and " " not in key:
            env[key] = value
            continue
        entries.append(line)
    assert len(entries) == 1, text
    fields = entries[0].split(None, 6)
    return env, fields[:5], fields[5], fields[6]


def backups(host):
    """The instance's backups as the tool lists them, newest first."""
    shown = host.run("runuser -u postgres -- %s show -B %s --instance %s --format=json", BINARY, CATALOG, INSTANCE)
    assert shown.rc == 0, shown.stderr
    (instance,) = json.loads(shown.stdout)
    return instance["backups"]


def status(host, name):
    return json.loads(host.file("%s/%s.json" % (STATE_DIR, name)).content_string)


def test_instance_settings(host):
    shown = host.run("runuser -u postgres -- %s show-config -B %s --instance %s --format=json --no-scale-units", BINARY, CATALOG, INSTANCE)
    assert shown.rc == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert config["pgdata"] == BASE + "/data"
    assert (config["pghost"], str(config["pgport"])) == (BASE, "5473")
    assert str(config["retention-redundancy"]) == "2" and config["compress-algorithm"] == "zlib"
    assert host.file(CATALOG).mode == 0o700 and host.file(CATALOG).user == "postgres"


@pytest.mark.parametrize("name, mode, days", [(FULL, "FULL", ["0"]), (INCR, "DELTA", ["1", "2", "3", "4", "5", "6"])])
def test_cron_files_and_job_files(host, name, mode, days):
    env, when, user, command = cron_entry(host, name)
    assert when == ["15", "3", "*", "*", ",".join(days)]
    assert user == "postgres" and env["SHELL"] == "/bin/sh"
    assert command == "/usr/local/lib/pgdr/pgdr-backup --job /etc/pgdr/backup/%s.json run" % name
    job = host.file("/etc/pgdr/backup/%s.json" % name)
    assert job.mode == 0o600 and job.user == "postgres"
    backup = json.loads(job.content_string)["backup"]
    assert (backup["backup_mode"], backup["instance"], backup["backup_path"]) == (mode, INSTANCE, CATALOG)
    assert backup["delete_expired"] is True and backup["delete_wal"] is True and backup["stream"] is True


def test_the_full_taken_now_succeeded(host):
    done = status(host, FULL)
    assert done["last_result"] == "success", done
    (full,) = backups(host)[-1:]
    assert full["id"] == done["last_backup_id"] and full["backup-mode"] == "FULL" and full["status"] == "OK"
    assert host.file("%s/pgdr_backup_%s.prom" % (TEXTFILE_DIR, FULL)).contains("pgdr_backup_last_success_timestamp_seconds")


def test_the_delta_cron_line_takes_a_delta_on_the_full(host):
    env, _when, user, command = cron_entry(host, INCR)
    variables = ["HOME=" + host.user(user).home, "LOGNAME=" + user] + ["%s=%s" % item for item in sorted(env.items())]
    ran = host.run("runuser -u %s -- env -i %s /bin/sh -c %s" % (user, " ".join(shlex.quote(v) for v in variables), shlex.quote(command)))
    assert ran.rc == 0, ran.stdout + ran.stderr
    done = status(host, INCR)
    assert done["last_result"] == "success", done
    newest, *older = backups(host)
    assert (newest["id"], newest["backup-mode"], newest["status"]) == (done["last_backup_id"], "DELTA", "OK")
    assert newest["parent-backup-id"] == status(host, FULL)["last_backup_id"] and len(older) == 1
