# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only callback: every task result, per host, as JSON in $PGDR_BENCH_RESULTS."""

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: pgdr_bench
type: aggregate
short_description: Write task results to a JSON file for the benchmarks
description: Records each task's result per host, including failures, in the file named by PGDR_BENCH_RESULTS.
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pgdr_bench"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.results = []

    def _record(self, result, status):
        self.results.append(dict(task=result.task_name, host=result._host.get_name(), status=status, result=result._result))

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("PGDR_BENCH_RESULTS")
        if path:
            with open(path, "w") as handle:
                json.dump(self.results, handle, default=str)
