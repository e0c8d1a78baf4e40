"""backup_schedule and pgdr-backup on lab hosts: the scheduled path really runs.

The lab hosts have no systemd as PID 1, so jobs are installed as /etc/cron.d files; the tests read the cron line and
run its command exactly as written, as the user the line names (cron would run it the same way), and check what it
left: sets in the repository, retention applied, the status JSON and the Prometheus textfile. Lab hosts share /etc,
/usr/local and /var/lib, so every job, folder and database here carries a random suffix, and is removed afterwards.
"""

import json
import re
import shlex
import subprocess
import time
import uuid

import psycopg
import pytest

from tests.lab import BASE_ENV
from tests.lab.hosts import nsenter

pytestmark = pytest.mark.lab

SCHEDULE = "pgdr.backup.backup_schedule"
METRIC_LINE = re.compile(r'^(pgdr_[a-z_]+)\{([^}]*)\} (\S+)$')


class Job:
    """One test's job: a scratch database with a table, a local repository, state and textfile folders."""

    def __init__(self, lab, host, ansible):
        self.lab, self.host, self.ansible = lab, host, ansible
        suffix = uuid.uuid4().hex[:8]
        self.name = "sch-%s" % suffix
        self.database = "sch_%s" % suffix
        self.base = "/var/backups/sch-%s" % suffix
        self.repository = {"type": "local", "path": self.base + "/repo"}
        self.state_dir, self.textfile_dir = self.base + "/state", self.base + "/metrics"
        host.psql("CREATE DATABASE %s" % self.database)
        host.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", db=self.database)

    def args(self, **overrides):
        args = dict(
            name=self.name, kind="logical",
            backup=dict(database=self.database, login_host="/run/postgresql", login_user="postgres", pg_bin_dir=self.host.pg_bin_dir,
                        cluster="sch", repository=self.repository),
            prune=dict(keep_last=2), verify=True, schedule=dict(weekdays=["mon", "thu"], time="02:30"),
            state_dir=self.state_dir, textfile_dir=self.textfile_dir,
        )
        args.update(overrides)
        return args

    def install(self, check=False, **overrides):
        return self.ansible.module(self.host.name, SCHEDULE, self.args(**overrides), become_postgres=False, check=check)

    def cron_line(self):
        """(user, command) of the job's cron line, as cron reads it: five time fields, the user, the command."""
        text = self.host.run(["cat", "/etc/cron.d/pgdr-backup-%s" % self.name]).stdout
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
        assert len(lines) == 1, text
        fields = lines[0].split(None, 6)
        assert fields[:5] == ["30", "2", "*", "*", "1,4"], lines[0]
        return fields[5], fields[6]

    def cron_line_interval(self):
        """(user, command) of an every-5-minutes job's cron line."""
        text = self.host.run(["cat", "/etc/cron.d/pgdr-backup-%s" % self.name]).stdout
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
        fields = lines[0].split(None, 6)
        assert fields[:5] == ["*/5", "*", "*", "*", "*"], lines
        return fields[5], fields[6]

    def run_cron_command(self, check=True):
        user, command = self.cron_line()
        return self.host.run(["runuser", "-u", user, "--", "sh", "-c", command], check=check, timeout=300)

    def status(self):
        return json.loads(self.host.run(["cat", "%s/%s.json" % (self.state_dir, self.name)]).stdout)

    def metrics(self):
        text = self.host.run(["cat", "%s/pgdr_backup_%s.prom" % (self.textfile_dir, self.name)]).stdout
        found = {}
        for line in text.splitlines():
            match = METRIC_LINE.match(line)
            if match:
                found.setdefault(match.group(1), []).append((match.group(2), float(match.group(3))))
        return found

    def sets(self):
        listing = self.host.run(["sh", "-c", "ls %s/sch 2>/dev/null || true" % self.repository["path"]]).stdout.split()
        return sorted(listing)

    def remove(self):
        self.ansible.module(self.host.name, SCHEDULE, dict(name=self.name, state="absent", textfile_dir=self.textfile_dir), become_postgres=False)
        self.host.run(["rm", "-rf", self.base])
        self.host.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.database)


