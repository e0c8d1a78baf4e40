"""Verifier: the job the backup role installed on primary15 - its cron line, its 0600 job file, the status and textfile
of the run the first converge made, the set in the repository - and then the cron line's command run three more times
exactly as cron runs it, after which keep_last 2 has left two sets."""

import json
import os
import shlex
import subprocess
import time

import pytest

testinfra_hosts = ["primary15"]

NAME = "rb-molecule-dump"  # as in vars/rb.yml
REPOSITORY = "/var/backups/rb-molecule"
CLUSTER = "primary15"  # backup_cluster empty: inventory_hostname
CRON_FILE = "/etc/cron.d/pgdr-backup-" + NAME
JOB_FILE = "/etc/pgdr/backup/%s.json" % NAME
STATUS = "/var/lib/pgdr/backup/%s.json" % NAME
TEXTFILE = "/var/lib/prometheus/node-exporter/pgdr_backup_%s.prom" % NAME
CRON_DAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 0}


def cron_entry(host):
    """(environment, [minute, hour, day, month, weekday], user, command) of the job's cron file."""
    text = host.file(CRON_FILE).content_string
    env, entries = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and " " not in name:
            env[name] = value
            continue
        entries.append(line)
    assert len(entries) == 1, text
    fields = entries[0].split(None, 6)
    return env, fields[:5], fields[5], fields[6]


def sets(host):
    """The backup ids of the complete sets (a manifest) of the cluster in the repository."""
    found = host.run("find %s/%s -mindepth 2 -maxdepth 2 -name manifest.json", REPOSITORY, CLUSTER)
    assert found.rc == 0, found.stderr
    return sorted(path.split("/")[-2] for path in found.stdout.split())


def status(host):
    return json.loads(host.file(STATUS).content_string)


def run_as_cron(host):
    """The cron line's command, as written, as its user, with cron's environment (the file's SHELL and PATH)."""
    env, _when, user, command = cron_entry(host)
    home = host.user(user).home
    variables = ["HOME=" + home, "LOGNAME=" + user] + ["%s=%s" % item for item in sorted(env.items())]
    shell = env.get("SHELL", "/bin/sh")
    return host.run("runuser -u %s -- env -i %s %s -c %s" % (shlex.quote(user), " ".join(shlex.quote(v) for v in variables), shell, shlex.quote(command)))


def test_cron_line_runs_the_job_on_its_days_at_its_time(host):
    env, when, user, command = cron_entry(host)
    assert when[:4] == ["30", "2", "*", "*"]
    assert sorted(int(day) for day in when[4].split(",")) == sorted(CRON_DAYS[d] for d in ("mon", "wed", "fri"))
    assert user == "postgres"
    assert command == "/usr/local/lib/pgdr/pgdr-backup --job %s run" % JOB_FILE
    assert env["SHELL"] == "/bin/sh" and "/usr/bin" in env["PATH"].split(":")


def test_job_file_is_private_to_postgres(host):
    job = host.file(JOB_FILE)
    assert job.exists and job.mode == 0o600 and job.user == "postgres"
    options = json.loads(job.content_string)
    assert options["kind"] == "logical"
    assert options["backup"]["database"] == "rb_molecule_shop"
    assert options["backup"]["repository"] == {"type": "local", "path": REPOSITORY} or options["backup"]["repository"]["path"] == REPOSITORY
    assert options["prune"]["keep_last"] == 2


def test_the_run_now_succeeded_and_its_set_is_in_the_repository(host):
    done = status(host)
    assert (done["last_result"], done["job"], done["kind"]) == ("success", NAME, "logical-db"), done
    assert sets(host) == [done["last_backup_id"]]
    assert host.file("%s/%s/%s/manifest.json" % (REPOSITORY, CLUSTER, done["last_backup_id"])).user == "postgres"


def test_textfile_has_the_last_success(host):
    text = host.file(TEXTFILE).content_string
    samples = [line for line in text.splitlines() if line.startswith("pgdr_backup_last_success_timestamp_seconds{")]
    assert len(samples) == 1, text
    assert 'backup_job="%s"' % NAME in samples[0]
    assert abs(float(samples[0].rsplit(" ", 1)[1]) - time.time()) < 3600


@pytest.fixture(scope="module")
def three_more_runs(host):
    ran = []
    while len(ran) < 3:
        time.sleep(1.1)  # a set's id is the start time to the second
        ran.append(run_as_cron(host))
    return ran


def test_three_runs_of_the_cron_command_leave_two_sets(host, three_more_runs):
    for ran in three_more_runs:
        assert ran.rc == 0, ran.stdout + ran.stderr
    kept = sets(host)
    assert len(kept) == 2, kept
    done = status(host)
    assert done["last_result"] == "success" and done["last_backup_id"] == kept[-1]
    assert done["runs_total"]["success"] == 4  # the converge's run now, and these three
    # the third set was the first over keep_last 2: the third and the fourth run each pruned the oldest one
    assert done["sets_kept"] == 2 and len(done["last_pruned"]) == 1 and done["pruned_sets_total"] == 2
    assert done["last_pruned"][0] < kept[0]


PROJECT_DIR = os.environ.get("MOLECULE_PROJECT_DIRECTORY") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def test_backup_playbook_in_check_mode_as_awx_runs_it(host):
    """playbooks/backup.yml through the collection with survey-style answers (strings, blanks) and the AWX S3
    credential's pgdr_s3_* variables: it plans an S3 job and publishes pgdr_backup; nothing is written, no key is shown."""
    lab = host.ansible.get_variables()
    secret = lab["lab_s3_secret_key"]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_SHOW_CUSTOM_STATS="1",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.pop("ANSIBLE_ROLES_PATH", None)  # the role must come from the collection, not molecule's roles_path
    answers = dict(target_hosts="primary15", backup_name=NAME + "-awx", backup_kind="logical", backup_database="rb_molecule_shop",
                   backup_repository_type="s3", backup_s3_bucket=lab["lab_s3_bucket"], backup_repository_prefix="rb-molecule-awx",
                   backup_schedule_weekdays="tue, thu", backup_schedule_time="04:05", backup_keep_last="3", backup_run_now="",
                   backup_login_port=None, backup_install_packages="false",
                   pgdr_s3_access_key=lab["lab_s3_access_key"], pgdr_s3_secret_key=secret, pgdr_s3_endpoint_url=lab["lab_s3_endpoint"],
                   pgdr_s3_region=lab["lab_s3_region"])  # fmt: skip
    proc = subprocess.run([os.path.join(PROJECT_DIR, ".venv", "bin", "ansible-playbook"), "-i", os.path.join(PROJECT_DIR, ".lab", "inventory.yml"),
                           os.path.join(PROJECT_DIR, "playbooks", "backup.yml"), "--check", "-e", json.dumps(answers)],
                          env=env, capture_output=True, text=True, check=False, cwd=PROJECT_DIR)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    stats = {}
    for line in proc.stdout.splitlines():
        if line.startswith("\tRUN: "):
            stats = json.loads(line[len("\tRUN: "):])
    planned = stats["pgdr_backup"]["primary15"][NAME + "-awx"]
    assert (planned["kind"], planned["timer"], planned["schedule"], planned["result"]) == ("logical", "cron", "tue,thu 04:05", "not run")
    assert planned["changed"] is True and planned["check_mode"] is True and planned["run_now"] is False
    assert secret not in output
    assert not host.file("/etc/pgdr/backup/%s-awx.json" % NAME).exists
