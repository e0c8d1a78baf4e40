# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run external programs: argv lists only, never a shell.

A pipeline checks the exit code of every process in it (a compressor that
dies must fail the backup, not produce a short file), keeps the environment
it is given, and captures each process's stderr for the failure message.

Every process runs in a process group of its own, killed with all it started
when it fails, times out, or the run fails, and shortly after it exits; the
run waits for its processes, never for the end of a pipe that something they
left behind could hold open (a killed pg_basebackup's WAL streamer did).
"""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

STDERR_TAIL = 4000  # characters of a tool's stderr kept in a result
CHUNK = 1024 * 1024
DRAIN_SECONDS = 2.0  # how long output is still read, after a process exited, from what it left behind
CANCEL_POLL = 0.2  # seconds between two questions to run_pipeline's cancel


class Result:
    """What a finished command or pipeline did."""

    def __init__(self, argvs, returncodes, stdout, stderrs, duration):
        self.argvs = argvs
        self.returncodes = returncodes
        self.stdout = stdout
        self.stderrs = stderrs
        self.duration = duration

    @property
    def stderr(self):
        return "".join(self.stderrs)


def run(argv, env=None, cwd=None, input_text=None, check=True, timeout=None):
    """Run one program and capture its output as text."""
    return run_pipeline([argv], env=env, cwd=cwd, input_text=input_text, check=check, timeout=timeout)


def run_pipeline(argvs, env=None, cwd=None, input_text=None, stdin_reader=None, stdout_path=None, sink=None, check=True,
                 timeout=None, cancel=None):
    """Run ``argv1 | argv2 | ...`` and check every exit code.

    ``stdin_reader`` (a binary file-like object, such as a repository
    reader) is streamed into the first process by a thread.
    stdout of the last process goes to ``stdout_path`` (created 0600), or is
    handed to ``sink(chunk)`` as it arrives (streaming to a repository), or
    else is captured. If ``sink`` raises, every process is killed and the
    exception propagates. ``cancel``, a callable asked every CANCEL_POLL seconds, ends the run the same way
    when it returns an exception (which is raised): a consumer of the processes' files that failed.
    Raises PgdrError naming the process that failed for
    a reason of its own (one killed by SIGPIPE only because a later one died
    is not the cause).

    Each process runs in its own process group, which is killed once the
    process has exited (at once if it failed, else after DRAIN_SECONDS), on a
    timeout, or when anything here fails: nothing a tool leaves behind (such
    as pg_basebackup's WAL streamer) outlives the run, and the run waits for
    the processes it started, never for the end of a pipe another one holds.
    """
    for argv in argvs:
        _check_argv(argv)
    started = time.monotonic()
    processes, stderr_files = [], []
    out_handle = None
    feeder = None
    collected = []
    try:
        if stdout_path:
            fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out_handle = os.fdopen(fd, "wb")
        if input_text is not None:
            stdin_reader = io.BytesIO(input_text.encode())
        previous_stdout = subprocess.PIPE if stdin_reader is not None else subprocess.DEVNULL
        for index, argv in enumerate(argvs):
            last = index == len(argvs) - 1
            err = tempfile.TemporaryFile()
            stderr_files.append(err)
            stdin = previous_stdout if index == 0 else processes[-1].stdout
            if last:
                stdout = out_handle if out_handle else subprocess.PIPE
            else:
                stdout = subprocess.PIPE
            proc = start(argv, stdin=stdin, stdout=stdout, stderr=err, env=env, cwd=cwd)
            if index > 0:
                processes[-1].stdout.close()  # the next process owns the pipe now
            processes.append(proc)
        if stdin_reader is not None:
            feeder = _Feeder(stdin_reader, processes[0].stdin)
        _supervise(processes, processes[-1].stdout, sink if sink is not None else collected.append, timeout, cancel)
        returncodes = [proc.returncode for proc in processes]
        if feeder:
            feeder.join(DRAIN_SECONDS)
    finally:
        if out_handle:
            out_handle.close()
        for proc in processes:
            stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()
    stderrs = []
    for err in stderr_files:
        err.seek(0)
        stderrs.append(err.read().decode("utf-8", "replace"))
        err.close()
    stdout_bytes = b"".join(collected)
    result = Result(argvs, returncodes, stdout_bytes.decode("utf-8", "replace"), stderrs, time.monotonic() - started)
    if check:
        check_result(result)
    return result


def start(argv, **popen_args):
    """Start one program in a session (and process group) of its own, so that it and all it starts can be killed together by stop()."""
    _check_argv(argv)
    _GUARD.ensure()
    try:
        proc = subprocess.Popen(argv, start_new_session=True, **popen_args)
    except OSError as exc:
        raise PgdrError("cannot run %s: %s; install it or set pg_bin_dir" % (argv[0], exc.strerror)) from None
    _GUARD.watch(proc.pid)
    return proc


def stop(proc):
    """Kill the process group of a process start() made (whatever is left of it) and reap the process.

    The group is killed before the process is reaped: until then its pid, which is the group's id, cannot be reused.
    """
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty already, or holds only processes that are no longer ours to signal
        _GUARD.forget(proc.pid)  # before the id can be reused
        proc.wait()
    _GUARD.forget(proc.pid)  # reaped elsewhere (no waitid): the guard must not kill the id once reused


def check_result(result):
    """Raise PgdrError for the process whose failure caused the pipeline's.

    When a later process dies, the earlier ones fail only because their pipe
    closed (SIGPIPE, or a "Broken pipe" write error): those are not the cause.
    When an earlier process dies, the later ones fail only because their input
    ended early (gpg refusing a wrong passphrase makes pg_restore report a
    short input file): so of the remaining failures, the first is the cause.
    """
    failed = [i for i, code in enumerate(result.returncodes) if code != 0]
    if not failed:
        return
    own = [i for i in failed if result.returncodes[i] != -signal.SIGPIPE] or failed
    own = [i for i in own if "broken pipe" not in result.stderrs[i].lower()] or own
    index = own[0]
    argv = result.argvs[index]
    code = result.returncodes[index]
    stderr = result.stderrs[index].strip()
    reason = ("killed by signal %d" % -code) if code < 0 else ("exit code %d" % code)
    raise PgdrError(
        "%s failed (%s): %s" % (os.path.basename(argv[0]), reason, telling_line(stderr)),
        cmd=[os.path.basename(a) if i == 0 else a for i, a in enumerate(argv)],
        rc=code,
        stderr=stderr[-STDERR_TAIL:],
    )


def telling_line(stderr):
    """The line of a tool's stderr that says what went wrong: its first error, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if any(mark in line for mark in ("error:", "ERROR:", "FATAL:", "fatal:")):
            return line
    return lines[-1] if lines else "no error output"


class _Feeder:
    """Copies a reader into a process's stdin; a process that stops reading just ends the copy."""

    def __init__(self, reader, stdin):
        self.error = None
        self.thread = threading.Thread(target=self._copy, args=(reader, stdin), daemon=True)
        self.thread.start()

    def _copy(self, reader, stdin):
        try:
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # the process exited; its exit code tells why
        except Exception as exc:  # a repository read failed: the restore must fail too
            self.error = exc
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    def join(self, timeout):
        # bounded: once the processes have exited, a write can block only on a pipe some escaped process holds
        self.thread.join(timeout)
        if self.error:
            raise PgdrError("reading the backup failed: %s" % self.error)


def _supervise(processes, out, deliver, timeout, cancel=None):
    """Wait for every process to exit, handing the last one's output (``out``, if a pipe) to ``deliver`` in CHUNK pieces.

    An exit is seen without reaping the process (waitid with WNOWAIT), so that its group can still be killed
    safely. A group is killed when its process failed, DRAIN_SECONDS after it exited, or once every process
    has exited and the output has ended. After the last group is killed, ``out`` is read until its end but
    for DRAIN_SECONDS at most: a process that left its group (a daemon) may hold it open for ever.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()  # not select(): a module may hold more than FD_SETSIZE descriptors
    pidfds = [_pidfd(proc) for proc in processes]
    for pidfd in pidfds:
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)  # readable once the process has exited
    every = None if all(pidfd is not None for pidfd in pidfds) else 0.05  # without pidfds, exits are polled for
    if cancel is not None:
        every = min(every or CANCEL_POLL, CANCEL_POLL)
    fd = out.fileno() if out is not None else None
    chunks = _Chunks(deliver)
    if fd is not None:
        os.set_blocking(fd, False)
        _widen(fd)
        poller.register(fd, select.POLLIN)
    exited = {}  # index: (monotonic time of the exit, whether it failed)
    abandon_at = None
    try:
        while True:
            now = time.monotonic()
            for index, proc in enumerate(processes):
                if index not in exited:
                    failed = _exited(proc)
                    if failed is not None:
                        exited[index] = (now, failed)
                        if pidfds[index] is not None:
                            poller.unregister(pidfds[index])
            all_exited = len(exited) == len(processes)
            for index, (at, failed) in exited.items():
                if processes[index].returncode is None and (failed or now >= at + DRAIN_SECONDS or (all_exited and fd is None)):
                    stop(processes[index])
            if all(proc.returncode is not None for proc in processes):
                if fd is None:
                    break
                abandon_at = abandon_at or now + DRAIN_SECONDS
                if now >= abandon_at:
                    break
            if deadline is not None and now >= deadline:
                raise PgdrError("%s did not finish within %s seconds" % (os.path.basename(processes[-1].args[0]), timeout))
            cancelled = cancel() if cancel is not None else None
            if cancelled is not None:
                raise cancelled
            # sleep until output, an exit, or the next moment something is due
            due = [at + DRAIN_SECONDS for index, (at, failed) in exited.items() if processes[index].returncode is None]
            due += [moment for moment in (abandon_at, deadline) if moment is not None]
            if every is not None:
                due.append(now + every)
            wait = max(min(due) - now, 0) * 1000 if due else None
            for ready, _event in poller.poll(wait):
                if ready == fd and not chunks.read(fd):
                    poller.unregister(fd)
                    fd = None  # end of output
        chunks.flush()
    finally:
        for pidfd in pidfds:
            if pidfd is not None:
                os.close(pidfd)


class _Chunks:
    """Output read into CHUNK-sized pieces, each handed over once full (and the rest at the end)."""

    def __init__(self, deliver):
        self.deliver = deliver
        self.buffer = bytearray(CHUNK)
        self.view = memoryview(self.buffer)
        self.filled = 0

    def read(self, fd):
        """Read what ``fd`` holds now; False at its end."""
        while True:
            try:
                count = os.readv(fd, [self.view[self.filled:]])
            except BlockingIOError:
                return True
            if not count:
                return False
            self.filled += count
            if self.filled == CHUNK:
                self.flush()

    def flush(self):
        if self.filled:
            self.deliver(bytes(self.view[: self.filled]))
            self.filled = 0


def _pidfd(proc):
    """A descriptor that becomes readable when ``proc`` exits (Linux 5.3+, Python 3.9+), else None."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


def _widen(fd):
    """A pipe of CHUNK bytes rather than 64 KiB: fewer, larger reads of a fast producer (Linux; best effort)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except (ImportError, OSError):
        pass


def _exited(proc):
    """None while ``proc`` runs; once it has exited, whether it failed. The process is not reaped."""
    if proc.returncode is not None:
        return proc.returncode != 0
    if not hasattr(os, "waitid"):  # not Linux: reaping is the only way to see the exit
        return None if proc.poll() is None else proc.returncode != 0
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped behind our back: let Popen find out what it can
        return None if proc.poll() is None else proc.returncode != 0
    if info is None or info.si_pid == 0:
        return None
    return info.si_code != os.CLD_EXITED or info.si_status != 0


class _Guard:
    """A small process, in a session of its own, that kills the process groups start() made if this process dies first.

    When a task is killed outright (SIGKILL of the module's process group, as an async job's timeout does),
    nothing here runs; the groups of its children are not in that process group either. The guard learns
    each group's id through a pipe whose writing end only this process holds: when it reads the end of
    that pipe, this process is gone, and it kills every group not yet stopped.
    """

    SOURCE = (
        "# pgdr.backup: kills what a task started if the task dies first\n"
        "import os, signal\n"
        "for name in os.listdir('/proc/self/fd'):\n"  # hold nothing of the module's but the pipe
        "    if int(name) > 2:\n"
        "        try:\n"
        "            os.close(int(name))\n"
        "        except OSError:\n"
        "            pass\n"
        "groups, pending = set(), b''\n"
        "while True:\n"
        "    data = os.read(0, 65536)\n"
        "    if not data:\n"
        "        break\n"
        "    pending += data\n"
        "    *lines, pending = pending.split(b'\\n')\n"
        "    for line in lines:\n"
        "        (groups.add if line[:1] == b'+' else groups.discard)(int(line[1:]))\n"
        "for pgid in groups:\n"
        "    try:\n"
        "        os.killpg(pgid, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
    )

    def __init__(self):
        self.lock = threading.Lock()
        self.fd = None
        self.owner = None
        self.watched = set()

    def ensure(self):
        with self.lock:
            if self.fd is not None and self.owner == os.getpid():
                return
            if self.fd is not None:  # a forked copy of the task: the guard is its parent's
                os.close(self.fd)
                self.fd, self.watched = None, set()
            python = sys.executable
            if not python or not hasattr(os, "posix_spawn"):
                return  # no guard: children still die with every failure and timeout seen here
            read_end, write_end = os.pipe()
            try:
                # posix_spawn, not Popen: the guard is never waited for (it outlives this process on purpose)
                os.posix_spawn(
                    python,
                    [python, "-I", "-S", "-c", self.SOURCE],
                    dict(os.environ),
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, read_end, 0),
                        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                    ],
                    setsid=True,
                )
            except OSError:
                os.close(write_end)
                return
            finally:
                os.close(read_end)
            self.fd, self.owner = write_end, os.getpid()

    def _say(self, line):
        fd = self.fd
        if fd is None or self.owner != os.getpid():
            return
        try:
            os.write(fd, line.encode())  # shorter than PIPE_BUF: atomic, whichever thread writes
        except OSError:  # the guard is gone; failures and timeouts seen here still kill the groups
            with self.lock:
                if self.fd == fd:
                    self.fd = None
                    os.close(fd)

    def watch(self, pgid):
        with self.lock:
            self.watched.add(pgid)
        self._say("+%d\n" % pgid)

    def forget(self, pgid):
        with self.lock:
            if pgid not in self.watched:
                return
            self.watched.discard(pgid)
        self._say("-%d\n" % pgid)


_GUARD = _Guard()


def _check_argv(argv):
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("commands take a non-empty argv list, never a shell string")
    for part in argv:
        if not isinstance(part, str):
            raise TypeError("argv items must be str, got %r" % type(part).__name__)