@pytest.fixture
def job(lab, host, ansible):
    made = Job(lab, host, ansible)
    yield made
    made.remove()


@pytest.fixture
def job15(lab, ansible):
    made = Job(lab, lab.host("primary15"), ansible)
    yield made
    made.remove()


def test_the_cron_line_run_as_written_backs_up_prunes_and_reports(job):
    installed = job.install()
    assert installed["_status"] == "ok" and installed["changed"] and installed["timer"] == "cron", installed
    # the job file holds the backup's options (secrets, in general): 0600, the job's user's
    job_stat = job.host.run(["stat", "-c", "%a %U", installed["job_file"]]).stdout.split()
    assert job_stat == ["600", "postgres"]
    user, command = job.cron_line()
    assert user == "postgres" and shlex.split(command) == installed["command"]
    again = job.install()
    assert again["changed"] is False, again  # a second install writes nothing

    outputs = [job.run_cron_command().stdout.strip() for _run in range(3)]
    assert all(" success (set " in line for line in outputs), outputs
    sets = job.sets()
    assert len(sets) == 2, sets  # keep_last 2: the first run's set went on the third run
    status = job.status()
    assert status["last_result"] == "success" and status["runs_total"] == {"success": 3, "failed": 0, "skipped": 0}
    assert status["last_backup_id"] == sets[-1] and status["sets_kept"] == 2 and status["pruned_sets_total"] == 1
    assert status["verify"] == "ok" and status["last_size_bytes"] > 0
    metrics = job.metrics()
    labels, last_success = metrics["pgdr_backup_last_success_timestamp_seconds"][0]
    assert 'kind="logical-db"' in labels and 'cluster="sch"' in labels and ('backup_job="%s"' % job.name) in labels
    assert last_success == pytest.approx(status["last_success_timestamp"], abs=0.01)
    assert metrics["pgdr_backup_sets_kept"][0][1] == 2
    assert {lab: value for lab, value in metrics["pgdr_backup_runs_total"] if 'result="success"' in lab} != {}

    # `pgdr-backup ... status` prints the same status
    program, _job, job_file = installed["command"][:3]
    printed = json.loads(job.host.run(["runuser", "-u", "postgres", "--", program, "--job", job_file, "status"]).stdout)
    assert printed == status


def test_a_failed_run_exits_1_in_one_line_and_keeps_the_last_success(job15):
    job = job15
    assert job.install(run_now=True)["status"]["result"] == "success"
    good = job.status()
    job.host.psql("DROP DATABASE %s WITH (FORCE)" % job.database)
    failed = job.run_cron_command(check=False)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and job.database in lines[0] and "Traceback" not in failed.stderr, failed.stderr
    status = job.status()
    assert status["last_result"] == "failed" and job.database in status["last_reason"]
    assert status["last_success_timestamp"] == good["last_success_timestamp"] and status["last_backup_id"] == good["last_backup_id"]
    metrics = job.metrics()
    assert metrics["pgdr_backup_last_run_success"][0][1] == 0
    assert metrics["pgdr_backup_last_success_timestamp_seconds"][0][1] == pytest.approx(good["last_success_timestamp"], abs=0.01)
    assert len(job.sets()) == 1  # a failed run prunes nothing and leaves no half-written set


