"""fleet: playbooks/fleet_drill.yml on the first 1, 2, 4, 8 lab fleet pairs, against the same drills run without Ansible.

Each run is timed from the outside (the whole `ansible-playbook` process) and split with the drills' own timestamps
from the run's report.json (the hosts share the controller's clock: they are namespaces of one machine):

  head  launch -> the first drill started: Ansible's start-up, the pairing play, the checks, SSH, shipping the module
  drill the busiest drill host's own drill time (sum of its drills' started_at -> finished_at: PostgreSQL work and
        the engine around it), the critical path of the PostgreSQL work
  gaps  on that host, the time between its drills: Ansible's per loop item cost (a module started per drill)
  tail  the last drill finished -> the process ended: results back, set_fact, the report, set_stats

head + gaps + tail is Ansible's overhead (= wall - drill of the host that finished last).

The raw baseline runs the same drills with the same options on the same hosts at once, without Ansible: one
/usr/bin/python3 per drill host (inside its namespaces, as root like the role's become) that calls the module's
engine (plugins/module_utils/drill/engine.py) for each drill in turn. Its wall time is what the PostgreSQL work
and the engine cost when N pairs share this machine; T(N) / raw(N) is Ansible's share, raw(N) / raw(1) the floor
that T(N) / T(1) cannot go below.

Levers, measured at the largest count, one changed at a time from the project's settings (ansible.cfg, forks N + 1,
the playbook as it is): pipelining off, forks 5 (Ansible's default), strategy free, no SSH ControlMaster, and the
masters of the previous run still alive (a scheduled drill never has them: every other run starts with none).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

import yaml

from bench.playbook import PLAYBOOK_BIN, PROJECT_DIR

COLLECTIONS = os.path.join(PROJECT_DIR, ".collections")
PLAYBOOK = os.path.join(PROJECT_DIR, "playbooks", "fleet_drill.yml")
DEFAULT_COUNTS = (1, 2, 4, 8)
# the role's default: what a scheduled drill runs when nobody chose (restore_drill_drills in roles/restore_drill/defaults)
DEFAULT_DRILLS = ("logical", "standalone", "pitr")
LEVERS = ("pipelining_off", "forks_5", "strategy_free", "no_controlmaster", "warm_controlmaster")
# the options the role passes (roles/restore_drill/tasks/main.yml) with its defaults, for the raw baseline
DRILL_DIR = "/var/lib/postgresql/pgdr-drill"
DRILL_PORT = 5499

# runs on a drill host: the module's engine, without Ansible's controller, SSH or AnsiballZ. The engine builds
# nested option defaults from the argument spec, which takes env_fallback from ansible.module_utils: it comes from
# the project's venv (the same Python minor as the hosts' /usr/bin/python3), as AnsiballZ would ship it.
RAW_DRIVER = r"""
import json, sys, time
sys.path.insert(0, %(collections)r)
sys.path.append(%(site)r)
from ansible_collections.pgdr.backup.plugins.module_utils.drill import engine
out = []
for params in json.load(sys.stdin):
    out.append(engine.run(*engine.options_from(params))["drill"])
print(json.dumps(out))
"""


def parse_counts(text):
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1 or counts[-1] > 32:
        raise SystemExit("BENCH_FLEET_PAIRS must list pair counts from 1 to 32 separated by commas, got %r" % text)
    return counts


def parse_drills(text):
    drills = [part.strip() for part in text.split(",") if part.strip()]
    if not drills or set(drills) - {"logical", "standalone", "pitr"}:
        raise SystemExit("BENCH_FLEET_DRILLS must list drills from logical, standalone, pitr separated by commas, got %r" % text)
    return drills


def parse_levers(text):
    levers = [part.strip() for part in text.split(",") if part.strip() and part.strip() != "none"]
    if set(levers) - set(LEVERS):
        raise SystemExit("BENCH_FLEET_LEVERS must list levers from %s (or none), got %r" % (",".join(LEVERS), text))
    return levers


def epoch(text):
    """A report time (report.utc_text: milliseconds, left out when they are 0) as seconds since the epoch."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def host_split(drills):
    """Per drill host: its drills' own time (sum), first start, last finish, and the phases summed."""
    hosts = {}
    for drill in drills:
        start, end = epoch(drill["started_at"]), epoch(drill["finished_at"])
        entry = hosts.setdefault(drill["drill_host"], dict(own=0.0, first=start, last=end, phases={}, drills=0))
        entry["own"] += end - start
        entry["first"], entry["last"] = min(entry["first"], start), max(entry["last"], end)
        entry["drills"] += 1
        for phase in drill["phases"]:
            entry["phases"][phase["name"]] = entry["phases"].get(phase["name"], 0.0) + phase["seconds"]
    return hosts


