"""`python -m bench`: build (or reuse) the pgbench database, time modules against raw tools, print and save the ratios.

Settings (environment):
  BENCH_SCALE   pgbench scale of the source database (default 70, about 1 GB)
  BENCH_REPEAT  rounds; each figure is the median over them (default 1 at scale >= 20, else 3)
  BENCH_HOST    lab host with the source cluster (default primary15)
  BENCH_ONLY    what to run, from a,b,c,d,fp,phys,prestore,walreplay,pgbackrest,fleet (fp: where the fingerprint's time goes;
                phys: pg_basebackup; prestore: physical restore and WAL replay; walreplay: WAL replay per segment from local, SFTP, S3
                and raw cp; pgbackrest: side by side with pgBackRest; fleet: playbooks/fleet_drill.yml on 1..8 fleet pairs; default all)
  BENCH_WAL_SECONDS  walreplay: seconds pgbench writes the WAL that is replayed (default 20)
  BENCH_WAL_SEGMENTS walreplay: segments the archive is topped up to with pgbench -i into a scratch database (default 64)
  BENCH_FLEET_PAIRS   fleet: pair counts (default 1,2,4,8; the lab grows to the largest and is put back after)
  BENCH_FLEET_DRILLS  fleet: the drills of each run (default logical,standalone,pitr, the role's default)
  BENCH_FLEET_LEVERS  fleet: Ansible settings tried at the largest count (default all of bench.fleet.LEVERS; none: none)
  BENCH_OUTPUT  results file (default .build/bench/results.json)
  BENCH_SFTP_MB prestore: size of the file the SFTP read throughput is measured on (default 256)
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from bench import dataset, fleet, wal_replay
from bench.logical import LogicalBench
from bench.pgbackrest import PgBackRestBench
from bench.physical import PhysicalBench
from bench.physical_restore import PhysicalRestoreBench
from bench.playbook import PROJECT_DIR, Playbooks
from tests.lab import Lab

COMPARISONS = ("a", "b", "c", "d", "fp", "phys", "prestore", "walreplay", "pgbackrest", "fleet")


def log(message):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def settings():
    scale = int(os.environ.get("BENCH_SCALE") or 70)
    repeat = int(os.environ.get("BENCH_REPEAT") or (1 if scale >= 20 else 3))
    if scale < 1 or repeat < 1:
        raise SystemExit("BENCH_SCALE and BENCH_REPEAT must be positive integers")
    only = [part.strip() for part in (os.environ.get("BENCH_ONLY") or ",".join(COMPARISONS)).split(",") if part.strip()]
    if not only or set(only) - set(COMPARISONS):
        raise SystemExit("BENCH_ONLY must list comparisons from %s" % ",".join(COMPARISONS))
    return dict(scale=scale, repeat=repeat, only=sorted(set(only)), host=os.environ.get("BENCH_HOST") or "primary15",
                fleet_pairs=fleet.parse_counts(os.environ.get("BENCH_FLEET_PAIRS") or ",".join(map(str, fleet.DEFAULT_COUNTS))),
                fleet_drills=fleet.parse_drills(os.environ.get("BENCH_FLEET_DRILLS") or ",".join(fleet.DEFAULT_DRILLS)),
                fleet_levers=fleet.parse_levers(os.environ.get("BENCH_FLEET_LEVERS") or ",".join(fleet.LEVERS)),
                output=os.environ.get("BENCH_OUTPUT") or os.path.join(PROJECT_DIR, ".build", "bench", "results.json"))


def median(values):
    """Median of numbers, or per key of dicts of numbers."""
    if values and isinstance(values[0], dict):
        return {key: statistics.median([v[key] for v in values if key in v]) for key in values[0]}
    return statistics.median(values)


def comparisons(m, only):
    """The targets of the brief, each read three ways: whole playbook, minus the fixed Ansible cost, module's own time."""
    overhead = m["playbook_ping"]

    def row(cid, label, module, raw, target, own=None, own_raw=None, faster=False, net_raw=None):
        net_raw = raw if net_raw is None else net_raw
        ratio = module / raw
        net = (module - overhead) / net_raw
        own_ratio = own / (own_raw if own_raw is not None else raw) if own is not None else None
        met = (lambda r: r < target) if faster else (lambda r: r <= target)
        return dict(id=cid, label=label, module_wall_s=module, module_own_s=own, raw_s=raw, ratio_wall=ratio,
                    ratio_net_of_playbook=net, ratio_own=own_ratio, target=("< %.2f" if faster else "<= %.2f") % target,
                    met_wall=met(ratio), met_net=met(net), met_own=met(own_ratio) if own_ratio is not None else None)

    rows = []
    if "a" in only:
        rows.append(row("a", "pg_logical_dump custom gzip:1, no fingerprint, local  vs  pg_dump -Fc -Z1 -f",
                        m["module_dump_local"], m["raw_pg_dump"], 1.05, own=m["module_dump_local_duration"]))
    if "b" in only:
        rows.append(row("b", "pg_logical_dump custom gzip:1, fingerprint, local  vs  pg_dump -Fc -Z1 -f",
                        m["module_dump_local_fp"], m["raw_pg_dump"], 1.5, own=m["module_dump_local_fp_duration"]))
    if "c" in only:
        local, s3, s3_own = m["module_dump_local"], m["module_dump_s3"], m["module_dump_s3_duration"]
        rows.append(row("c1", "pg_logical_dump to S3 (streaming)  vs  pg_logical_dump to local",
                        s3, local, 1.2, own=s3_own, own_raw=m["module_dump_local_duration"], net_raw=local - overhead))
        rows.append(row("c2", "pg_logical_dump to S3 (streaming)  vs  pg_dump -f then boto3 upload_file",
                        s3, m["raw_pg_dump_then_upload"], 1.0, own=s3_own, faster=True))
    if "d" in only:
        rows.append(row("d", "restore_cluster verify=true into a new db  vs  createdb + pg_restore -d",
                        m["module_restore"], m["raw_restore"], 1.5, own=m["module_restore_seconds"]))
    if "phys" in only:
        rows.append(row("phys", "pg_basebackup module tar stream, verify=false, local  vs  raw pg_basebackup",
                        m["module_basebackup"], m["raw_pg_basebackup"], 1.05, own=m["module_basebackup_duration"]))
        rows.append(row("ph3", "pg_basebackup module tar stream, verify=false, to S3 (streamed)  vs  to a local repository",
                        m["module_basebackup_s3"], m["module_basebackup"], 1.1, own=m["module_basebackup_s3_duration"],
                        own_raw=m["module_basebackup_duration"], net_raw=m["module_basebackup"] - overhead))
    if "prestore" in only:
        rows.append(row("pr", "restore_cluster physical, local repository, verify=false  vs  tar -x + pg_ctl start + recovery",
                        m["module_physical_restore"], m["raw_physical_restore"], 1.1, own=m["module_physical_restore_total"]))
        rows.append(row("prs", "restore_cluster physical, SFTP, verify=false  vs  ssh cat | tar -x + start + recovery",
                        m["module_physical_restore_sftp"], m["raw_physical_restore_ssh"], 1.3, own=m["module_physical_restore_sftp_total"]))
        rows.append(row("pr3", "restore_cluster physical, S3, verify=false  vs  the same from a local repository",
                        m["module_physical_restore_s3"], m["module_physical_restore"], 1.2, own=m["module_physical_restore_s3_total"],
                        own_raw=m["module_physical_restore_total"], net_raw=m["module_physical_restore"] - overhead))
    if "pgbackrest" in only:
        rows.append(row("pb", "pg_basebackup module lz4, local repo on backup1  vs  pgbackrest backup full, pmax 2",
                        m["pgbr_pgdr_backup"], m["pgbr_backup_pm2"], 1.2, own=m["pgbr_pgdr_backup_duration"]))
        rows.append(row("pbr", "restore_cluster, SFTP from backup1  vs  pgbackrest restore pmax 2 + start + recovery",
                        m["pgbr_pgdr_restore"], m["pgbr_restore_pm2"], 1.2, own=m["pgbr_pgdr_restore_total"]))
        # seconds per segment inside recovery: no playbook around either figure, so wall and net are the same ratio
        replay = row("pbw", "WAL replay s/segment: pgdr-wal restore_command (SFTP)  vs  archive-get async (TLS)",
                     m["pgbr_pgdr_replay_seconds"] / max(1, m["pgbr_pgdr_replay_segments"]),
                     m["pgbr_replay_seconds"] / max(1, m["pgbr_replay_segments"]), 1.5)
        replay.update(ratio_net_of_playbook=replay["ratio_wall"], met_net=replay["met_wall"])
        rows.append(replay)
    return rows


