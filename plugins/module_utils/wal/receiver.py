# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A streaming WAL archive: pg_receivewal with a physical replication slot, kept running on this (backup) host.

Where systemd runs (and the module runs as root) it is a unit ``pgdr-receivewal-<slot>.service``
(Restart=always). Elsewhere (containers, the lab) a small supervisor does the same job: it detaches
(double fork, setsid), holds an exclusive lock on its pidfile for its whole life, restarts pg_receivewal
with a growing delay when it exits, and logs to a file. It is found and stopped by its pidfile only
(the lock proves the pid is still ours), never by process name.

State of one receiver lives in its state folder: ``config.json`` (argv and environment, no password),
``pgpass`` (0600), ``supervisor.py``, ``supervisor.pid``, ``receivewal.pid`` and ``receiver.log``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run, telling_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import passfile_escape
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
MANAGERS = ("auto", "systemd", "supervisor")
UNIT_DIR = "/etc/systemd/system"
START_TIMEOUT = 20
STOP_TIMEOUT = 30

SUPERVISOR_SOURCE = r"""# pgdr.backup pg_receivewal supervisor (generated; do not edit)
import fcntl, json, os, signal, subprocess, sys, time

STATE = sys.argv[1]
LOG = os.path.join(STATE, "receiver.log")
MAX_LOG = 20 * 1024 * 1024


def log(msg):
    os.write(2, ("%s supervisor[%d]: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), msg)).encode())


def main():
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:  # the first process: wait for the daemon to say it runs, then leave
        os.close(ready_w)
        answer = os.read(ready_r, 4096).decode() or "the supervisor died while starting"
        if answer != "ok":
            sys.stderr.write(answer + "\n")
            sys.exit(1)
        sys.exit(0)
    os.close(ready_r)
    os.setsid()  # no controlling terminal, and out of the session of whoever started us
    if os.fork() > 0:
        os._exit(0)
    os.chdir(STATE)
    os.umask(0o077)
    if os.path.exists(LOG) and os.path.getsize(LOG) > MAX_LOG:
        os.replace(LOG, LOG + ".1")
    logfd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    nullfd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nullfd, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)  # from here on the caller's pipes are closed in this process
    pidfd = os.open(os.path.join(STATE, "supervisor.pid"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(pidfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.write(ready_w, b"another supervisor holds " + os.path.join(STATE, "supervisor.pid").encode())
        os._exit(1)
    os.ftruncate(pidfd, 0)
    os.write(pidfd, b"%d\n" % os.getpid())
    with open(os.path.join(STATE, "config.json")) as handle:
        config = json.load(handle)
    state = {"stop": False, "child": None}

    def on_term(signum, frame):
        state["stop"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.write(ready_w, b"ok")
    os.close(ready_w)
    log("started for %s" % " ".join(config["argv"]))
    delay = 1
    child_pidfile = os.path.join(STATE, "receivewal.pid")
    while not state["stop"]:
        started = time.monotonic()
        try:
            child = subprocess.Popen(config["argv"], env=config["env"], stdin=0, stdout=2, stderr=2, cwd=STATE)
        except OSError as exc:
            log("cannot start %s: %s" % (config["argv"][0], exc))
            child = None
        state["child"] = child
        if child is not None:
            with open(child_pidfile, "w") as handle:
                handle.write("%d\n" % child.pid)
            if state["stop"]:
                child.terminate()
            code = child.wait()
            if state["stop"]:
                break
            log("pg_receivewal exited with code %s after %.0f s" % (code, time.monotonic() - started))
        delay = 1 if time.monotonic() - started > 60 else min(delay * 2, 60)
        log("restarting in %d s" % delay)
        until = time.monotonic() + delay
        while not state["stop"] and time.monotonic() < until:
            time.sleep(0.2)
    child = state["child"]
    if child is not None and child.poll() is None:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    for name in ("receivewal.pid", "supervisor.pid"):
        try:
            os.unlink(os.path.join(STATE, name))
        except OSError:
            pass
    log("stopped")


main()
"""


