"""A real PostgreSQL cluster inside a lab host, run as the postgres OS user with pg_ctl."""

import os
import pwd

from .hosts import nsenter
from .system import LabError, proc_ident, run
from .topology import FLEET_SETTINGS, PG_PORT, PG_SOCKET_DIR

CONF_MARK = "# --- pgdr lab ---"


def settings(small=False):
    conf = {
        "listen_addresses": "'*'",
        "port": str(PG_PORT),
        "unix_socket_directories": "'%s'" % PG_SOCKET_DIR,
        "wal_level": "replica",
        "max_wal_senders": "10",
    }
    if small:
        conf.update(FLEET_SETTINGS)
    return conf


def hba(subnet):
    rows = [
        ("local", "all", "postgres", "", "peer"),
        ("local", "all", "all", "", "scram-sha-256"),
        ("local", "replication", "all", "", "peer"),
    ]
    for source in ("127.0.0.1/32", "::1/128", str(subnet)):
        rows.append(("host", "all", "all", source, "scram-sha-256"))
        rows.append(("host", "replication", "all", source, "scram-sha-256"))
    lines = ["# pgdr lab: peer for the postgres OS user, passwords for everyone else"]
    lines += ["%-7s %-12s %-9s %-18s %s" % row for row in rows]
    return "\n".join(lines) + "\n"


def _as_postgres(holder_pid, argv, timeout=120):
    return run(nsenter(holder_pid, argv, user="postgres"), timeout=timeout)


def create_cluster(holder_pid, host_dir, plan, subnet, password):
    """initdb with checksums and a superuser password, then the lab's settings and pg_hba."""
    pg = pwd.getpwnam("postgres")
    major_dir = host_dir / "var-lib-postgresql" / str(plan.major)
    major_dir.mkdir(exist_ok=True)
    os.chown(major_dir, pg.pw_uid, pg.pw_gid)
    # The password goes in through a file only postgres can read, never on a command line.
    pwfile = major_dir / ".initdb-pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    try:
        _as_postgres(
            holder_pid,
            [
                plan.pg_bin_dir + "/initdb",
                "-D", plan.pg_data,
                "--data-checksums",
                "-U", "postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--pwfile=/var/lib/postgresql/%d/.initdb-pw" % plan.major,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",  # a throwaway lab cluster; saves seconds per host
            ],
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    data = major_dir / "main"
    with open(data / "postgresql.conf", "a") as f:
        f.write("\n%s\n" % CONF_MARK)
        for key, value in settings(small=plan.small).items():
            f.write("%s = %s\n" % (key, value))
    (data / "pg_hba.conf").write_text(hba(subnet))


def start(holder_pid, host_dir, plan):
    _as_postgres(holder_pid, [plan.pg_bin_dir + "/pg_ctl", "-D", plan.pg_data, "-l", plan.pg_log, "-w", "-t", "60", "start"], timeout=90)
    pid_file = host_dir / "var-lib-postgresql" / str(plan.major) / "main" / "postmaster.pid"
    return proc_ident(int(pid_file.read_text().split()[0]))


def stop(holder_pid, plan, timeout=20):
    """Best effort: whatever does not stop here is killed by the caller."""
    argv = [plan.pg_bin_dir + "/pg_ctl", "-D", plan.pg_data, "-m", "fast", "-w", "-t", str(timeout), "stop"]
    try:
        return run(nsenter(holder_pid, argv, user="postgres"), check=False, timeout=timeout + 10).returncode == 0
    except LabError:
        return False


def is_ready(holder_pid, plan):
    done = run(nsenter(holder_pid, [plan.pg_bin_dir + "/pg_isready", "-q", "-h", PG_SOCKET_DIR, "-p", str(PG_PORT), "-t", "3"]), check=False, timeout=15)
    return done.returncode == 0