def findings(m, only, info):
    """Plain-language notes on what limits each figure."""
    notes = []
    if "b" in only:
        fp, dump, both = m["fingerprint_sql"], m["raw_pg_dump"], m["raw_pg_dump_and_fingerprint_concurrent"]
        fp_module = m["module_dump_local_fp_duration"] - m.get("module_dump_local_duration", dump)
        biggest = max(m["fingerprint_sql_tables"].items(), key=lambda kv: kv[1]) if m["fingerprint_sql_tables"] else ("-", 0)
        notes.append(
            "b: fingerprint SQL alone %.2f s (largest table %s %.2f s), pg_dump alone %.2f s, both at once as raw processes %.2f s; "
            "the module with fingerprint takes %.2f s more than %s. %s"
            % (fp, biggest[0], biggest[1], dump, both, fp_module,
               "without" if "module_dump_local_duration" in m else "raw pg_dump",
               "The fingerprint scan is longer than pg_dump: it dominates." if fp > dump else
               "pg_dump is longer; the fingerprint runs alongside it, and the extra time is the two competing for %d cores."
               % (os.cpu_count() or 0)))
    if "c" in only:
        parts = m["raw_pg_dump_then_upload_parts"]
        values = (parts["pg_dump"], parts["upload"], m["module_dump_s3_duration"], m["module_dump_local_duration"])
        notes.append("c: raw pg_dump %.2f s then upload %.2f s (sequential); the module sends pg_dump's output to S3 as it reads it, "
                     "without a local file (own %.2f s; to local, own %.2f s)." % values)
    if "d" in only:
        parts = m["raw_restore_parts"]
        explained = parts["createdb"] + parts["pg_restore"] + parts["sha256_readback"] + parts["fingerprint_restored"] + parts["analyze"]
        notes.append(
            "d: raw createdb %.2f s + pg_restore %.2f s; the module adds a sha256 read-back of the set (sha256sum alone %.2f s), "
            "the verify (fingerprint SQL on the freshly restored copy alone %.2f s; on the source %.2f s) and ANALYZE (alone %.2f s): "
            "%.2f s in sum, against the module's own %.2f s."
            % (parts["createdb"], parts["pg_restore"], parts["sha256_readback"], parts["fingerprint_restored"], m["fingerprint_sql"],
               parts["analyze"], explained, m["module_restore_seconds"]))
    if "fp" in only:
        parts = m["fingerprint_breakdown"]
        notes.append("fingerprint cost on %s (server time per statement): " % info.get("fingerprint_breakdown_table")
                     + "; ".join("%s %.2f s" % (label, seconds) for label, seconds in parts.items()))
    if "phys" in only:
        notes.append("phys: module with verify=true %.2f s (own %.2f s), of which pg_verifybackup %.2f s; pg_basebackup inside the module "
                     "%.2f s vs raw %.2f s (the rest is hashing the files pg_basebackup did not write front to back, and the manifest); "
                     "to S3: pg_basebackup with base.tar streamed %.2f s, then pg_wal.tar and backup_manifest uploaded in %.2f s."
                     % (m["module_basebackup_verify"], m["module_basebackup_verify_duration"], m["module_basebackup_verify_seconds"],
                        m["module_basebackup_backup_seconds"], m["raw_pg_basebackup"], m["module_basebackup_s3_backup_seconds"],
                        m["module_basebackup_s3_upload_seconds"]))
    if "prestore" in only:
        notes.append("sftp read: a %.0f MB file on backup1, best of 3: ssh cat %.0f MB/s, SFTP repository %.0f MB/s (%.2f x ssh cat, target >= 0.8), "
                     "on paramiko's own transport %.0f MB/s (%.2f x)"
                     % (m["sftp_read_mb"], m["sftp_read_mbs_ssh_cat"], m["sftp_read_mbs_auto"], m["sftp_read_mbs_auto"] / m["sftp_read_mbs_ssh_cat"],
                        m["sftp_read_mbs_paramiko"], m["sftp_read_mbs_paramiko"] / m["sftp_read_mbs_ssh_cat"]))
        notes.append("prestore: restore_cluster with verify=true %.2f s (own %.2f s), of which pg_verifybackup %.2f s; without verify: deploy %.2f s, "
                     "start + recovery %.2f s. WAL replay over SFTP: %d segments of 16 MiB in %.2f s (%.3f s per segment) with read-ahead, "
                     "%d in %.2f s (%.3f s per segment) without."
                     % (m["module_physical_restore_verify"], m["module_physical_restore_verify_total"], m["module_physical_restore_verify_backup"],
                        m["module_physical_restore_deploy"], m["module_physical_restore_recovery"], m["wal_replay_segments"],
                        m["wal_replay_seconds"], m["wal_replay_seconds"] / max(1, m["wal_replay_segments"]),
                        m["wal_replay_segments_no_prefetch"], m["wal_replay_seconds_no_prefetch"],
                        m["wal_replay_seconds_no_prefetch"] / max(1, m["wal_replay_segments_no_prefetch"])))
    if "walreplay" in only:
        notes.append(wal_replay.note(m))
    if "pgbackrest" in only:
        push, pgdr_push = m["pgbr_wal_push_per_segment"], m["pgbr_pgdr_wal_push_per_segment"]
        notes.append(
            "pgbackrest: pgBackRest %s over its TLS server, lz4 level 1 on the PostgreSQL host both ways, process-max 2 in the rows. "
            "With process-max 1: backup %.2f s (pgdr/pgBackRest wall %.2f, own %.2f), restore %.2f s (files %.2f s + start and recovery "
            "%.2f s; pgdr wall %.2f). With process-max 2: backup %.2f s, restore files %.2f s + start and recovery %.2f s. WAL push, one "
            "process per segment as the archiver calls archive_command, the same %d segments: pgdr-wal (SFTP, not compressed) %.3f s, "
            "pgbackrest archive-push (TLS, lz4, synchronous) %.3f s per segment (pgdr/pgBackRest %.2f). WAL replay: pgdr %d segments in "
            "%.2f s of recovery, pgBackRest (archive-async, spool on the replica host) %d in %.2f s. Sizes: pgdr set %.1f MB, pgBackRest "
            "backup %.1f MB."
            % (info.get("pgbr_version"), m["pgbr_backup_pm1"], m["pgbr_pgdr_backup"] / m["pgbr_backup_pm1"],
               m["pgbr_pgdr_backup_duration"] / m["pgbr_backup_pm1"], m["pgbr_restore_pm1"], m["pgbr_restore_pm1_files"],
               m["pgbr_restore_pm1_recovery"], m["pgbr_pgdr_restore"] / m["pgbr_restore_pm1"], m["pgbr_backup_pm2"],
               m["pgbr_restore_pm2_files"], m["pgbr_restore_pm2_recovery"], info.get("pgbr_wal_segments_pushed", 0), pgdr_push, push,
               pgdr_push / push, m["pgbr_pgdr_replay_segments"], m["pgbr_pgdr_replay_seconds"], m["pgbr_replay_segments"],
               m["pgbr_replay_seconds"], m["pgbr_pgdr_backup_bytes"] / 1e6, m["pgbr_backup_pm2_bytes"] / 1e6))
    notes.append("ansible-playbook fixed cost: start-up alone %.2f s, start-up + SSH + become + a trivial module (ping) %.2f s."
                 % (m["playbook_startup"], m["playbook_ping"]))
    return notes


