# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, stop and ask about the PostgreSQL server of the host the module runs on.

Three ways, chosen by ``service_manager`` (``auto`` picks the first that fits):
``systemd`` (``systemctl <action> <service_name>``) where systemd runs and a unit
is named; ``pg_ctlcluster`` for Debian's cluster layout (``/etc/postgresql/<major>/<name>``);
``pg_ctl`` for everything else (containers, hosts without systemd, the lab).
Whatever starts the server, readiness is judged the same way: ``pg_ctl status``
for running or not, and ``pg_isready`` on the server's socket for accepting connections.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import time
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run, telling_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

MANAGERS = ("auto", "systemd", "pg_ctlcluster", "pg_ctl")
_DEBIAN_DATA_RE = re.compile(r"^/var/lib/postgresql/(\d+)/([^/]+)/?$")
# pg_ctl's own closing words when the server did not come up: never the reason
_PG_CTL_GENERIC = ("pg_ctl: could not start server", "Examine the log output.", "waiting for server to start", "stopped waiting")


def service_argument_spec():
    """Options that say where the server's data is and how it is started (doc fragment pgdr.backup.service)."""
    return dict(
        pg_data=dict(type="path"),
        service_manager=dict(type="str", choices=list(MANAGERS), default="auto"),
        service_name=dict(type="str"),
        server_log=dict(type="path"),
        os_user=dict(type="str", default="postgres"),
    )


@dataclasses.dataclass(frozen=True)
class ServiceOptions:
    """The options of service_argument_spec, as the module received them."""

    pg_data: Optional[str]
    service_manager: str
    service_name: Optional[str]
    server_log: Optional[str]
    os_user: str


def debian_cluster(pg_data):
    """(major, name) when ``pg_data`` is a Debian cluster with its configuration in /etc/postgresql, else None."""
    match = _DEBIAN_DATA_RE.match(pg_data or "")
    if match and os.path.isdir("/etc/postgresql/%s/%s" % match.groups()):
        return match.group(1), match.group(2)
    return None


def choose_manager(requested, pg_data, service_name, systemd_running=None):
    """The manager to use for ``requested`` (pure apart from the two filesystem probes)."""
    if systemd_running is None:
        systemd_running = os.path.isdir("/run/systemd/system")
    if requested != "auto":
        return requested
    if service_name and systemd_running:
        return "systemd"
    if debian_cluster(pg_data):
        return "pg_ctlcluster"
    return "pg_ctl"


def telling_start_line(output):
    """The line of a start command's output that says why the server did not start.

    The server's own error first; else what stopped it before it could log anything (the shell pg_ctl runs it
    through cannot create the log file, a folder it cannot enter: "Permission denied", "No such file"); pg_ctl's
    closing "could not start server / Examine the log output." only when there is nothing else.
    """
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_PG_CTL_GENERIC)]
    for marks in (("FATAL:", "PANIC:", "ERROR:", "error:", "fatal:"), ("Permission denied", "No such file", "cannot ", "could not ", "failed")):
        for line in useful:
            if any(mark in line for mark in marks):
                return line
    return (useful or lines or ["no error output"])[-1]