def test_two_runs_started_together_one_backs_up_one_is_skipped(job15, lab):
    job = job15
    job.install()
    user, command = job.cron_line()
    # hold the dumped table so the run that takes the job's lock blocks in pg_dump while the other one starts
    holder = psycopg.connect(lab.pg_dsn(job.host, dbname=job.database))
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    both = "(%s) > %s/a.out 2>&1 & (%s) > %s/b.out 2>&1 & wait" % (command, job.state_dir, command, job.state_dir)
    runs = subprocess.Popen(nsenter(job.host.holder_pid, ["runuser", "-u", user, "--", "sh", "-c", both]), env=BASE_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the skipped run writes its status at once; the other waits for the table
            found = job.host.run(["sh", "-c", "cat %s/%s.json 2>/dev/null || true" % (job.state_dir, job.name)]).stdout
            if found and json.loads(found)["runs_total"]["skipped"] == 1:
                break
            time.sleep(0.3)
    finally:
        holder.rollback()
        holder.close()
    assert runs.wait(timeout=300) == 0
    outputs = sorted(job.host.run(["cat", job.state_dir + "/a.out", job.state_dir + "/b.out"]).stdout.strip().splitlines())
    assert len(outputs) == 2, outputs
    assert "still running" in " ".join(outputs) and sum(" success (set " in line for line in outputs) == 1, outputs
    status = job.status()
    assert status["runs_total"] == {"success": 1, "failed": 0, "skipped": 1} and status["last_result"] == "success"
    assert len(job.sets()) == 1


def test_a_standby_only_job_on_a_primary_is_skipped(job15):
    # the lab's replicas are independent clusters (restore targets), not standbys: the role check is exercised the other
    # way round, a job for standbys run on a primary (wrong_role's both directions are unit-tested)
    job = job15
    done = job.install(run_now=True, run_on="standby", schedule=None)
    assert done["changed"] and done["timer"] == "none", done
    assert done["status"]["result"] == "skipped" and "the server is a primary" in done["status"]["reason"], done["status"]
    assert job.sets() == []
    assert job.status()["runs_total"] == {"success": 0, "failed": 0, "skipped": 1}
    assert job.metrics()["pgdr_backup_last_run_skipped"][0][1] == 1


def test_check_mode_writes_nothing_and_absent_removes_the_job(job15):
    job = job15
    checked = job.install(check=True, run_now=True)
    assert checked["changed"] and "status" not in checked
    assert job.host.run(["test", "-e", checked["job_file"]], check=False).returncode == 1
    assert job.host.run(["test", "-e", "/etc/cron.d/pgdr-backup-%s" % job.name], check=False).returncode == 1
    job.install(run_now=True)
    textfile = "%s/pgdr_backup_%s.prom" % (job.textfile_dir, job.name)
    assert job.host.run(["test", "-f", textfile], check=False).returncode == 0
    removed = job.ansible.module(job.host.name, SCHEDULE, dict(name=job.name, state="absent", textfile_dir=job.textfile_dir), become_postgres=False)
    assert removed["changed"] and set(removed["removed_files"]) == {"/etc/cron.d/pgdr-backup-%s" % job.name, checked["job_file"], textfile}
    assert job.host.run(["test", "-e", "%s/%s.json" % (job.state_dir, job.name)], check=False).returncode == 0  # the record stays


BAD_INPUT = [
    ("backup option", dict(backup=dict(databse="x", repository=dict(type="local", path="/var/backups/x"))), "databse"),
    ("backup_id", dict(backup=dict(database="x", backup_id="20260101T000000Z", repository=dict(type="local", path="/var/backups/x"))),
     "backup_id"),
    ("prune rule", dict(prune=dict(keep_last=0)), "keep_last 0 keeps nothing"),
    ("prune option", dict(prune=dict(keep_last=2, cluster="other")), "prune.cluster"),
    ("weekday", dict(schedule=dict(weekdays=["moon"], time="02:30")), "moon"),
    ("zone on cron", dict(schedule=dict(weekdays=["mon"], time="02:30", timezone="Asia/Tokyo")), "cron runs jobs in the host's time zone"),
    ("systemd here", dict(timer="systemd"), "systemd is not running on this host"),
    ("probackup prune", dict(kind="probackup", backup=dict(backup_path="/var/backups/x", instance="i")), "tool's own retention"),
]


def test_bad_input_fails_in_one_line_before_anything_is_written(job15):
    job = job15
    tasks = [{"name": case, SCHEDULE: job.args(**overrides), "ignore_errors": True} for case, overrides, _message in BAD_INPUT]
    run = job.ansible.play(job.host.name, tasks, become_postgres=False)
    for case, _overrides, message in BAD_INPUT:
        failed = run.result(case, job.host.name)
        assert failed["_status"] == "failed" and message in failed["msg"], (case, failed)
        assert "\n" not in failed["msg"] and "Traceback" not in str(failed), case
    assert job.host.run(["test", "-e", "/etc/pgdr/backup/%s.json" % job.name], check=False).returncode == 1


def test_the_job_file_and_output_hide_the_password(lab, ansible):
    primary = lab.host("primary15")
    suffix = uuid.uuid4().hex[:8]
    name, base = "sch-%s" % suffix, "/var/backups/sch-%s" % suffix
    args = dict(name=name, kind="logical", run_now=True, state_dir=base + "/state", textfile_dir="none",
                backup=dict(database="postgres", login_host=primary.address, login_user=lab.pg_superuser, login_password=lab.pg_password,
                            pg_bin_dir=primary.pg_bin_dir, repository=dict(type="local", path=base + "/repo")))
    try:
        run = ansible.play(primary.name, [{"name": "job", SCHEDULE: args}], become_postgres=False, verbosity=3)
        assert run.rc == 0, run.output[-2000:]
        assert lab.pg_password not in run.output  # -vvv shows the invocation: the backup's secret is masked there too
        mode = primary.run(["stat", "-c", "%a", "/etc/pgdr/backup/%s.json" % name]).stdout.strip()
        assert mode == "600"
    finally:
        ansible.module(primary.name, SCHEDULE, dict(name=name, state="absent"), become_postgres=False)
        primary.run(["rm", "-rf", base])


def test_job_folders_are_the_job_users(job15):
    job = job15
    job.install(run_now=True)
    for folder in (job.state_dir, job.textfile_dir, job.repository["path"]):
        owner = job.host.run(["stat", "-c", "%U", folder]).stdout.strip()
        assert owner == "postgres", folder
    program = job.host.run(["stat", "-c", "%a %U", "/usr/local/lib/pgdr/pgdr-backup"]).stdout.split()
    assert program == ["755", "root"]


def test_a_base_job_verifies_each_set_and_keeps_the_newest(job15, lab):
    job = job15
    backup = dict(login_host=job.host.address, login_user="postgres", login_password=lab.pg_password, checkpoint="fast", cluster="sch",
                  pg_bin_dir=job.host.pg_bin_dir, repository=job.repository)
    first = job.install(kind="base", backup=backup, prune=dict(keep_last=1), run_now=True)
    assert first["status"]["result"] == "success", first
    job.run_cron_command()
    status = job.status()
    assert status["kind"] == "base" and status["verify"] == "ok" and status["runs_total"]["success"] == 2
    assert job.sets() == [status["last_backup_id"]] and status["last_pruned"] == [first["status"]["backup_id"]]
    manifest = json.loads(job.host.run(["cat", "%s/sch/%s/manifest.json" % (job.repository["path"], status["last_backup_id"])]).stdout)
    assert manifest["kind"] == "base" and manifest["physical"]["verified"]


def test_a_wal_watcher_reports_the_archiver_or_says_archiving_is_off(job15):
    # the lab's primaries archive once make demo (or a test) turned archiving on, and not on a fresh lab: the watcher
    # must report either state exactly as the server shows it
    job = job15
    archiving = job.host.psql("SHOW archive_mode").strip() != "off"
    done = job.install(kind="wal", backup=dict(login_host="/run/postgresql", login_user="postgres", cluster="sch"), prune=None,
                       verify=False, schedule=dict(every_minutes=5), run_now=True)
    assert done["timer"] == "cron" and done["cluster"] == "sch"
    user, command = job.cron_line_interval()
    assert user == "postgres" and shlex.split(command) == done["command"]
    metrics = job.metrics()
    assert not [name for name in metrics if name.startswith("pgdr_backup_")]
    if archiving:
        assert done["status"]["result"] == "success", done
        archived = int(job.host.psql("SELECT archived_count FROM pg_stat_archiver").strip())
        assert metrics["pgdr_wal_archive_archived_total"][0][1] <= archived
        assert metrics["pgdr_wal_archive_last_check_timestamp_seconds"][0][1] > time.time() - 120
    else:
        assert done["_status"] == "failed" and "archive_mode is off" in done["msg"], done
        assert job.status()["last_result"] == "failed"