def table(rows):
    out = ["%-3s %-78s %9s %9s %9s %7s %7s %7s %8s %s" % ("id", "comparison", "module s", "own s", "raw s", "wall", "net", "own",
                                                          "target", "met wall/net/own")]
    for r in rows:
        own = "%9.2f" % r["module_own_s"] if r["module_own_s"] is not None else "%9s" % "-"
        own_ratio = "%7.2f" % r["ratio_own"] if r["ratio_own"] is not None else "%7s" % "-"
        flags = "/".join("-" if v is None else ("yes" if v else "NO") for v in (r["met_wall"], r["met_net"], r["met_own"]))
        values = (r["id"], r["label"], r["module_wall_s"], own, r["raw_s"], r["ratio_wall"], r["ratio_net_of_playbook"], own_ratio, r["target"], flags)
        out.append("%-3s %-78s %9.2f %s %9.2f %7.2f %7.2f %s %8s %s" % values)
    return "\n".join(out)


def describe(host):
    server = host.psql("SELECT version()").strip()
    pg_dump = host.run([host.pg_bin_dir + "/pg_dump", "--version"]).stdout.strip()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "plugins"], cwd=PROJECT_DIR, capture_output=True, text=True,
                               check=False).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    from ansible.release import __version__ as ansible_version

    return dict(server_version=server, pg_dump=pg_dump, cores=os.cpu_count(), machine=platform.platform(), ansible_core=ansible_version,
                git_commit=commit or None, plugins_modified_since_commit=bool(dirty))


