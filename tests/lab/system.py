"""Small helpers around subprocesses and /proc shared by the lab modules."""

import os
import signal
import subprocess
import sys
import time

# Daemons must never inherit our stdout: a caller capturing `python -m tests.lab up`
# would otherwise wait for them to exit.
DEVNULL = subprocess.DEVNULL
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}


class LabError(RuntimeError):
    pass


def log(message):
    print("lab: " + message, flush=True)


def warn(message):
    print("lab: warning: " + message, file=sys.stderr, flush=True)


def run(argv, check=True, input=None, env=None, timeout=120, cwd="/"):
    """Run a command quietly; on failure raise LabError carrying its output."""
    full_env = dict(BASE_ENV, **(env or {}))
    try:
        stdin = None if input is not None else DEVNULL
        done = subprocess.run(argv, input=input, stdin=stdin, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError("timed out after %ss: %s" % (timeout, " ".join(argv))) from exc
    if check and done.returncode != 0:
        raise LabError("failed (rc=%d): %s\n%s%s" % (done.returncode, " ".join(argv), done.stdout, done.stderr))
    return done


def spawn(argv, log_path, env=None, cwd="/"):
    """Start a long-lived process detached from our session, output to a log file."""
    full_env = dict(BASE_ENV, **(env or {}))
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, stdin=DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True)


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LabError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def start_time(pid):
    """Kernel start time of a pid (clock ticks since boot): with the pid it names one process for good."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 22, counted after the parenthesised command name which may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def boot_id():
    """Changes on every boot: pids, start times and namespace inodes from another boot mean nothing."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def proc_ident(pid):
    """pid, start time and boot for state.json, or None if the process is gone."""
    started = start_time(pid) if pid else None
    return None if started is None else {"pid": pid, "start": started, "boot": boot_id()}


def ident_alive(ident):
    """True only for the very process recorded (not a later one that reused the pid)."""
    return bool(ident) and ident.get("boot") == boot_id() and start_time(ident["pid"]) == ident["start"]


def netns_inode(pid_or_path):
    """The inode that names a network namespace, from /proc/<pid> or a /run/netns bind mount."""
    path = "/proc/%d/ns/net" % pid_or_path if isinstance(pid_or_path, int) else pid_or_path
    try:
        return os.stat(path).st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def pids_in_netns(inodes):
    """Every live process whose network namespace is one of `inodes` (works after `ip netns del` too)."""
    inodes = set(i for i in inodes if i)
    found = []
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            if netns_inode(int(entry)) in inodes:
                found.append(int(entry))
    return found


def kill_all(pids, grace=5.0):
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds."""
    pids = [p for p in pids if start_time(p) is not None]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [p for p in pids if start_time(p) is not None]
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    # Reap quickly so callers see them gone (they may be our children or init's).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(start_time(p) is not None for p in pids):
        time.sleep(0.05)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def mounts_under(path):
    """Mount points in our mount namespace at or below `path`, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def is_mountpoint(path):
    """From mountinfo: os.path.ismount misses a directory bind-mounted onto itself (as /run/netns is)."""
    return os.path.realpath(path) in mounts_under(path)
