"""pgdr-backup's job file and the runner's pure decisions; the program built as installed, run without Ansible."""

import json
import subprocess

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import zipapp
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.schedule import installer, pgdr_backup
from ansible_collections.pgdr.backup.plugins.module_utils.schedule.job import FORMAT, JobOptions, job_text, load_job

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, without Ansible: as on a database server


def job(**overrides):
    values = dict(format=FORMAT, name="app-nightly", kind="logical",
                  backup=dict(database="app", cluster="db1", repository=dict(type="local", path="/var/backups/pgdr")),
                  prune=dict(keep_last=3, keep_within=None, incomplete_grace="1d", kind=None, archive=None), verify=False,
                  run_on="primary", state_dir="/var/lib/pgdr/backup", textfile_dir=None)
    values.update(overrides)
    return JobOptions(**values)


def test_wrong_role_both_ways():
    assert pgdr_backup.wrong_role("primary", in_recovery=True).startswith("the server is a standby")
    assert pgdr_backup.wrong_role("standby", in_recovery=False).startswith("the server is a primary")
    assert pgdr_backup.wrong_role("primary", in_recovery=False) is None
    assert pgdr_backup.wrong_role("standby", in_recovery=True) is None
    assert pgdr_backup.wrong_role("any", in_recovery=True) is None


def test_a_job_file_round_trips_and_is_stable(tmp_path):
    path = tmp_path / "app-nightly.json"
    path.write_bytes(job_text(job()))
    assert load_job(str(path)) == job()
    assert job_text(job()) == job_text(load_job(str(path)))  # an unchanged job rewrites the same bytes


@pytest.mark.parametrize("text, message", [
    ("{", "is not JSON"),
    ("[]", "is not a job"),
    (json.dumps(dict(format=99, name="x", kind="logical", backup={}, run_on="primary", state_dir="/s")), "has format 99"),
    (json.dumps(dict(format=FORMAT, name="x", kind="pgbackrest", backup={}, run_on="primary", state_dir="/s")), "kind 'pgbackrest'"),
    (json.dumps(dict(format=FORMAT, name="../x", kind="logical", backup={}, run_on="primary", state_dir="/s")), "../x"),
])
def test_a_broken_job_file_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "job.json"
    path.write_text(text)
    with pytest.raises(PgdrError) as failed:
        load_job(str(path))
    assert message in failed.value.msg and "\n" not in failed.value.msg


def test_catalog_params_carry_the_rules_only_into_prune():
    params = pgdr_backup.catalog_params(job(), "prune")
    assert (params["action"], params["keep_last"], params["cluster"]) == ("prune", 3, "db1")
    listed = pgdr_backup.catalog_params(job(), "list")
    assert listed["keep_last"] is None and listed["archive"] is None  # backup_catalog refuses keep_last with list
    archive = dict(type="local", path="/var/backups/wal")
    verified = pgdr_backup.catalog_params(job(prune=dict(keep_last=3, archive=archive)), "verify", backup_id="20261207T023000Z")
    assert verified["archive"] == archive and verified["keep_last"] is None and verified["backup_id"] == "20261207T023000Z"


def test_labels_are_fixed_per_job():
    assert pgdr_backup.set_kind(job()) == "logical-db"
    assert pgdr_backup.set_kind(job(backup=dict(mode="cluster"))) == "logical-cluster"
    assert pgdr_backup.set_kind(job(kind="base")) == "base"
    assert pgdr_backup.repository_label(job()) == "local:/var/backups/pgdr"
    s3 = job(backup=dict(cluster="db1", repository=dict(type="s3", bucket="b", prefix="p", secret_key="hidden")))
    assert pgdr_backup.repository_label(s3) == "s3://b/p"
    probackup = job(kind="probackup", prune=None, backup=dict(backup_path="/var/backups/pb", instance="main"))
    assert pgdr_backup.repository_label(probackup) == "probackup:/var/backups/pb#main"


def test_the_cron_command_waits_the_random_delay_and_run_now_does_not():
    from ansible_collections.pgdr.backup.plugins.module_utils.schedule.timer import parse_schedule
    from ansible_collections.pgdr.backup.plugins.modules.backup_schedule import now_command

    schedule = parse_schedule(["mon"], "02:30", randomized_delay=600)
    cron = installer.job_command("app-nightly", schedule, timer_kind="cron")
    assert cron[-2:] == ["--random-delay", "600"]
    assert "--random-delay" not in installer.job_command("app-nightly", schedule, timer_kind="systemd")  # RandomizedDelaySec does it
    assert now_command(cron) == installer.job_command("app-nightly")


@pytest.mark.parametrize("program, roots", [("pgdr-backup", installer._ROOTS), ("pgdr-wal", ("wal.pgdr_wal",))])
def test_every_module_a_program_packs_imports_without_ansible(tmp_path, program, roots):
    # Debian's python3 has no Ansible: a module_utils file that imports ansible.* at import time fails here
    probe = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import ansible"], capture_output=True, check=False)
    assert probe.returncode != 0, "this test needs a python3 without Ansible"
    sources = zipapp.closure(roots)
    main = "".join("import %s.%s\n" % (zipapp.PACKAGE, name) for name in sources) + "print('imported %d')\n" % len(sources)
    path = tmp_path / program
    path.write_bytes(zipapp.build(sources, main, SYSTEM_PYTHON))
    done = subprocess.run([SYSTEM_PYTHON, "-I", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "imported %d" % len(sources), done.stderr[-2000:]


def test_the_installed_program_runs_without_ansible_and_names_a_missing_job(tmp_path):
    path = tmp_path / "pgdr-backup"
    path.write_bytes(installer.build_program(SYSTEM_PYTHON))
    path.chmod(0o755)
    done = subprocess.run([str(path), "--job", str(tmp_path / "nope.json"), "run"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.strip() == "pgdr-backup: cannot read job file %s: No such file or directory" % (tmp_path / "nope.json")
    assert installer.build_program(SYSTEM_PYTHON) == path.read_bytes()  # same sources, same bytes: a reinstall changes nothing