def _alive(pid):
    """Whether ``pid`` is a process that has not exited (a zombie waiting for its reaper has)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def receiver_argument_spec():
    """The ``receiver`` option of wal_archive_config."""
    return dict(
        receiver=dict(
            type="dict",
            options=dict(
                state=dict(type="str", default="present", choices=["present", "absent"]),
                directory=dict(type="path"),
                slot=dict(type="str", required=True),
                synchronous=dict(type="bool", default=False),
                compress=dict(type="int", default=0),
                state_dir=dict(type="path"),
                service_manager=dict(type="str", default="auto", choices=list(MANAGERS)),
            ),
        )
    )


@dataclasses.dataclass(frozen=True)
class ReceiverOptions:
    """The ``receiver`` option of wal_archive_config, typed."""

    state: str
    directory: Optional[str]
    slot: str
    synchronous: bool
    compress: int
    state_dir: Optional[str]
    service_manager: str


def default_state_dir(slot):
    if os.geteuid() == 0:
        return "/var/lib/pgdr/receivewal/%s" % slot
    return os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".pgdr", "receivewal", slot)


def choose_manager(requested, systemd_running=None):
    if systemd_running is None:
        systemd_running = os.path.isdir("/run/systemd/system")
    if requested != "auto":
        return requested
    return "systemd" if systemd_running and os.geteuid() == 0 else "supervisor"


def receivewal_argv(binary, directory, slot, synchronous=False, compress=0):
    argv = [binary, "--directory", directory, "--slot", slot, "--no-password"]
    if synchronous:
        argv.append("--synchronous")
    if compress:
        argv.append("--compress=%d" % compress)  # a bare level means gzip, from 10 to 18
    return argv


def libpq_env(conn_params):
    """PG* variables (from the ConnectionParams) that point pg_receivewal at the server (the password goes into a passfile instead)."""
    with conn_params.child_env(base_env={}) as env:
        env = {key: value for key, value in env.items() if key.startswith("PG") and key != "PGPASSFILE"}
    return env


def systemd_quote(arg):
    """One ExecStart word: systemd's own quoting, with its % and $ expansions escaped."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return '"%s"' % escaped


