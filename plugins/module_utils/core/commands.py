# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run external programs: argv lists only, never a shell.

A pipeline checks the exit code of every process in it (a compressor that
dies must fail the backup, not produce a short file), keeps the environment
it is given, and captures each process's stderr for the failure message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

STDERR_TAIL = 4000  # characters of a tool's stderr kept in a result
CHUNK = 1024 * 1024


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
                 timeout=None):
    """Run ``argv1 | argv2 | ...`` and check every exit code.

    ``stdin_reader`` (a binary file-like object, such as a repository
    reader) is streamed into the first process by a thread.
    stdout of the last process goes to ``stdout_path`` (created 0600), or is
    handed to ``sink(chunk)`` as it arrives (streaming to a repository), or
    else is captured. If ``sink`` raises, every process is killed and the
    exception propagates. Raises PgdrError naming the process that failed for
    a reason of its own (one killed by SIGPIPE only because a later one died
    is not the cause).
    """
    for argv in argvs:
        _check_argv(argv)
    started = time.monotonic()
    processes, stderr_files = [], []
    out_handle = None
    try:
        if stdout_path:
            fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out_handle = os.fdopen(fd, "wb")
        previous_stdout = subprocess.PIPE if (input_text is not None or stdin_reader is not None) else subprocess.DEVNULL
        for index, argv in enumerate(argvs):
            last = index == len(argvs) - 1
            err = tempfile.TemporaryFile()
            stderr_files.append(err)
            stdin = previous_stdout if index == 0 else processes[-1].stdout
            if last:
                stdout = out_handle if out_handle else subprocess.PIPE
            else:
                stdout = subprocess.PIPE
            try:
                proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err, env=env, cwd=cwd)
            except OSError as exc:
                raise PgdrError("cannot run %s: %s; install it or set pg_bin_dir" % (argv[0], exc.strerror)) from None
            if index > 0:
                processes[-1].stdout.close()  # the next process owns the pipe now
            processes.append(proc)
        feeder = _Feeder(stdin_reader, processes[0].stdin) if stdin_reader is not None else None
        if sink is not None:
            stdout_bytes = _pump(processes[-1], sink)
        elif feeder is not None:  # communicate() would close the stdin the feeder writes to
            collected = []
            if processes[-1].stdout:
                _pump(processes[-1], collected.append)
            stdout_bytes = b"".join(collected)
        else:
            stdout_bytes = _communicate(processes, input_text, timeout)
        returncodes = [proc.wait() for proc in processes]
        if feeder:
            feeder.join()
    finally:
        if out_handle:
            out_handle.close()
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderrs = []
    for err in stderr_files:
        err.seek(0)
        stderrs.append(err.read().decode("utf-8", "replace"))
        err.close()
    result = Result(argvs, returncodes, stdout_bytes.decode("utf-8", "replace"), stderrs, time.monotonic() - started)
    if check:
        check_result(result)
    return result


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

    def join(self):
        self.thread.join()
        if self.error:
            raise PgdrError("reading the backup failed: %s" % self.error)


def _pump(last, sink):
    """Hand the last process's output to ``sink`` in 1 MiB chunks until EOF."""
    while True:
        chunk = last.stdout.read(CHUNK)
        if not chunk:
            break
        sink(chunk)
    last.stdout.close()
    return b""


def _communicate(processes, input_text, timeout):
    first, last = processes[0], processes[-1]
    if input_text is not None and len(processes) > 1:
        first.stdin.write(input_text.encode())
        first.stdin.close()
        input_text = None
    try:
        stdout, _stderr = last.communicate(input=input_text.encode() if input_text is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PgdrError("%s did not finish within %s seconds" % (os.path.basename(last.args[0]), timeout)) from None
    return stdout or b""


def _check_argv(argv):
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("commands take a non-empty argv list, never a shell string")
    for part in argv:
        if not isinstance(part, str):
            raise TypeError("argv items must be str, got %r" % type(part).__name__)
