"""Integration fixtures: the lab hosts, and a way to run tasks through ansible-playbook.

Every module test goes through a real `ansible-playbook` run over SSH to the
lab hosts, exactly as a user's playbook would.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

from tests.lab import Lab, LabNotUp
from tests.phases import one_per_version

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
# Fleet tests drill every pair and make one fail: at least three pairs (the lab's default).
MIN_FLEET_PAIRS = 3


@pytest.fixture(scope="session")
def lab():
    try:
        return Lab.load(PROJECT_DIR)
    except Exception:
        subprocess.run([sys.executable, "-m", "tests.lab", "up"], cwd=PROJECT_DIR, check=True)
        return Lab.load(PROJECT_DIR)


class PlayRun:
    """The outcome of one ansible-playbook run: output and per-task results."""

    def __init__(self, completed, results):
        self.rc = completed.returncode
        self.output = completed.stdout + completed.stderr
        self.results = results

    def result(self, task, host):
        for item in self.results:
            if item["task"] == task and item["host"] == host:
                return item["result"] | {"_status": item["status"]}
        raise AssertionError("no result for task %r on %s; output:\n%s" % (task, host, self.output[-3000:]))


class Ansible:
    """Runs a list of tasks on lab hosts as a real playbook."""

    def __init__(self, lab, tmp_path):
        self.lab = lab
        self.tmp_path = tmp_path

    def play(self, hosts, tasks, become_postgres=True, check=False, diff=False, verbosity=0, extra_vars=None):
        play = dict(name="pgdr test", hosts=hosts, gather_facts=False, tasks=tasks)
        if become_postgres:
            play.update(become=True, become_user="postgres", become_method="ansible.builtin.su")
        name = uuid.uuid4().hex[:8]
        playbook = self.tmp_path / ("play-%s.yml" % name)
        playbook.write_text(yaml.safe_dump([play], sort_keys=False))
        return self.playbook(playbook, check=check, diff=diff, verbosity=verbosity, extra_vars=extra_vars)

    def playbook(self, playbook, check=False, diff=False, verbosity=0, extra_vars=None, forks=None):
        """Run a playbook file (one of the collection's, or one a test wrote) on the lab."""
        name = uuid.uuid4().hex[:8]
        results_file = self.tmp_path / ("results-%s.json" % name)
        argv = [PLAYBOOK_BIN, "-i", str(self.lab.inventory_path), str(playbook)]
        if check:
            argv.append("--check")
        if diff:
            argv.append("--diff")
        if verbosity:
            argv.append("-" + "v" * verbosity)
        if forks:
            argv += ["-f", str(forks)]
        if extra_vars:
            extra = self.tmp_path / ("vars-%s.json" % name)
            extra.write_text(json.dumps(extra_vars))
            argv += ["-e", "@%s" % extra]
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"),
            ANSIBLE_CALLBACK_PLUGINS=os.path.join(os.path.dirname(__file__), "callback_plugins"),
            ANSIBLE_CALLBACKS_ENABLED="pgdr_results",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            PGDR_RESULTS_FILE=str(results_file),
        )
        completed = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600, check=False)
        results = json.loads(results_file.read_text()) if results_file.exists() else []
        return PlayRun(completed, results)

    def module(self, host, module, args, task="under test", **play_kwargs):
        """Run one module task on one host; returns its result dict (failed ones too)."""
        tasks = [{"name": task, module: args, "ignore_errors": True}]
        run = self.play(host, tasks, **play_kwargs)
        return run.result(task, host)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which tags grouped node ids
def pytest_collection_modifyitems(config, items):
    """An exclusive test without its version's group, or a group xdist ignores, would run beside tests on its hosts."""
    for item in items:
        grouped = item.get_closest_marker("xdist_group")
        if item.get_closest_marker("exclusive") and not grouped:
            raise pytest.UsageError("%s is exclusive but has no version group: add ON_PG15/ON_PG18 or one_per_version "
                                    "(tests/phases.py), or mark it alone" % item.nodeid)
        # an xdist worker under --dist loadgroup passes the group to the scheduler as a node id suffix "@pg15"
        if grouped and getattr(config.option, "loadgroup", False) and "@" not in item.nodeid.rpartition("]")[2]:
            raise pytest.UsageError("pytest-xdist did not apply the xdist_group of %s (pytest-dev/pytest-xdist#1386): "
                                    "use the pytest and pytest-xdist of requirements.txt" % item.nodeid)


@pytest.fixture(params=one_per_version(["primary15", "primary18"]))
def host(request, lab):
    """Each test that takes ``host`` runs on PostgreSQL 15 and on 18."""
    return lab.host(request.param)


@pytest.fixture(scope="session")
def fleet(lab):
    """The lab's fleet pairs, [(fleet1, fleet1r), (fleet2, fleet2r), ...], at least MIN_FLEET_PAIRS of them.

    Never skipped: a lab built with fewer pairs fails the test with one line saying how to grow it.
    """
    try:
        return lab.fleet_pairs(minimum=MIN_FLEET_PAIRS)
    except LabNotUp as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback around the one line


@pytest.fixture
def ansible(lab, tmp_path):
    return Ansible(lab, tmp_path)