def split(launched, ended, drills):
    """The wall time cut into head, the critical host's drill time and gaps, and tail (see the module's docstring)."""
    hosts = host_split(drills)
    last = max(hosts.values(), key=lambda entry: entry["last"])
    first_start = min(entry["first"] for entry in hosts.values())
    phases = {}
    for entry in hosts.values():
        for name, seconds in entry["phases"].items():
            phases[name] = phases.get(name, 0.0) + seconds
    return dict(
        wall=ended - launched,
        head=first_start - launched,
        tail=ended - last["last"],
        drill_critical=last["own"],
        gaps_critical=(last["last"] - last["first"]) - last["own"],
        overhead=(ended - launched) - last["own"],
        drill_max=max(entry["own"] for entry in hosts.values()),
        drill_sum=sum(entry["own"] for entry in hosts.values()),
        phases_sum=phases,
        hosts=len(hosts),
    )


class FleetBench:
    def __init__(self, lab, log, work_dir, counts, drills, levers):
        self.lab = lab
        self.log = log
        self.work_dir = os.path.abspath(os.path.join(work_dir, "fleet"))  # the report folder must be absolute
        self.counts = counts
        self.drills = drills
        self.levers = levers
        self.samples = {}
        self.pairs_before = None
        self.pairs = []

    # --- the lab's shape --------------------------------------------------------------------------------------

    def grow(self):
        """The lab runs at least max(counts) pairs for the bench; cleanup() puts the earlier count back."""
        from tests.lab import Lab

        have = len(self.lab.fleet_pairs())
        need = self.counts[-1]
        if have < need:
            self.log("fleet: growing the lab from %d to %d pairs (put back at the end)" % (have, need))
            self.reshape(need)
            self.pairs_before = have
            self.lab = Lab.load(PROJECT_DIR)
        self.pairs = self.lab.fleet_pairs(minimum=need)[:need]

    def reshape(self, pairs):
        done = subprocess.run([sys.executable, "-m", "tests.lab", "up", "--fleet-pairs", str(pairs)], cwd=PROJECT_DIR,
                              capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            raise RuntimeError("lab up --fleet-pairs %d failed: %s" % (pairs, (done.stdout + done.stderr).strip()[-1000:]))

    def cleanup(self):
        problems = []
        if self.pairs_before is not None:
            self.log("fleet: reshaping the lab back to %d pairs" % self.pairs_before)
            try:
                self.reshape(self.pairs_before)
            except RuntimeError as exc:
                problems.append(str(exc))
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return problems

    # --- one run ----------------------------------------------------------------------------------------------

    def playbook(self, count, lever=None):
        """fleet_drill.yml on the first `count` pairs; returns the split of its wall time."""
        os.makedirs(self.work_dir, exist_ok=True)
        run_dir = tempfile.mkdtemp(prefix="run-", dir=self.work_dir)
        primaries = [pair[0].name for pair in self.pairs[:count]]
        extra = dict(fleet_primaries=",".join(primaries), fleet_replicas="fleet_replica", restore_drill_drills=",".join(self.drills),
                     restore_drill_login_password=self.lab.pg_password, restore_drill_report_dir=os.path.join(run_dir, "reports"))
        extra_file = os.path.join(run_dir, "vars.json")
        with open(extra_file, "w") as handle:
            json.dump(extra, handle)
        os.chmod(extra_file, 0o600)
        # every run starts without SSH masters, as a scheduled drill does (unless the lever is the warm masters)
        control_dir = os.path.join(self.work_dir, "cp-warm") if lever == "warm_controlmaster" else os.path.join(run_dir, "cp")
        os.makedirs(control_dir, exist_ok=True)
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir)
        forks = count + 1
        if lever == "pipelining_off":
            env["ANSIBLE_PIPELINING"] = "False"
        elif lever == "forks_5":
            forks = 5
        elif lever == "no_controlmaster":
            env["ANSIBLE_SSH_ARGS"] = "-C -o ControlMaster=no"
        playbook = PLAYBOOK
        if lever == "strategy_free":  # on the drill play only: the pairing play's add_host refuses the free strategy
            with open(PLAYBOOK) as handle:
                plays = yaml.safe_load(handle)
            plays[1]["strategy"] = "free"
            playbook = os.path.join(run_dir, "fleet_drill_free.yml")
            with open(playbook, "w") as handle:
                yaml.safe_dump(plays, handle, sort_keys=False)
        argv = [PLAYBOOK_BIN, "-i", str(self.lab.inventory_path), playbook, "-f", str(forks), "-e", "@" + extra_file]
        if lever == "warm_controlmaster":  # untimed: leaves the masters this run then finds
            subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=1800, check=False)
            shutil.rmtree(os.path.join(run_dir, "reports"), ignore_errors=True)
        launched = time.time()
        done = subprocess.run(argv, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=1800, check=False)
        ended = time.time()
        try:
            reports = os.path.join(run_dir, "reports")
            runs = sorted(os.listdir(reports)) if os.path.isdir(reports) else []
            drills = []
            for run in runs:  # one run, one report; the free strategy writes one per host (run_once is ignored there)
                with open(os.path.join(reports, run, "report.json")) as handle:
                    found = json.load(handle)["drills"]
                drills = found if len(found) > len(drills) else drills
            expected = count * len(self.drills)
            failed = ["%s %s: %s" % (d["drill_host"], d["drill"], d["reason"]) for d in drills if d["result"] != "passed"]
            if done.returncode != 0 or failed or len(drills) != expected or not runs or (len(runs) != 1 and lever != "strategy_free"):
                detail = "; ".join(failed) or (done.stdout + done.stderr)[-1500:]
                raise RuntimeError("fleet_drill.yml on %d pair(s)%s: rc %d, %d report(s), %d of %d drills: %s"
                                   % (count, " (%s)" % lever if lever else "", done.returncode, len(runs), len(drills), expected, detail))
            return dict(split(launched, ended, drills), reports=len(runs))
        finally:
            self.stop_masters(control_dir)
            shutil.rmtree(run_dir, ignore_errors=True)

    def stop_masters(self, control_dir):
        """SSH masters outlive the run by ControlPersist (60 s): stop this run's so the next one starts cold."""
        if not os.path.isdir(control_dir):
            return
        for name in os.listdir(control_dir):
            subprocess.run(["ssh", "-o", "ControlPath=" + os.path.join(control_dir, name), "-O", "exit", "lab"], capture_output=True,
                           check=False, timeout=30)

    def raw_params(self, primary, replica):
        """The options the role gives the module, with the module's defaults filled in as Ansible does."""
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

        if COLLECTIONS not in sys.path:
            sys.path.insert(0, COLLECTIONS)
        from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import null_means_default
        from ansible_collections.pgdr.backup.plugins.module_utils.drill import engine

        out = []
        for drill in self.drills:
            params = dict(drill=drill, cluster=primary.name, source_host=primary.name, drill_host=replica.name, login_host=primary.address,
                          login_port=5432, login_user="postgres", login_password=self.lab.pg_password, login_db="postgres",
                          database="postgres", drill_dir=DRILL_DIR, port=DRILL_PORT, os_user="postgres", heapallindexed=False,
                          keep=False, recovery_timeout=600)
            checked = ArgumentSpecValidator(engine.argument_spec(), **engine.ARGUMENT_RELATIONS).validate(params)
            if checked.error_messages:
                raise RuntimeError("raw drill options: %s" % "; ".join(checked.error_messages))
            full = checked.validated_parameters
            null_means_default(engine.argument_spec(), full)
            out.append(full)
        return out

    def raw(self, count):
        """The same drills on the first `count` drill hosts at once, without Ansible."""
        import ansible

        site = os.path.dirname(os.path.dirname(ansible.__file__))
        driver = RAW_DRIVER % dict(collections=COLLECTIONS, site=site)
        results, errors = {}, []

        def one(primary, replica):
            try:
                done = replica.run(["/usr/bin/python3", "-c", driver], input=json.dumps(self.raw_params(primary, replica)), timeout=1800)
                results[replica.name] = json.loads(done.stdout)
            except Exception as exc:  # reported below with the host's name; the other hosts finish first
                errors.append("%s: %s" % (replica.name, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__))

        threads = [threading.Thread(target=one, args=pair) for pair in self.pairs[:count]]
        launched = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended = time.time()
        drills = [drill for found in results.values() for drill in found]
        failed = ["%s %s: %s" % (d["drill_host"], d["drill"], d["reason"]) for d in drills if d["result"] != "passed"]
        if errors or failed:
            raise RuntimeError("raw drills on %d pair(s): %s" % (count, "; ".join(errors + failed)))
        return split(launched, ended, drills)

    # --- a round ----------------------------------------------------------------------------------------------

    def record(self, key, value):
        self.samples.setdefault(key, []).append(value)

    def run_round(self, round_no):
        if round_no == 1:  # untimed: the first drills after a reshape read cold binaries and build the hosts' caches
            self.log("fleet: warm-up, fleet_drill.yml on %d pairs" % self.counts[-1])
            self.playbook(self.counts[-1])
        for count in self.counts:
            sample = self.playbook(count)
            self.log("fleet round %d: %d pair(s) fleet_drill.yml %.2f s (head %.2f, busiest host's drills %.2f, gaps %.2f, tail %.2f)"
                     % (round_no, count, sample["wall"], sample["head"], sample["drill_critical"], sample["gaps_critical"], sample["tail"]))
            self.record("playbook_%d" % count, sample)
            sample = self.raw(count)
            self.log("fleet round %d: %d pair(s) raw engine %.2f s (busiest host's drills %.2f)" % (round_no, count, sample["wall"], sample["drill_max"]))
            self.record("raw_%d" % count, sample)
        for lever in self.levers:
            sample = self.playbook(self.counts[-1], lever)
            self.log("fleet round %d: %d pairs, %s: %.2f s" % (round_no, self.counts[-1], lever, sample["wall"]))
            self.record("lever_%s_%d" % (lever, self.counts[-1]), sample)

    # --- results ----------------------------------------------------------------------------------------------

    def medians(self):
        out = {}
        for key, samples in self.samples.items():
            out[key] = {name: statistics.median(s[name] for s in samples) for name in samples[0] if not isinstance(samples[0][name], dict)}
            out[key]["phases_sum"] = {name: statistics.median(s["phases_sum"].get(name, 0.0) for s in samples) for name in samples[0]["phases_sum"]}
            out[key]["wall_min"] = min(s["wall"] for s in samples)
        return out

    def summary(self, medians):
        """Rows per count and per lever, with the ratios the issue asks for (goal: T(max) <= 3 x T(1))."""
        first = self.counts[0]
        rows = []
        for count in self.counts:
            run, raw = medians["playbook_%d" % count], medians["raw_%d" % count]
            rows.append(dict(pairs=count, wall=run["wall"], ratio=run["wall"] / medians["playbook_%d" % first]["wall"], head=run["head"],
                             drill_critical=run["drill_critical"], gaps=run["gaps_critical"], tail=run["tail"], overhead=run["overhead"],
                             drill_sum=run["drill_sum"], raw=raw["wall"], raw_ratio=raw["wall"] / medians["raw_%d" % first]["wall"],
                             vs_raw=run["wall"] / raw["wall"]))
        top = self.counts[-1]
        levers = [dict(lever="project settings (ansible.cfg, forks %d, linear)" % (top + 1), wall=medians["playbook_%d" % top]["wall"],
                       overhead=medians["playbook_%d" % top]["overhead"], change=0.0)]
        for lever in self.levers:
            found = medians.get("lever_%s_%d" % (lever, top))
            if found:
                levers.append(dict(lever=lever, wall=found["wall"], overhead=found["overhead"], reports=found["reports"],
                                   change=found["wall"] - medians["playbook_%d" % top]["wall"]))
        goal = rows[-1]["ratio"] <= 3.0 if first == 1 else None
        return dict(counts=rows, levers=levers, goal="T(%d) <= 3 x T(1)" % top, goal_met=goal, drills=self.drills)


