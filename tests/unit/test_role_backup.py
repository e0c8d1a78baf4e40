"""The backup and probackup roles: their argument specs agree with their defaults, secrets are no_log, every variable
the tasks use is declared, and the options the roles build from flat variables (as an AWX survey sends them) are
exactly what the modules take - no empty value, no unknown option, the right types."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import actions as catalog_actions
from ansible_collections.pgdr.backup.plugins.module_utils.logical import dump_set
from ansible_collections.pgdr.backup.plugins.module_utils.physical import base_set
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance as probackup_instance
from ansible_collections.pgdr.backup.plugins.modules import backup_schedule

ROLES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "roles")
ROLES = ("backup", "probackup")
SECRET = re.compile(r"(password|passphrase|secret_key|access_key|customer_key)$")
MODULE_SPECS = {"logical": dump_set.argument_spec(), "base": base_set.argument_spec(), "probackup": probackup_instance.argument_spec()}


def load(role, *path):
    with open(os.path.join(ROLES_DIR, role, *path)) as f:
        return yaml.safe_load(f)


def spec(role):
    return load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]


def task_files(role):
    folder = os.path.join(ROLES_DIR, role, "tasks")
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


def tasks_of(role):
    """Every task of the role's task files, blocks and rescues included."""
    found = []

    def walk(items):
        for task in items or ():
            found.append(task)
            walk(task.get("block"))
            walk(task.get("rescue"))
            walk(task.get("always"))

    for path in task_files(role):
        with open(path) as f:
            walk(yaml.safe_load(f))
    return found


# Ansible's templating is controller code: importing it here would change how modules in later tests report their
# deprecations (tests/unit/test_probackup_instance_entry.py), so the roles' expressions are rendered in a child.
RENDER = """
import json, sys, yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

def trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [trusted(item) for item in value]
    return value

out = []
for role_dir, expression, given in json.load(sys.stdin):
    variables = {}
    for name in ("defaults", "vars"):
        with open("%s/%s/main.yml" % (role_dir, name)) as f:
            variables.update(yaml.safe_load(f))
    variables = trusted(variables)
    variables.update(inventory_hostname="db1", **given)
    out.append(Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression)))
json.dump(out, sys.stdout)
"""
_RENDERED = {}


def render_all(requests):
    """[(role, expression, given)] templated as each role sees it: its defaults and vars, the play's values on top."""
    todo = [request for request in requests if json.dumps(request, sort_keys=True) not in _RENDERED]
    if todo:
        given = [(os.path.join(ROLES_DIR, role), expression, values) for role, expression, values in todo]
        child = subprocess.run([sys.executable, "-c", RENDER], input=json.dumps(given), capture_output=True, text=True, check=False)
        assert child.returncode == 0, child.stderr[-3000:]
        for request, value in zip(todo, json.loads(child.stdout), strict=True):
            _RENDERED[json.dumps(request, sort_keys=True)] = value
    return [_RENDERED[json.dumps(request, sort_keys=True)] for request in requests]


def render(role, expression, **given):
    return render_all([(role, expression, given)])[0]


def empties(value, where=""):
    """Paths of the empty strings, lists and nulls in ``value`` (modules refuse them)."""
    if value in ("", [], None):
        return [where or "(top)"]
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in empties(item, "%s.%s" % (where, key) if where else key)]
    return []


def validate(argument_spec, params, what):
    result = ArgumentSpecValidator(argument_spec).validate(params)
    assert not result.error_messages, (what, result.error_messages)


@pytest.mark.parametrize("role", ROLES)
def test_spec_and_defaults_agree(role):
    options, defaults = spec(role), load(role, "defaults", "main.yml")
    required = {name for name, option in options.items() if option.get("required")}
    assert set(defaults) == set(options) - required
    for name, option in options.items():
        if "default" in option:
            assert defaults[name] == option["default"], name
            assert "choices" not in option or option["default"] in option["choices"], name
        elif name not in required:
            # an int that means "unset" at 0 has no spec default, so a null (an AWX blank) passes validation too
            assert option["type"] == "int" and defaults[name] == 0, name


@pytest.mark.parametrize("role", ROLES)
def test_secrets_are_no_log(role):
    for name, option in spec(role).items():
        assert bool(option.get("no_log")) == bool(SECRET.search(name)), name