class Cluster:
    """The server whose data directory is ``pg_data``, controlled as ``os_user``."""

    def __init__(self, pg_data, bin_dir, manager="auto", service_name=None, server_log=None, os_user="postgres", port=None, socket_dir=None):
        if not pg_data or not os.path.isabs(pg_data):
            raise PgdrError("pg_data must be the absolute path of the cluster's data directory, got %r" % (pg_data,))
        self.pg_data = os.path.normpath(pg_data)
        self.bin_dir = bin_dir
        self.manager = choose_manager(manager, self.pg_data, service_name)
        if self.manager == "systemd" and not service_name:
            raise PgdrError("service_manager systemd needs service_name, for example postgresql@16-main")
        if self.manager == "pg_ctlcluster" and not debian_cluster(self.pg_data):
            raise PgdrError("service_manager pg_ctlcluster needs pg_data of the form /var/lib/postgresql/<major>/<name> with /etc/postgresql/<major>/<name>")
        self.service_name = service_name
        # pg_ctl needs a log file: the server's startup messages have nowhere else to go.
        self.server_log = server_log or os.path.join(os.path.dirname(self.pg_data), "postgresql.log")
        self.os_user = os_user
        self.port = port
        self.socket_dir = socket_dir

    @classmethod
    def from_options(cls, service, bin_dir, port=None, socket_dir=None):
        """The cluster a module's ServiceOptions name."""
        return cls(service.pg_data, bin_dir, service.service_manager, service.service_name, service.server_log, service.os_user, port, socket_dir)

    # --- running commands as the cluster's owner -------------------------------------

    def as_owner(self, argv):
        """argv run as the cluster's owner (pg_ctl refuses root): through runuser when the module runs as root."""
        if os.geteuid() == 0 and self.os_user != "root":
            return ["runuser", "-u", self.os_user, "--"] + argv
        current = pwd.getpwuid(os.geteuid()).pw_name
        if current != self.os_user:
            raise PgdrError("controlling the server needs root or the %s user (running as %s); use become" % (self.os_user, current))
        return argv

    def owner_can_write(self, path):
        """Whether the cluster's OS user may write ``path`` (a file; a folder: create files in it), as the kernel decides for that user.

        ``test`` runs as that user, so every folder above, ACLs and group memberships count; root's own access says nothing.
        """
        argv = ["test", "-w", path] + (["-a", "-x", path] if os.path.isdir(path) else [])
        return run(self.as_owner(argv), check=False).returncodes[0] == 0

    def owner_can_reach(self, folder):
        """Whether the cluster's OS user may enter ``folder`` (search permission on it and on every folder above)."""
        return run(self.as_owner(["test", "-x", folder]), check=False).returncodes[0] == 0

    def _pg_ctl(self, *args, timeout=None):
        argv = self.as_owner([os.path.join(self.bin_dir, "pg_ctl"), "-D", self.pg_data] + list(args))
        return run(argv, check=False, timeout=None if timeout is None else timeout + 30)

    def _managed(self, action, timeout):
        if self.manager == "systemd":
            return run(["systemctl", action, self.service_name], check=False, timeout=timeout + 30)
        major, name = debian_cluster(self.pg_data)
        return run(["pg_ctlcluster", major, name, action], check=False, timeout=timeout + 30)

    @staticmethod
    def _fail(action, result, hint):
        why = telling_start_line(result.stderr + "\n" + result.stdout) if action in ("start", "restart") else telling_line(result.stderr + result.stdout)
        error = PgdrError("%s of the PostgreSQL server failed: %s; %s" % (action, why, hint), stderr=result.stderr[-4000:])
        error.reason = why  # for a caller that words its own message (a restore whose server wrote no log)
        raise error

    # --- what callers use -------------------------------------------------------------

    def status(self):
        """'running' or 'stopped' (pg_ctl status: 0 running, 3 not running, 4 no usable data directory)."""
        result = self._pg_ctl("status")
        return "running" if result.returncodes[0] == 0 else "stopped"

    def start(self, timeout=60):
        if self.manager == "pg_ctl":
            result = self._pg_ctl("-l", self.server_log, "-w", "-t", str(timeout), "start", timeout=timeout)
        else:
            result = self._managed("start", timeout)
        if result.returncodes[0] != 0:
            self._fail("start", result, "see the server log %s" % self.server_log)
        self.wait_ready(timeout)

    def stop(self, mode="fast", timeout=60):
        if self.status() == "stopped":
            return False
        if self.manager == "pg_ctl":
            result = self._pg_ctl("-m", mode, "-w", "-t", str(timeout), "stop", timeout=timeout)
        else:
            result = self._managed("stop", timeout)
        if result.returncodes[0] != 0:
            self._fail("stop", result, "stop it by hand and run again")
        return True

    def restart(self, timeout=60):
        if self.manager == "pg_ctl":
            result = self._pg_ctl("-l", self.server_log, "-m", "fast", "-w", "-t", str(timeout), "restart", timeout=timeout)
        else:
            result = self._managed("restart", timeout)
        if result.returncodes[0] != 0:
            self._fail("restart", result, "see the server log %s" % self.server_log)
        self.wait_ready(timeout)

    def reload(self):
        result = self._pg_ctl("reload") if self.manager == "pg_ctl" else self._managed("reload", 30)
        if result.returncodes[0] != 0:
            self._fail("reload", result, "check the configuration with pg_ctl or the server log")

    def wait_ready(self, timeout=60):
        """Wait until the server accepts connections (a server in recovery that allows hot standby counts)."""
        argv = [os.path.join(self.bin_dir, "pg_isready"), "-q", "-t", "2"]
        if self.socket_dir:
            argv += ["-h", self.socket_dir]
        if self.port:
            argv += ["-p", str(self.port)]
        deadline = time.monotonic() + timeout
        while True:
            if run(argv, check=False, timeout=30).returncodes[0] == 0:
                return
            if self.status() == "stopped":
                raise PgdrError("the PostgreSQL server in %s stopped while starting; see the server log %s" % (self.pg_data, self.server_log))
            if time.monotonic() > deadline:
                raise PgdrError("the PostgreSQL server in %s did not accept connections within %d seconds; see %s" % (self.pg_data, timeout, self.server_log))
            time.sleep(0.5)