def unit_text(slot, argv, env, user):
    lines = [
        "# generated by pgdr.backup wal_archive_config; changes are overwritten",
        "[Unit]",
        "Description=pgdr.backup pg_receivewal streaming WAL archive (slot %s)" % slot,
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "User=%s" % user,
        "UMask=0077",
    ]
    for key in sorted(env):
        lines.append("Environment=%s" % systemd_quote("%s=%s" % (key, env[key])))
    lines += [
        "ExecStart=%s" % " ".join(systemd_quote(arg) for arg in argv),
        "Restart=always",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


class Receiver:
    """The receiver of one slot on this host: ``options`` are the ReceiverOptions, ``conn_params`` the ConnectionParams
    pg_receivewal connects with, ``binary`` the pg_receivewal to run."""

    def __init__(self, options, conn_params, binary=None):
        self.options = options
        self.slot = options.slot
        if not SLOT_RE.match(self.slot or ""):
            raise PgdrError("receiver.slot %r is not a valid slot name: use lower-case letters, digits and '_' (at most 63)" % (self.slot,))
        self.conn_params = conn_params
        self.binary = binary
        self.manager = choose_manager(options.service_manager)
        self.state_dir = options.state_dir or default_state_dir(self.slot)  # the default depends on the user: not in the spec
        self.unit = "pgdr-receivewal-%s.service" % self.slot
        self.user = pwd.getpwuid(os.geteuid()).pw_name

    def _path(self, name):
        return os.path.join(self.state_dir, name)

    # --- the slot (SQL to look, the replication protocol to create and drop, as pg_receivewal does) ---

    def slot_info(self, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT slot_type, active, active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
            row = cur.fetchone()
        return None if row is None else dict(slot_type=row[0], active=row[1], active_pid=row[2])

    def _slot_command(self, action):
        argv = [self.binary, "--%s-slot" % action, "--slot", self.slot, "--no-password"]
        if action == "create":
            argv.append("--if-not-exists")
        with self.conn_params.child_env() as env:
            result = run(argv, env=env, check=False, timeout=60)
        if result.returncodes[0] != 0:
            raise PgdrError(
                "pg_receivewal --%s-slot %s failed: %s" % (action, self.slot, telling_line(result.stderr)),
                stderr=result.stderr[-2000:],
            )

    # --- wanted state --------------------------------------------------------------------------------

    def _desired(self):
        directory = self.options.directory
        if not directory or not os.path.isabs(directory):
            raise PgdrError("receiver.directory must be the absolute path of the folder pg_receivewal writes to")
        argv = receivewal_argv(self.binary, directory, self.slot, self.options.synchronous, self.options.compress)
        env = libpq_env(self.conn_params)
        env.update(LANG="C.UTF-8", PATH="/usr/sbin:/usr/bin:/sbin:/bin")
        passfile = None
        if self.conn_params.password:
            env["PGPASSFILE"] = self._path("pgpass")
            passfile = ("*:*:*:*:%s\n" % passfile_escape(self.conn_params.password)).encode()
        config = (json.dumps(dict(argv=argv, env=env, slot=self.slot), indent=2, sort_keys=True) + "\n").encode()
        return argv, env, config, passfile

    @staticmethod
    def _same_file(path, data):
        try:
            with open(path, "rb") as handle:
                return handle.read() == data
        except FileNotFoundError:
            return data is None

    @staticmethod
    def _write(path, data, mode=0o600):
        temp = "%s.tmp-%d" % (path, os.getpid())
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode)
        os.rename(temp, path)

    # --- supervisor ----------------------------------------------------------------------------------

    def supervisor_pid(self):
        """The supervisor's pid if it runs (it holds the lock on its pidfile), else None."""
        try:
            fd = os.open(self._path("supervisor.pid"), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode().strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def receivewal_pid(self):
        if self.manager == "systemd":
            result = run(["systemctl", "show", "--property", "MainPID", "--value", self.unit], check=False)
            pid = result.stdout.strip()
            return int(pid) if pid.isdigit() and pid != "0" else None
        if self.supervisor_pid() is None:
            return None
        try:
            with open(self._path("receivewal.pid")) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def running(self):
        if self.manager == "systemd":
            return run(["systemctl", "is-active", "--quiet", self.unit], check=False).returncodes[0] == 0
        return self.supervisor_pid() is not None

    def _start_supervisor(self):
        script = self._path("supervisor.py")
        self._write(script, SUPERVISOR_SOURCE.encode(), 0o700)
        python = sys.executable or "/usr/bin/python3"
        proc = subprocess.Popen(
            [python, "-I", script, self.state_dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
            cwd=self.state_dir,
        )
        try:
            _out, err = proc.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise PgdrError("the pg_receivewal supervisor did not start within %d s; see %s" % (START_TIMEOUT, self._path("receiver.log"))) from None
        if proc.returncode != 0:
            raise PgdrError("the pg_receivewal supervisor did not start: %s" % (err.decode(errors="replace").strip() or "exit code %d" % proc.returncode))

    def _stop_supervisor(self):
        pid = self.supervisor_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.supervisor_pid() is not None or _alive(pid):
            if time.monotonic() > deadline:
                raise PgdrError("the pg_receivewal supervisor (pid %d) did not stop within %d s; see %s" % (pid, STOP_TIMEOUT, self._path("receiver.log")))
            time.sleep(0.2)
        return True

    # --- systemd -------------------------------------------------------------------------------------

    def _systemctl(self, *args):
        result = run(["systemctl"] + list(args), check=False, timeout=90)
        if result.returncodes[0] != 0:
            raise PgdrError("systemctl %s failed: %s" % (" ".join(args), telling_line(result.stderr)), stderr=result.stderr[-2000:])

    # --- what the module calls -----------------------------------------------------------------------

    def status(self, conn):
        info = dict(
            slot=self.slot,
            manager=self.manager,
            state_dir=self.state_dir,
            running=self.running(),
            pid=self.receivewal_pid(),
            log=self._path("receiver.log") if self.manager == "supervisor" else "journalctl -u %s" % self.unit,
            directory=self.options.directory,
        )
        if self.manager == "supervisor":
            info["supervisor_pid"] = self.supervisor_pid()
        info["slot_info"] = self.slot_info(conn)
        return info

    def present(self, conn, check_mode=False):
        """Slot, folder, and a running pg_receivewal with these settings; returns (changed, what was done)."""
        done = []
        argv, env, config, passfile = self._desired()
        slot = self.slot_info(conn)
        if slot is not None and slot["slot_type"] != "physical":
            raise PgdrError(
                "replication slot %s exists but is %s; pg_receivewal needs a physical slot: choose another receiver.slot" % (self.slot, slot["slot_type"])
            )
        if slot is None:
            done.append("create slot %s" % self.slot)
            if not check_mode:
                self._slot_command("create")
        directory = self.options.directory
        for folder, mode in ((self.state_dir, 0o700), (directory, 0o700)):
            if not os.path.isdir(folder):
                done.append("create folder %s" % folder)
                if not check_mode:
                    os.makedirs(folder, mode=mode, exist_ok=True)
        if self.manager == "systemd":
            changed = self._present_systemd(argv, env, passfile, check_mode)
        else:
            changed = self._present_supervisor(config, passfile, check_mode)
        done += changed
        if done and not check_mode:
            self._wait_streaming(conn)
        return bool(done), done

    def _present_supervisor(self, config, passfile, check_mode):
        same = self._same_file(self._path("config.json"), config) and self._same_file(self._path("pgpass"), passfile)
        running = self.running()
        if same and running:
            return []
        action = "restart pg_receivewal (settings changed)" if running else "start pg_receivewal"
        if check_mode:
            return [action]
        if running:
            self._stop_supervisor()
        self._write(self._path("config.json"), config)
        if passfile is not None:
            self._write(self._path("pgpass"), passfile)
        self._start_supervisor()
        return [action]

    def _present_systemd(self, argv, env, passfile, check_mode):
        unit_path = os.path.join(UNIT_DIR, self.unit)
        text = unit_text(self.slot, argv, env, self.user).encode()
        same = self._same_file(unit_path, text) and self._same_file(self._path("pgpass"), passfile)
        running = self.running()
        if same and running:
            return []
        action = "restart %s" % self.unit if running else "start %s" % self.unit
        if check_mode:
            return [action]
        if passfile is not None:
            self._write(self._path("pgpass"), passfile)
        self._write(unit_path, text, 0o644)
        self._systemctl("daemon-reload")
        self._systemctl("enable", self.unit)
        self._systemctl("restart", self.unit)
        return [action]

    def _wait_streaming(self, conn, timeout=START_TIMEOUT):
        """Until the slot is in use: proof that pg_receivewal connected, or its complaint in the failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            slot = self.slot_info(conn)
            if slot and slot["active"]:
                return
            time.sleep(0.3)
        raise PgdrError(
            "pg_receivewal did not start streaming from slot %s within %d s: %s" % (self.slot, timeout, self._log_tail() or "see its log"),
            log=self._path("receiver.log"),
        )

    def _log_tail(self):
        try:
            with open(self._path("receiver.log"), "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 8192))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return None
        lines = [line for line in text.splitlines() if "pg_receivewal" in line and ("error" in line or "FATAL" in line)]
        return lines[-1].strip() if lines else None

    def absent(self, conn, check_mode=False):
        """No receiver and no slot (the archive folder itself is kept); returns (changed, what was done)."""
        done = []
        if self.manager == "systemd":
            unit_path = os.path.join(UNIT_DIR, self.unit)
            if os.path.exists(unit_path) or self.running():
                done.append("stop and remove %s" % self.unit)
                if not check_mode:
                    run(["systemctl", "disable", "--now", self.unit], check=False, timeout=90)
                    if os.path.exists(unit_path):
                        os.unlink(unit_path)
                    self._systemctl("daemon-reload")
        elif self.running():
            done.append("stop pg_receivewal")
            if not check_mode:
                self._stop_supervisor()
        if not check_mode:
            for name in ("pgpass", "config.json", "supervisor.py"):
                try:
                    os.unlink(self._path(name))
                except FileNotFoundError:
                    pass
        slot = self.slot_info(conn)
        if slot is not None:
            done.append("drop slot %s" % self.slot)
            if not check_mode:
                deadline = time.monotonic() + STOP_TIMEOUT
                while slot and slot["active"]:
                    if time.monotonic() > deadline:
                        raise PgdrError("replication slot %s is still in use by pid %s; stop that client first" % (self.slot, slot["active_pid"]))
                    time.sleep(0.3)
                    slot = self.slot_info(conn)
                if slot is not None:
                    self._slot_command("drop")
        return bool(done), done
