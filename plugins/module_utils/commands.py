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
import time

from ansible_collections.pgdr.backup.plugins.module_utils.errors import PgdrError

STDERR_TAIL = 4000  # characters of a tool's stderr kept in a result


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


def run_pipeline(argvs, env=None, cwd=None, input_text=None, stdout_path=None, check=True, timeout=None):
    """Run ``argv1 | argv2 | ...`` and check every exit code.

    stdout of the last process goes to ``stdout_path`` (created 0600) when
    given, otherwise it is captured. Raises PgdrError naming the first process
    that failed for a reason of its own (one killed by SIGPIPE only because a
    later one died is not the cause).
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
        previous_stdout = subprocess.PIPE if input_text is not None else subprocess.DEVNULL
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
        stdout_bytes = _communicate(processes, input_text, timeout)
        returncodes = [proc.wait() for proc in processes]
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
    closed (SIGPIPE or a write error), so the last failure is the cause.
    """
    failed = [i for i, code in enumerate(result.returncodes) if code != 0]
    if not failed:
        return
    own = [i for i in failed if result.returncodes[i] != -signal.SIGPIPE] or failed
    index = own[-1]
    argv = result.argvs[index]
    code = result.returncodes[index]
    stderr = result.stderrs[index].strip()
    reason = ("killed by signal %d" % -code) if code < 0 else ("exit code %d" % code)
    last_line = stderr.splitlines()[-1] if stderr else "no error output"
    raise PgdrError(
        "%s failed (%s): %s" % (os.path.basename(argv[0]), reason, last_line),
        cmd=[os.path.basename(a) if i == 0 else a for i, a in enumerate(argv)],
        rc=code,
        stderr=stderr[-STDERR_TAIL:],
    )


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