@pytest.mark.parametrize("role", ROLES)
def test_list_variables_take_a_comma_separated_string(role):
    with open(os.path.join(ROLES_DIR, role, "vars", "main.yml")) as f:
        text = f.read()
    for name, option in spec(role).items():
        if option["type"] == "list":
            assert "%s.split(',')" % name in text and "if %s is string" % name in text, name


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_the_role_uses_is_declared(role):
    """A typo in a task (backup_keep_lats) would silently be undefined or defaulted: every <role>_* name is declared,
    or a fact the role sets itself."""
    facts = set()
    for task in tasks_of(role):
        facts.update(task.get("ansible.builtin.set_fact") or ())
        facts.add(task.get("register"))
    lines = [line for path in task_files(role) + [os.path.join(ROLES_DIR, role, "vars", "main.yml")] for line in open(path)]
    # names in expressions and conditions; not comments, not the keys of the modules' options (backup_path:)
    code = "".join(line for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"(?<![\w.])(%s_[a-z0-9_]+)(?!\w|\s*:)" % role, code))
    assert {"%s_no_log" % role, "%s_state" % role} <= used  # the search finds what is there
    # the probackup role hands the backup role its variables: those are the backup role's to declare
    declared = set(spec(role)) | facts | (set(spec("backup")) if role == "probackup" else set())
    assert sorted(used - declared) == []


def test_probackup_hands_the_backup_role_only_its_variables():
    (include,) = [task for task in tasks_of("probackup") if "ansible.builtin.include_role" in task]
    assert include["ansible.builtin.include_role"]["name"] == "pgdr.backup.backup"
    assert sorted(set(include["vars"]) - set(spec("backup"))) == []
    assert {"backup_name", "backup_kind", "backup_run_now", "backup_schedule_weekdays"} <= set(include["vars"])


LOGICAL = dict(backup_name="app", backup_repository_path="/var/backups/pgdr")
CASES = {
    "logical, defaults": dict(LOGICAL),
    "logical, as an AWX survey sends it": dict(
        LOGICAL, backup_tables="public.orders, sales.items ,", backup_schemas="", backup_login_port=None, backup_jobs=None,
        backup_keep_last="3", backup_compression="zstd", backup_compression_level="5", backup_format="directory",
        backup_login_host="10.0.0.5", backup_login_user="backup", backup_login_password="s3cret", backup_ssl_mode="require"),
    "logical cluster to s3, gpg and sse-c": dict(
        backup_name="all", backup_mode="cluster", backup_parallel=2, backup_repository_type="s3", backup_s3_bucket="pg",
        backup_repository_prefix="prod", backup_s3_endpoint="https://s3.example.com", backup_s3_access_key="AK",
        backup_s3_secret_key="SK", backup_sse_mode="sse-c", backup_sse_customer_key="a2V5", backup_encryption="gpg",
        backup_encryption_passphrase="pass"),
    "base to sftp with the WAL archive pruned": dict(
        backup_name="base", backup_kind="base", backup_format="tar", backup_checkpoint="fast", backup_compression="gzip",
        backup_compression_location="server", backup_repository_type="sftp", backup_repository_path="/srv/pgdr",
        backup_sftp_host="vault1", backup_sftp_user="pgdr", backup_keep_within="14d", backup_prune_archive_path="/srv/wal"),
    "probackup": dict(
        backup_name="pb", backup_kind="probackup", backup_probackup_backup_path="/var/backups/probackup",
        backup_probackup_instance="main", backup_probackup_mode="DELTA", backup_probackup_delete_expired="true",
        backup_probackup_threads="4"),
}


OPTIONS, PRUNE = "{{ __backup_options }}", "{{ __backup_prune if __backup_prune_wanted | bool else none }}"
RUN_NOW_CASES = [([], "", True), ("", None, True), ("mon, wed", "", False), (["sun"], "true", True), ([], "false", False), ([], False, False)]
SETTINGS = dict(probackup_pg_data="/pg/data", probackup_pgport=None, probackup_pghost="/run/postgresql", probackup_compress_algorithm="zlib",
                probackup_archive_timeout="120")  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def rendered_at_once():
    """One child renders what the tests below ask for (each would otherwise start its own)."""
    render_all([("backup", expression, CASES[case]) for case in CASES for expression in (OPTIONS, PRUNE, "{{ __backup_prune }}")]
               + [("backup", "{{ __backup_run_now }}", dict(backup_schedule_weekdays=weekdays, backup_run_now=run_now))
                  for weekdays, run_now, _expected in RUN_NOW_CASES]
               + [("probackup", "{{ __probackup_settings }}", SETTINGS), ("probackup", "{{ __probackup_settings }}", dict(probackup_pg_data="/pg/data"))])


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_backup_option_is_what_the_module_takes(case):
    given = CASES[case]
    kind = given.get("backup_kind", "logical")
    backup = render("backup", OPTIONS, **given)
    assert empties(backup) == []
    validate(MODULE_SPECS[kind], dict(backup, action="backup") if kind == "probackup" else backup, case)
    if kind != "probackup":
        assert backup["cluster"] == "db1" and backup["repository"]["type"] == given.get("backup_repository_type", "local")
    prune = render("backup", PRUNE, **given)
    if prune is None:
        assert not (given.get("backup_keep_last") or given.get("backup_keep_within"))
        return
    assert empties(prune) == [] and set(prune) <= set(backup_schedule.PRUNE_OPTIONS)
    validate(catalog_actions.argument_spec(), dict(prune, action="prune", cluster=backup["cluster"], repository=backup["repository"]), case)