def run_modules(cfg, lab, host, work_dir):
    """Comparisons a-d, fp, phys and prestore on the pgbench database; returns (bench, physical parts' samples, problems)."""
    try:
        created_s = dataset.ensure(host, cfg["scale"], log)
        size_pretty, size_bytes = dataset.size(host)
        log("source database %s: %s" % (dataset.DATABASE, size_pretty))
        bench = LogicalBench(lab, host, Playbooks(lab, work_dir), log)
        physical = PhysicalBench(lab, host, Playbooks(lab, work_dir), log, bench.samples) if "phys" in cfg["only"] else None
        restores = PhysicalRestoreBench(lab, host, Playbooks(lab, work_dir), log, bench.samples) if "prestore" in cfg["only"] else None
        replays = wal_replay.WalReplayBench(lab, host, Playbooks(lab, work_dir), log, bench.samples) if "walreplay" in cfg["only"] else None
        peer = PgBackRestBench(lab, host, Playbooks(lab, work_dir), log, bench.samples) if "pgbackrest" in cfg["only"] else None
        try:
            for round_no in range(1, cfg["repeat"] + 1):
                bench.run_round(round_no, cfg["only"])
                for part in (physical, restores, replays, peer):
                    if part:
                        part.run_round(round_no)
        finally:
            problems = bench.cleanup() + sum((part.cleanup() for part in (physical, restores, replays, peer) if part), [])
        if peer:
            bench.info.update(peer.info)
    finally:
        dataset.park(host)
    return bench, dict(database=dataset.DATABASE, size=size_pretty, bytes=size_bytes, created_s=created_s), problems


