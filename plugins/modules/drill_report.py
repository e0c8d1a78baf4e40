#!/usr/bin/python
# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: drill_report
short_description: Write the report of a restore drill run (JSON, JUnit, HTML, Prometheus textfile), merging AWX slices
version_added: 0.1.0
description:
  - Runs on the controller (C(run_once) and C(delegate_to) C(localhost)) with the drill results every drill host
    returned, and writes the run's report into O(folder), the report folder that keeps the history, one folder per
    run - C(<folder>/<run id>/report.json), C(junit.xml) (a test case per drill, failures with their reason) and
    C(report.html) (one self-contained page, its charts drawn from the last O(history) runs of the folder), and with
    O(textfile) the Prometheus textfile of C(pgdr_drill_*) series. The formats are in C(docs/drill-reports.md).
  - Every file is written atomically, the JSON last, so a run folder whose C(report.json) exists is complete.
  - A run where drills failed is still a report written and B(not a failure of this task); the failures are in
    RV(failures) and RV(stats). Failing the play is the caller's decision - the role C(pgdr.backup.restore_drill) fails
    it after the report is written.
  - A run without drills (O(drills) empty, e.g. every drill host unreachable) still writes a report that says so, and
    a slice without drills still writes its part, so that the merge of a sliced run can complete.
  - B(AWX job slicing) - each slice passes its O(part_index) of O(part_count) and the same O(run_id), and writes
    C(<run id>/part-<i>-of-<n>.json). The slice that finds every part present after writing its own merges them into the
    run's report (C(report.json), C(junit.xml), C(report.html), the textfile). A later task with O(merge=true) (an AWX
    workflow node after the sliced job) merges too, or fails in one line naming the missing parts. Merging the same parts
    again writes nothing.
  - In the textfile, a drill of the last O(history) runs that this run did not drill (its host unreachable, another
    cluster's run written into the same folder) keeps its series with its last values (RV(carried)), so that an alert on
    the age of its last success fires instead of the series vanishing.
author:
  - pgdr.backup developers (@pgdr)
attributes:
  check_mode:
    support: full
    description: Reads the drills, the history and the parts, and says in RV(written) which files it would write; writes nothing.
  diff_mode:
    support: none
    description: The report is new files each run; RV(written) lists them.
options:
  folder:
    description:
      - The report folder on the controller, an absolute path; created when missing. It keeps the history (one folder per run).
      - For a sliced AWX job, storage every slice and the merging node reach (an NFS share mounted into the execution
        environment); an execution environment's own file system is gone when its job ends.
    type: path
    required: true
  drills:
    description:
      - The drill results of this run (or of this slice), one per drill per drill host, as C(pgdr.backup.restore_drill)
        returns them (the JSON object of C(docs/drill-reports.md), format 1).
      - Each is checked; a wrong one fails the task in one line naming it, such as
        C(drills[3].phases[2].result must be ok or skipped in a passed drill, not 'failed').
      - Each (cluster, drill host, drill) once per run. May be empty.
    type: list
    elements: dict
    default: []
  run_id:
    description:
      - The run's id, also its folder's name - letters, digits, C(.), C(_) and C(-) (not first), at most 100.
      - Left out, one is made from the run's start and 6 random hex digits (C(20261207T080000Z-3f9a1c)).
      - Required with O(part_count) above 1 and with O(merge=true) - every slice of one sliced job must give the same one. In
        AWX, the slices of a sliced job are run by one workflow job, whose id each slice sees as C(tower_workflow_job_id)
        (and C(awx_workflow_job_id)), so C(awx-{{ tower_workflow_job_id }}) is a run id the slices agree on. A workflow node
        after the sliced job sees another workflow id (its own workflow's); it takes the run id from the slices' C(set_stats),
        C(pgdr_drill_run_id).
    type: str
  part_index:
    description: This slice's number i, 1 to O(part_count).
    type: int
    default: 1
  part_count:
    description:
      - The number of slices n of the sliced job; 1 for a run that is not sliced.
      - With O(merge=true), optional - when given, the parts must be parts of n, and a run without any part names all n as missing.
    type: int
    default: 1
  merge:
    description:
      - Merge the parts the slices of run O(run_id) wrote into the run's report, without adding a part. Fails in one line when
        a part is missing (C(parts 2, 4 of 4 of run awx-4711 are missing ...)), and writes nothing when the same parts were
        merged already.
    type: bool
    default: false
  started_at:
    description:
      - When the run started - epoch seconds (a number, or a string of one such as C(ansible_date_time.epoch)) or a UTC time
        such as C(2026-12-07T08:00:00Z).
      - Left out, the earliest start of O(drills) (now for a run without drills). The run ends when its report is written
        (or at its last drill's end, if a drill host's clock is ahead).
    type: raw
  controller:
    description: The name of the controller the report says it was written on; left out, this host's name.
    type: str
  textfile:
    description:
      - Also write the Prometheus textfile here (atomically; an absolute path ending in C(.prom), in node_exporter's textfile
        directory, which must exist). Left out, no textfile.
      - C(pgdr_drill_last_success_timestamp_seconds) of a drill that failed in this run is its last success in the
        whole history of O(folder).
      - A part of a sliced run writes no textfile; the merge does.
    type: path
  history:
    description: How many runs the HTML page charts, this one included (at most 30); also how far back the textfile carries drills this run did not drill.
    type: int
    default: 30
notes:
  - AWX gives a job no variable for its slice number; the fleet playbook passes O(part_index) and O(part_count) (see
    C(docs/drill-reports.md)). A slice relaunched on its own runs outside the sliced job's workflow, so it gets another
    workflow id and another run id - when a slice failed, run the sliced job again.
  - Two slices that finish at the same moment may both merge; they write the same files, each atomically. Over NFS, a
    part written by one execution node may show late on another; a workflow node with O(merge=true) after the sliced job
    is the merge that cannot miss a part.
  - Runs on the controller, never on a drill host - use C(run_once) and C(delegate_to) C(localhost).
seealso:
  - module: pgdr.backup.restore_cluster
"""

EXAMPLES = r"""
- name: Write the fleet's drill report (the drill results gathered from every drill host)
  pgdr.backup.drill_report:
    folder: /var/lib/pgdr/drills
    drills: "{{ ansible_play_hosts_all | map('extract', hostvars, 'restore_drill_results') | select('defined') | flatten }}"
    textfile: /var/lib/node_exporter/textfile/pgdr_drill.prom
  run_once: true
  delegate_to: localhost
  register: drill_report

- name: Hand the fleet summary to the next nodes of an AWX workflow
  ansible.builtin.set_stats:
    data: "{{ drill_report.stats }}"
  run_once: true

- name: Fail the play after the report is written when a drill failed
  ansible.builtin.fail:
    msg: "{{ drill_report.failures | join('; ') }}"
  when: drill_report.failures | length > 0
  run_once: true

- name: One slice of a sliced AWX job writes its part (i and n passed by the workflow, see docs/drill-reports.md)
  pgdr.backup.drill_report:
    folder: /mnt/pgdr-reports/drills
    drills: "{{ ansible_play_hosts_all | map('extract', hostvars, 'restore_drill_results') | select('defined') | flatten }}"
    run_id: "awx-{{ tower_workflow_job_id }}"
    part_index: "{{ drill_slice_index }}"
    part_count: "{{ drill_slice_count }}"
  run_once: true
  delegate_to: localhost

- name: A workflow node after the sliced job merges the parts (fails naming a missing one)
  pgdr.backup.drill_report:
    folder: /mnt/pgdr-reports/drills
    run_id: "{{ pgdr_drill_run_id }}"  # the slices' set_stats: this node's own tower_workflow_job_id is another workflow's
    merge: true
    textfile: /mnt/pgdr-reports/textfile/pgdr_drill.prom
  delegate_to: localhost
"""

RETURN = r"""
run_id:
  description: The run's id (given, or made from its start).
  returned: always
  type: str
  sample: 20261207T080000Z-3f9a1c
paths:
  description:
    - The run's files - C(json), C(junit), C(html) and C(textfile); C(null) for what is not written. Until a sliced run is
      merged, C(json) is this part's C(part-<i>-of-<n>.json) and the others are null.
    - In check mode, the paths it would write.
  returned: always
  type: dict
  sample:
    json: /var/lib/pgdr/drills/20261207T080000Z-3f9a1c/report.json
    junit: /var/lib/pgdr/drills/20261207T080000Z-3f9a1c/junit.xml
    html: /var/lib/pgdr/drills/20261207T080000Z-3f9a1c/report.html
    textfile: /var/lib/node_exporter/textfile/pgdr_drill.prom
written:
  description: The files written (in check mode, that would be written); a file whose content is already the same is not.
  returned: always
  type: list
  elements: str
summary:
  description:
    - The report's summary - C(drills), C(passed), C(failed), C(worst_rto_seconds) and C(worst_rpo_seconds) (of the drills
      that passed; null when none did), C(hosts) (distinct drill hosts).
    - Of the merged run when this task merged, else of this part.
  returned: always
  type: dict
  sample: {drills: 6, passed: 5, failed: 1, worst_rto_seconds: 41.2, worst_rpo_seconds: 3600.5, hosts: 3}
stats:
  description:
    - The fleet summary for C(ansible.builtin.set_stats) (flat keys for the extra variables of the next workflow nodes) -
      C(pgdr_drill_run_id), C(pgdr_drill_drills), C(pgdr_drill_passed), C(pgdr_drill_failed), C(pgdr_drill_hosts),
      C(pgdr_drill_worst_rto_seconds), C(pgdr_drill_worst_rpo_seconds), C(pgdr_drill_failures) (one line each) and
      C(pgdr_drill_report_paths) (RV(paths)).
    - Of the merged run when this task merged, else of this part.
  returned: always
  type: dict
failures:
  description: "One line per failed drill, C(drill <drill> of <cluster> on <drill host>: <reason>), as RV(stats) has them."
  returned: always
  type: list
  elements: str
  sample: ["drill pitr of db2 on replica2: recovery stopped before the restore point drill_20261207T080018Z"]
merged:
  description: True when this task merged the parts of a sliced run into the run's report.
  returned: always
  type: bool
complete:
  description: True when the run's report (C(report.json)) is written - a run that is not sliced, or every part merged.
  returned: always
  type: bool
parts_present:
  description: The part numbers in the run folder, this one included (empty for a run that is not sliced).
  returned: always
  type: list
  elements: int
  sample: [1, 3]
parts_missing:
  description: The part numbers still missing before the run can be merged.
  returned: always
  type: list
  elements: int
  sample: [2]
carried:
  description: The drills (C(cluster), C(drill_host), C(drill)) of earlier runs whose series the textfile keeps because this run did not drill them.
  returned: always
  type: list
  elements: dict
  sample: [{cluster: db4, drill_host: replica4, drill: pitr}]
"""

from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import run_module
from ansible_collections.pgdr.backup.plugins.module_utils.drill import report_run

# the spec is read here too (ansible-test, tests/unit/test_module_docs.py)
argument_spec = report_run.argument_spec


def main():
    run_module(argument_spec(), lambda module: report_run.run(report_run.options_from(module.params), check_mode=module.check_mode),
               needs_psycopg=False)  # writes files on the controller, never connects to a server


if __name__ == "__main__":
    main()