def test_survey_strings_become_the_modules_types():
    backup = render("backup", OPTIONS, **CASES["logical, as an AWX survey sends it"])
    assert backup["tables"] == ["public.orders", "sales.items"] and "schemas" not in backup and "jobs" not in backup
    assert backup["compression"] == {"method": "zstd", "level": 5} and "login_port" not in backup
    assert render("backup", "{{ __backup_prune }}", **CASES["logical, as an AWX survey sends it"]) == {"keep_last": 3}
    archive = render("backup", "{{ __backup_prune }}", **CASES["base to sftp with the WAL archive pruned"])["archive"]
    assert archive == {"type": "sftp", "path": "/srv/wal", "host": "vault1", "port": 22, "user": "pgdr"}


@pytest.mark.parametrize("weekdays, run_now, expected", RUN_NOW_CASES)
def test_run_now_defaults_to_true_without_a_schedule(weekdays, run_now, expected):
    assert render("backup", "{{ __backup_run_now }}", backup_schedule_weekdays=weekdays, backup_run_now=run_now) is expected


def test_the_schedule_is_what_the_module_takes():
    schedule = render("backup", "{{ __backup_schedule }}", backup_schedule_weekdays="Mon, WED,fri", backup_schedule_randomized_delay=None)
    assert schedule == {"weekdays": ["mon", "wed", "fri"], "time": "02:30", "randomized_delay": 0, "persistent": True}
    validate(backup_schedule.argument_spec()["schedule"]["options"], schedule, "schedule")


def test_probackup_settings_are_what_probackup_instance_takes():
    settings = render("probackup", "{{ __probackup_settings }}", **SETTINGS)
    assert empties(settings) == [] and "pgport" not in settings
    assert settings["compress_level"] == 1 and settings["archive_timeout"] == 120 and settings["retention_redundancy"] == 2
    validate(probackup_instance.argument_spec(), dict(settings, backup_path="/b", instance="main"), "settings")
    # no algorithm, no level: the tool keeps its own
    assert "compress_level" not in render("probackup", "{{ __probackup_settings }}", probackup_pg_data="/pg/data")


def test_probackup_job_names_fit_a_job_name():
    jobs = render("probackup", "{{ __probackup_jobs }}", probackup_instance="Main.15")
    assert jobs == {"full": "probackup-main-15-full", "incremental": "probackup-main-15-incr"}


DOCS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "docs")


def documented_role_uses():
    """(doc, role, vars) of every use of the two roles in the YAML examples of the guides."""
    found = []
    for doc in ("scheduled-backups.md", "probackup.md"):
        with open(os.path.join(DOCS_DIR, doc)) as f:
            blocks = re.findall(r"```yaml\n(.*?)```", f.read(), re.S)
        for block in blocks:
            for play in yaml.safe_load(block) or ():
                for entry in play.get("roles", ()):
                    found.append((doc, entry["role"], entry.get("vars", {})))
                for task in play.get("tasks", ()):
                    if "ansible.builtin.include_role" in task:
                        found.append((doc, task["ansible.builtin.include_role"]["name"], task.get("vars", {})))
    return [(doc, role.rsplit(".", 1)[-1], given) for doc, role, given in found if role.rsplit(".", 1)[-1] in ROLES]


def test_the_guides_examples_use_declared_variables_and_choices():
    uses = documented_role_uses()
    assert {role for _doc, role, _given in uses} == set(ROLES)
    for doc, role, given in uses:
        options = spec(role)
        assert sorted(set(given) - set(options)) == [], doc
        for name, value in given.items():
            if "choices" in options[name]:
                assert value in options[name]["choices"], (doc, name, value)
