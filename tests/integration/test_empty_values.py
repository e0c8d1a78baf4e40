"""An option given as an empty string (a playbook variable that came out empty) fails in one line, in every
module, before anything is read or written; before, ``database: ''`` dumped ``postgres`` and succeeded, and an
empty ``cluster``, ``backup_id`` or ``login_user`` quietly took its default.

One playbook per host runs every case (cheap: each task fails in argument handling).
"""

import uuid

from tests.integration.test_logical_failures import host_path_exists, one_line

# (task name, module, args, the option the message must name); {repo} is a local repository unique to the run
CASES = [
    ("dump database", "pgdr.backup.pg_logical_dump", dict(database="", cluster="c", repository="{repo}"), "database"),
    ("dump cluster", "pgdr.backup.pg_logical_dump", dict(database="postgres", cluster="", repository="{repo}"), "cluster"),
    ("dump login_user", "pgdr.backup.pg_logical_dump",
     dict(database="postgres", cluster="c", login_user="", repository="{repo}"), "login_user"),
    ("dump schemas item", "pgdr.backup.pg_logical_dump",
     dict(database="postgres", schemas=["public", ""], cluster="c", repository="{repo}"), "schemas[1]"),
    ("dump repository path", "pgdr.backup.pg_logical_dump",
     dict(database="postgres", cluster="c", repository=dict(type="local", path="")), "repository.path"),
    ("restore backup_id", "pgdr.backup.restore_cluster", dict(cluster="c", backup_id="", repository="{repo}"), "backup_id"),
    ("restore databases", "pgdr.backup.restore_cluster", dict(cluster="c", databases=[], repository="{repo}"), "databases"),
    ("basebackup cluster", "pgdr.backup.pg_basebackup", dict(cluster="", repository="{repo}"), "cluster"),
    ("grants login_user", "pgdr.backup.role_grants", dict(name="pgdr_empty_probe", state="check", login_user=""), "login_user"),
    ("wal archive_command", "pgdr.backup.wal_archive_config", dict(archive_command=""), "archive_command"),
    ("probackup instance", "pgdr.backup.probackup_instance", dict(backup_path="{repo}", instance="", action="show"), "instance"),
]


def _fill(value, repo):
    if value == "{repo}":
        return dict(type="local", path=repo) if not repo.endswith("-pb") else repo
    if isinstance(value, dict):
        return {key: _fill(item, repo) for key, item in value.items()}
    return value


def test_an_empty_option_fails_in_one_line_in_every_module_and_nothing_is_written(ansible, host):
    repo = "/var/backups/pgdr-empty-%s" % uuid.uuid4().hex[:8]
    tasks = []
    for name, module, args, _option in CASES:
        target = repo + "-pb" if module.endswith("probackup_instance") else repo
        tasks.append({"name": name, module: _fill(args, target), "ignore_errors": True})
    run = ansible.play(host.name, tasks)
    for name, _module, _args, option in CASES:
        msg = one_line(run.result(name, host.name))
        assert msg.startswith("option %s is empty" % option), (name, msg)
        assert "default(omit)" in msg, msg
    assert not host_path_exists(host, repo), "a repository was written"
    assert not host_path_exists(host, repo + "-pb"), "a probackup catalog was written"


def test_an_empty_value_equal_to_the_default_is_still_accepted(ansible, host):
    """repository.prefix defaults to '' (the bucket's root): giving '' means the same and must pass validation."""
    repo = "/var/backups/pgdr-empty-%s" % uuid.uuid4().hex[:8]
    host.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", repo])
    result = ansible.module(host.name, "pgdr.backup.pg_logical_dump",
                            dict(database="postgres", cluster="pgdr-empty", repository=dict(type="local", path=repo, prefix="")))
    try:
        assert result["_status"] == "ok", result.get("msg")
    finally:
        host.run(["rm", "-rf", repo])