def run_fleet(cfg, lab, work_dir):
    """The fleet drill on 1, 2, 4, 8 pairs (bench/fleet.py); returns (its results, problems)."""
    part = fleet.FleetBench(lab, log, work_dir, cfg["fleet_pairs"], cfg["fleet_drills"], cfg["fleet_levers"])
    log("fleet: fleet_drill.yml on %s pair(s), drills %s, levers %s"
        % (",".join(map(str, cfg["fleet_pairs"])), ",".join(cfg["fleet_drills"]), ",".join(cfg["fleet_levers"]) or "none"))
    try:
        part.grow()
        for round_no in range(1, cfg["repeat"] + 1):
            part.run_round(round_no)
    finally:
        problems = part.cleanup()
    medians = part.medians()
    return dict(summary=part.summary(medians), medians=medians, samples=part.samples), problems


def main():
    cfg = settings()
    lab = Lab.load(PROJECT_DIR)
    host = lab.host(cfg["host"])
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    modules = [part for part in cfg["only"] if part != "fleet"]
    log("scale %d, %d round(s), comparisons %s, on %s" % (cfg["scale"], cfg["repeat"], ",".join(cfg["only"]), host.name))
    work_dir = os.path.join(os.path.dirname(cfg["output"]), "work")
    bench, source, problems, fleet_results = None, None, [], None
    if modules:
        bench, source, problems = run_modules(cfg, lab, host, work_dir)
    if "fleet" in cfg["only"]:
        fleet_results, fleet_problems = run_fleet(cfg, lab, work_dir)
        problems += fleet_problems
    samples = bench.samples if bench else {}
    medians = {name: median(values) for name, values in samples.items()}
    # on a shared machine the fastest of several rounds is the best estimate of the intrinsic cost
    minimums = {name: min(values) for name, values in samples.items() if values and not isinstance(values[0], dict)}
    rows = comparisons(medians, cfg["only"]) if modules else []
    notes = findings(medians, cfg["only"], bench.info) if modules else []

    result = dict(
        started_at=started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        finished_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=" ".join(["%s=%s" % (k, v) for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")]
                         + ["make bench" if os.environ.get("MAKELEVEL") else "python -m bench"]),
        settings=dict(scale=cfg["scale"], repeat=cfg["repeat"], only=cfg["only"], host=host.name, fleet_pairs=cfg["fleet_pairs"],
                      fleet_drills=cfg["fleet_drills"], fleet_levers=cfg["fleet_levers"]),
        environment=dict(describe(host), load_average_before=load_before, load_average_after=os.getloadavg()),
        source=source,
        info=bench.info if bench else {},
        comparisons=rows,
        medians=medians,
        minimums=minimums,
        samples=dict(samples),
        notes=notes,
        fleet=fleet_results,
        cleanup_problems=problems,
    )
    os.makedirs(os.path.dirname(cfg["output"]), exist_ok=True)
    with open(cfg["output"], "w") as handle:
        json.dump(result, handle, indent=2)

    if modules:
        print()
        print("pgdr.backup bench: pgbench scale %d (%s) on %s, %s, %d core(s), median of %d round(s)"
              % (cfg["scale"], source["size"], host.name, result["environment"]["server_version"].split(" on ")[0], os.cpu_count() or 0,
                 cfg["repeat"]))
        print("module s = whole ansible-playbook run; own s = the module's own duration; wall/net/own = ratios with the playbook,")
        print("with the playbook minus its fixed cost (ping playbook %.2f s), and with the module's own duration\n" % medians["playbook_ping"])
        print(table(rows))
        sizes = [(key, label) for key, label in (("raw_pg_dump_bytes", "raw pg_dump"), ("module_dump_local_bytes", "module, fingerprint off"),
                                                 ("module_dump_local_fp_bytes", "module, fingerprint on"), ("module_dump_s3_bytes", "module to S3"))
                 if key in medians]
        print("\nsizes: " + ", ".join("%s %d B" % (label, medians[key]) for key, label in sizes))
        for note in notes:
            print("- " + note)
    if fleet_results:
        print()
        print("fleet drill: playbooks/fleet_drill.yml, drills %s per pair, %d core(s), median of %d round(s); load average %.2f -> %.2f"
              % (",".join(cfg["fleet_drills"]), os.cpu_count() or 0, cfg["repeat"], load_before[0], result["environment"]["load_average_after"][0]))
        print("T(N) = whole ansible-playbook run; raw = the same drills through the module's engine on the same hosts at once, no Ansible\n")
        print(fleet.table(fleet_results["summary"]))
    print("\nresults: %s" % os.path.relpath(cfg["output"], PROJECT_DIR))
    return 1 if problems else 0
