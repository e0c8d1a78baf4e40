"""Verifier: the probackup role's catalog and instance on primary15's throwaway cluster, the FULL its first converge
took (status success, in the catalog), the cron files of the FULL and DELTA jobs, and the DELTA job's cron line run
as cron runs it: a DELTA on top of that FULL."""

import json
import os
import shlex
import subprocess

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
    assert (config["pghost"], str(config["pgport"])) == (BASE, "5476")
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


PROJECT_DIR = os.environ.get("MOLECULE_PROJECT_DIRECTORY") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def test_probackup_playbook_in_check_mode_on_a_new_catalog(host):
    """playbooks/probackup.yml through the collection, --check, survey-style answers, a catalog that does not exist:
    it plans the catalog, the instance and a FULL now, publishes pgdr_probackup, and creates nothing."""
    plan = CATALOG + "-plan"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_SHOW_CUSTOM_STATS="1",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.pop("ANSIBLE_ROLES_PATH", None)  # the roles must come from the collection, not molecule's roles_path
    answers = dict(target_hosts="primary15", ansible_become_method="ansible.builtin.su", probackup_binary=BINARY,
                   probackup_backup_path=plan, probackup_instance="plan", probackup_pg_data=BASE + "/data", probackup_pghost=BASE,
                   probackup_pgport="5476", probackup_full_weekdays="sat", probackup_incremental_weekdays="mon, thu",
                   probackup_incremental_mode="PAGE", probackup_job_prefix="rp-molecule-plan", probackup_run_now="true",
                   probackup_install_packages="false")  # fmt: skip
    proc = subprocess.run([os.path.join(PROJECT_DIR, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(PROJECT_DIR, ".lab", "inventory.yml"),
                           os.path.join(PROJECT_DIR, "playbooks", "probackup.yml"), "--check", "-e", json.dumps(answers)],
                          env=env, capture_output=True, text=True, check=False, cwd=PROJECT_DIR)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    stats = {}
    for line in proc.stdout.splitlines():
        if line.startswith("\tRUN: "):
            stats = json.loads(line[len("\tRUN: "):])
    planned = stats["pgdr_probackup"]["primary15"]
    assert planned["check_mode"] is True and planned["catalog_created"] is True and planned["instance_added"] is True
    full, incremental = planned["full_job"], planned["incremental_job"]
    assert (full["name"], full["schedule"], full["run_now"], full["result"]) == ("rp-molecule-plan-full", "sat 02:30", True, "not run")
    assert (incremental["name"], incremental["schedule"], incremental["run_now"]) == ("rp-molecule-plan-incr", "mon,thu 02:30", False)
    assert sorted(stats["pgdr_backup"]["primary15"]) == ["rp-molecule-plan-full", "rp-molecule-plan-incr"]
    assert not host.file(plan).exists
    assert not host.file("/etc/pgdr/backup/rp-molecule-plan-full.json").exists
