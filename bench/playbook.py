"""Run tasks on lab hosts through a real `ansible-playbook`, timed from the outside.

The wall time covers everything a user waits for: Ansible's start-up, the SSH
connection, become, shipping the module, the module itself and the result.
Nothing is subtracted; the module's own result (its `duration`) comes back
through a small aggregate callback so both can be reported.
"""

import json
import os
import subprocess
import sys
import time
import uuid

import yaml

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
# the integration tests' aggregate callback: one way to read task results back
CALLBACK_DIR = os.path.join(PROJECT_DIR, "tests", "integration", "callback_plugins")


class PlaybookFailed(RuntimeError):
    pass


class Playbooks:
    """Writes one-play playbooks into ``work_dir`` and runs them against the lab inventory."""

    def __init__(self, lab, work_dir):
        self.lab = lab
        self.work_dir = work_dir
        os.makedirs(work_dir, exist_ok=True)

    def run(self, host, tasks, become_postgres=True, timeout=7200):
        """Run ``tasks`` on ``host``; returns (wall seconds, {task name: result}). Fails on any failed task."""
        play = dict(name="pgdr bench", hosts=host, gather_facts=False, tasks=tasks)
        if become_postgres:  # as a DBA runs the modules: become the postgres OS user, peer authentication
            play.update(become=True, become_user="postgres", become_method="ansible.builtin.su")
        name = uuid.uuid4().hex[:8]
        playbook = os.path.join(self.work_dir, "play-%s.yml" % name)
        results_file = os.path.join(self.work_dir, "results-%s.json" % name)
        with open(playbook, "w") as handle:
            yaml.safe_dump([play], handle, sort_keys=False)
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"),
            ANSIBLE_CALLBACK_PLUGINS=CALLBACK_DIR,
            ANSIBLE_CALLBACKS_ENABLED="pgdr_results",
            ANSIBLE_NOCOLOR="1",
            PGDR_RESULTS_FILE=results_file,
        )
        argv = [PLAYBOOK_BIN, "-i", str(self.lab.inventory_path), playbook]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        wall = time.monotonic() - started
        results = {}
        if os.path.exists(results_file):
            with open(results_file) as handle:
                for item in json.load(handle):
                    results[item["task"]] = dict(item["result"], _status=item["status"])
            os.unlink(results_file)
        os.unlink(playbook)
        failed = [name for name, result in results.items() if result["_status"] != "ok"]
        if done.returncode != 0 or failed:
            detail = "; ".join("%s: %s" % (n, results[n].get("msg")) for n in failed) or (done.stdout + done.stderr)[-2000:]
            raise PlaybookFailed("ansible-playbook failed (rc %d): %s" % (done.returncode, detail))
        return wall, results
