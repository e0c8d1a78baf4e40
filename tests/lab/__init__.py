"""The pgdr lab: real hosts on one machine (network, mount and UTS namespaces, sshd, PostgreSQL, S3).

Build it with `python -m tests.lab up` (or `make lab-up`); tests use the API below:

    lab = Lab.load()
    host = lab.host("primary15")
    host.run(["hostname"]).stdout
    host.psql("SELECT 1")
    psycopg.connect(lab.pg_dsn("primary18"))
    for primary, replica in lab.fleet_pairs():  # fleet1/fleet1r, fleet2/fleet2r, ...
        ...
"""

import subprocess
from pathlib import Path

from . import state as _state
from .hosts import POSTGRES_KNOWN_HOSTS, POSTGRES_SSH_KEY
from .hosts import nsenter as _nsenter
from .system import BASE_ENV, ident_alive
from .topology import DEFAULT_FLEET_PAIRS, FLEET_PAIRS_ENV, FLEET_PRIMARY_GROUP, PG_PORT, PG_SOCKET_DIR, in_postgres_group

__all__ = ["Lab", "Host", "LabNotUp", "HostCommandError"]


class LabNotUp(RuntimeError):
    """The lab is not running (or is broken): run `make lab-up`."""


class HostCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message carries the output, so a failing test shows why."""

    def __init__(self, host, returncode, cmd, output, stderr):
        super().__init__(returncode, cmd, output, stderr)
        self.host = host

    def __str__(self):
        return "on %s: %s\nstdout:\n%s\nstderr:\n%s" % (self.host, super().__str__(), self.stdout, self.stderr)


class Host:
    """One lab host. Commands run inside its namespaces via nsenter, as if on that machine."""

    def __init__(self, lab, name, record):
        self.lab = lab
        self.name = name
        self.address = record["address"]
        self.major = record["major"]
        self.groups = tuple(record["groups"])
        self.upstream = record.get("upstream")
        self.drill_host = record.get("drill_host")  # fleet primaries: inventory restore_drill_host
        self.pg_data = record["pg_data"]
        self.pg_bin_dir = record["pg_bin_dir"]
        self.pg_port = PG_PORT if self.major is not None else None
        self.pg_socket_dir = PG_SOCKET_DIR if self.major is not None else None
        self.dir = Path(record["dir"])  # the host's folders as seen from the controller
        self.holder_pid = record["holder"]["pid"]

    def __repr__(self):
        return "<Host %s %s pg%s>" % (self.name, self.address, self.major)

    def run(self, argv, user=None, check=True, input=None, env=None, timeout=120):
        """Run argv inside the host (as `user` via runuser if given); returns a text CompletedProcess."""
        full_env = {**BASE_ENV, "HOME": "/root", **(env or {})}
        cmd = _nsenter(self.holder_pid, argv, user=user)
        done = subprocess.run(
            cmd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=full_env,
            cwd="/",
            timeout=timeout,
            check=False,  # checked below, with the output in the error
        )
        if check and done.returncode != 0:
            raise HostCommandError(self.name, done.returncode, list(argv), done.stdout, done.stderr)
        return done

    def psql(self, sql, db="postgres", user="postgres", password=None, timeout=120):
        """Run SQL with psql over the unix socket as the postgres OS user; returns stdout (-At format)."""
        if self.major is None:
            raise ValueError("%s has no PostgreSQL cluster" % self.name)
        argv = [self.pg_bin_dir + "/psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-w", "-h", PG_SOCKET_DIR, "-p", str(PG_PORT), "-U", user, "-d", db, "-f", "-"]
        env = {"PGPASSWORD": password} if password is not None else None
        return self.run(argv, user="postgres", input=sql, env=env, timeout=timeout).stdout


class Lab:
    """A running lab, read from .lab/state.json."""

    def __init__(self, paths, record):
        self.paths = paths
        self.state = record
        self.id = record["lab_id"]
        self.project_dir = paths.project
        self.subnet = record["subnet"]
        self.bridge = record["bridge"]
        self.bridge_address = record["bridge_address"]
        ordered = sorted(record["hosts"].items(), key=lambda item: item[1]["index"])  # topology order
        self.hosts = {name: Host(self, name, rec) for name, rec in ordered}
        self.s3 = dict(record["s3"])
        self.objstore_address = record["objstore"]["address"]
        self.pg_superuser = "postgres"
        self.pg_password = record["pg_password"]
        self.inventory_path = paths.inventory
        self.ssh_key = paths.ssh_key
        self.known_hosts = paths.known_hosts

    @classmethod
    def load(cls, project_dir=None):
        """The lab of this checkout; raises LabNotUp unless `up` completed and its hosts still exist."""
        paths = _state.Paths(project_dir)
        record = _state.load(paths)
        if not record:
            raise LabNotUp("the lab is not up (no %s): run `make lab-up`" % paths.state)
        if record.get("status") != "up":
            raise LabNotUp("the lab is not up (state %r): run `make lab-up`" % record.get("status"))
        gone = [name for name, host in record["hosts"].items() if not ident_alive(host.get("holder"))]
        if gone:
            raise LabNotUp("lab hosts are gone (%s): run `make lab-up`" % ", ".join(gone))
        return cls(paths, record)

    def host(self, name):
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError("no lab host %r (have: %s)" % (name, ", ".join(self.hosts))) from None

    def hosts_in(self, group):
        """Hosts of an inventory group, in topology order; `postgres` means every host with a cluster outside the fleet."""
        if group == "postgres":
            return [h for h in self.hosts.values() if in_postgres_group(h.groups, h.major)]
        return [h for h in self.hosts.values() if group in h.groups]

    def fleet_pairs(self, minimum=0):
        """(primary, replica) hosts of each fleet pair in pair order: fleet1 with fleet1r, fleet2 with fleet2r, ...

        The replica is the primary's drill host (inventory `restore_drill_host`); [] when the lab runs no fleet.
        Raises LabNotUp, saying how to grow the lab, when it runs fewer than `minimum` pairs.
        """
        pairs = [(primary, self.host(primary.drill_host)) for primary in self.hosts_in(FLEET_PRIMARY_GROUP)]
        if len(pairs) < minimum:
            raise LabNotUp("this needs at least %d fleet pairs and the lab runs %d: set %s=%d (or leave it unset: 3) and run `make lab-up`"
                           % (minimum, len(pairs), FLEET_PAIRS_ENV, max(minimum, DEFAULT_FLEET_PAIRS)))
        return pairs

    def pg_dsn(self, host, dbname="postgres", user=None, password=None):
        """libpq conninfo for a TCP connection from the controller; defaults to the superuser and its password."""
        host = host if isinstance(host, Host) else self.host(host)
        if user is None:
            user = self.pg_superuser
            password = self.pg_password if password is None else password
        parts = {"host": host.address, "port": str(PG_PORT), "dbname": dbname, "user": user, "connect_timeout": "10"}
        if password is not None:
            parts["password"] = password
        return " ".join("%s=%s" % (key, _conninfo_quote(value)) for key, value in parts.items())

    def ssh_argv(self, host, *command):
        """An ssh command line to a host exactly as Ansible connects (key, strict known_hosts)."""
        host = host if isinstance(host, Host) else self.host(host)
        opts = ["-o", "UserKnownHostsFile=%s" % self.known_hosts, "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        return ["ssh", "-i", str(self.ssh_key), *opts, "root@%s" % host.address, *command]

    def sftp_repository(self, host, path):
        """An SFTP location spec on a lab host, as postgres on any host reaches it (lab key, pinned host keys)."""
        host = host if isinstance(host, Host) else self.host(host)
        return {"type": "sftp", "host": host.address, "user": "root", "path": path,
                "key_file": POSTGRES_SSH_KEY, "known_hosts": POSTGRES_KNOWN_HOSTS}

    def objstore_outage(self):
        """Context manager: the object store is killed inside the block and always started again after it."""
        from .control import objstore_outage

        return objstore_outage(self.paths)

    def s3_client(self):
        """A boto3 S3 client for the lab's object store (path-style addressing)."""
        from .objstore import client

        return client(self.s3["endpoint"], self.s3["access_key"], self.s3["secret_key"])


def _conninfo_quote(value):
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")