def table(summary):
    names = ("pairs", "T(N) s", "T/T(1)", "head", "drills*", "gaps*", "tail", "overhead", "drill sum", "raw s", "raw/r(1)", "T/raw")
    out = ["%5s %8s %7s %7s %9s %7s %7s %9s %9s %8s %9s %7s" % names]
    for r in summary["counts"]:
        out.append("%5d %8.2f %7.2f %7.2f %9.2f %7.2f %7.2f %9.2f %9.2f %8.2f %9.2f %7.2f"
                   % (r["pairs"], r["wall"], r["ratio"], r["head"], r["drill_critical"], r["gaps"], r["tail"], r["overhead"], r["drill_sum"],
                      r["raw"], r["raw_ratio"], r["vs_raw"]))
    out.append("* the drill host that finished last: its drills' own time, and the time between them")
    out.append("")
    out.append("%-48s %8s %9s %8s" % ("levers at %d pairs" % summary["counts"][-1]["pairs"], "T s", "overhead", "vs now"))
    for r in summary["levers"]:
        broken = "  (%d reports, not one: run_once is ignored)" % r["reports"] if r.get("reports", 1) != 1 else ""
        out.append("%-48s %8.2f %9.2f %+8.2f%s" % (r["lever"], r["wall"], r["overhead"], r["change"], broken))
    if summary["goal_met"] is not None:
        out.append("\ngoal %s: %s" % (summary["goal"], "met" if summary["goal_met"] else "NOT met"))
    return "\n".join(out)
