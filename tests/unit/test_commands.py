"""The argv runner: pipelines with every exit code checked, never a shell."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import commands
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

COLLECTIONS = commands.__file__.rsplit(os.sep + "ansible_collections" + os.sep, 1)[0]


def test_run_captures_stdout():
    result = commands.run(["printf", "%s", "a b; c"])
    assert result.stdout == "a b; c"
    assert result.returncodes == [0]


def test_shell_strings_are_refused():
    with pytest.raises(TypeError):
        commands.run("echo hi")


def test_argument_is_never_interpreted_by_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    commands.run(["echo", "$(touch %s)" % marker])
    assert not marker.exists()


def test_pipeline_passes_data_through(tmp_path):
    out = tmp_path / "out"
    commands.run_pipeline([["printf", "hello\nworld\n"], ["sort", "-r"]], stdout_path=str(out))
    assert out.read_text() == "world\nhello\n"
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"


def test_failing_middle_process_fails_the_pipeline(tmp_path):
    # `false` eats its input and exits 1: the shell's `a | false | cat` would report cat's 0
    with pytest.raises(PgdrError) as err:
        commands.run_pipeline([["printf", "data"], ["sh", "-c", "cat >/dev/null; echo broken >&2; exit 3"], ["cat"]])
    assert "exit code 3" in err.value.msg
    assert "broken" in err.value.msg
    assert err.value.details["rc"] == 3


def test_failing_first_process_is_named(tmp_path):
    with pytest.raises(PgdrError) as err:
        commands.run_pipeline([["sh", "-c", "echo 'pg_dump: error: no such db' >&2; exit 1"], ["gzip"]],
                              stdout_path=str(tmp_path / "x.gz"))
    assert err.value.msg.startswith("sh failed (exit code 1): pg_dump: error: no such db")


def test_downstream_death_is_the_cause_not_the_sigpipe_upstream():
    with pytest.raises(PgdrError) as err:
        commands.run_pipeline([["yes"], ["sh", "-c", "head -c 10 >/dev/null; echo 'disk full' >&2; exit 4"]])
    assert "disk full" in err.value.msg


def test_upstream_death_is_the_cause_not_the_short_input_downstream():
    # a wrong gpg passphrase: gpg exits 2, and pg_restore then fails on its empty input
    with pytest.raises(PgdrError) as err:
        commands.run_pipeline([["sh", "-c", "echo 'gpg: decryption failed: Bad session key' >&2; exit 2"],
                               ["sh", "-c", "cat >/dev/null; echo 'pg_restore: error: input file is too short' >&2; exit 1"]])
    assert err.value.msg == "sh failed (exit code 2): gpg: decryption failed: Bad session key"
    assert err.value.details["rc"] == 2


def test_a_broken_pipe_write_error_upstream_is_not_the_cause():
    with pytest.raises(PgdrError) as err:
        commands.run_pipeline([["sh", "-c", "trap '' PIPE; yes 2>/dev/null; echo 'write error: Broken pipe' >&2; exit 1"],
                               ["sh", "-c", "head -c 10 >/dev/null; echo 'disk full' >&2; exit 4"]])
    assert "disk full" in err.value.msg and err.value.details["rc"] == 4


def test_missing_program_gives_a_clear_message():
    with pytest.raises(PgdrError) as err:
        commands.run(["/nonexistent/pg_dump", "--version"])
    assert "cannot run /nonexistent/pg_dump" in err.value.msg


def test_input_text_reaches_stdin():
    assert commands.run(["cat"], input_text="abc").stdout == "abc"


def test_check_false_returns_the_failure():
    result = commands.run(["sh", "-c", "exit 5"], check=False)
    assert result.returncodes == [5]


def test_environment_is_kept_and_extended():
    env = dict(os.environ, PGSSLMODE="verify-full")
    assert commands.run(["sh", "-c", "echo $PGSSLMODE"], env=env).stdout.strip() == "verify-full"


def test_sink_receives_the_stream():
    chunks = []
    commands.run_pipeline([["head", "-c", "3000000", "/dev/zero"], ["cat"]], sink=chunks.append)
    assert sum(len(c) for c in chunks) == 3000000 and len(chunks) >= 3


def test_a_failing_sink_kills_the_pipeline():
    def sink(chunk):
        raise RuntimeError("upload failed")

    with pytest.raises(RuntimeError):
        commands.run_pipeline([["yes"]], sink=sink)


def test_stdin_reader_streams_into_the_first_process(tmp_path):
    import io

    data = os.urandom(3 * 1024 * 1024 + 7)
    out = tmp_path / "out"
    commands.run_pipeline([["gzip", "-c"], ["gzip", "-dc"]], stdin_reader=io.BytesIO(data), stdout_path=str(out))
    assert out.read_bytes() == data


def test_a_reader_that_fails_fails_the_pipeline():
    class Broken:
        def read(self, n):
            raise OSError("connection reset by the object store")

    with pytest.raises(PgdrError) as err:
        commands.run_pipeline([["cat"]], stdin_reader=Broken())
    assert "reading the backup failed: connection reset" in err.value.msg


def test_the_telling_line_is_the_error_not_the_hint():
    stderr = ("pg_dump: error: connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: No such file or directory\n"
              "\tIs the server running locally and accepting connections on that socket?\n")
    assert commands.telling_line(stderr).startswith("pg_dump: error: connection to server")
    assert commands.telling_line("just one line\n") == "just one line"
    assert commands.telling_line("") == "no error output"


# --- children die with the run: own process group, no wait on a pipe another process holds ---------------


def state(pid):
    """'gone', 'zombie' (dead, not yet reaped by init) or 'running'."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return "zombie" if handle.read().rsplit(")", 1)[1].split()[0] == "Z" else "running"
    except FileNotFoundError:
        return "gone"


def dead_soon(pid, seconds=5):
    deadline = time.monotonic() + seconds
    while state(pid) == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return state(pid) != "running"


def left_behind(tmp_path, then):
    """sh that starts a grandchild holding its stdout (as pg_basebackup's WAL streamer does), writes its pid, then ``then``."""
    pidfile = tmp_path / "grandchild.pid"
    return ["sh", "-c", "sleep 300 & echo $! > %s; echo started; %s" % (pidfile, then)], pidfile


def grandchild(pidfile):
    return int(pidfile.read_text())


@pytest.fixture
def reaper():
    """Kills what a failing test leaves behind, so that one failure does not hold the pytest run."""
    pids = []
    yield pids.append
    for pid in pids:
        if state(pid) == "running":
            os.kill(pid, signal.SIGKILL)


def test_a_killed_child_whose_grandchild_holds_stdout_returns_promptly(tmp_path, reaper):
    argv, pidfile = left_behind(tmp_path, "kill -9 $$")
    started = time.monotonic()
    result = commands.run(argv, check=False)
    reaper(grandchild(pidfile))
    assert time.monotonic() - started < 10
    assert result.returncodes == [-signal.SIGKILL] and result.stdout == "started\n"
    assert dead_soon(grandchild(pidfile)), "the grandchild outlived the run"
    with pytest.raises(PgdrError) as err:
        commands.check_result(result)
    assert err.value.msg == "sh failed (killed by signal 9): no error output"


def test_a_child_that_exits_while_its_grandchild_holds_stdout_returns_with_its_output(tmp_path, reaper):
    argv, pidfile = left_behind(tmp_path, "echo done; exit 0")
    started = time.monotonic()
    result = commands.run(argv)
    reaper(grandchild(pidfile))
    assert time.monotonic() - started < commands.DRAIN_SECONDS + 5
    assert result.stdout == "started\ndone\n" and result.returncodes == [0]
    assert dead_soon(grandchild(pidfile))


@pytest.mark.parametrize("sink", [False, True])
def test_a_pipeline_stage_whose_grandchild_holds_the_pipe_does_not_hold_the_pipeline(tmp_path, reaper, sink):
    # the grandchild keeps the pipe into `cat` open: cat sees the end of its input only once the group is killed
    argv, pidfile = left_behind(tmp_path, "exit 3")
    chunks = []
    started = time.monotonic()
    result = commands.run_pipeline([argv, ["cat"]], check=False, sink=chunks.append if sink else None)
    reaper(grandchild(pidfile))
    assert time.monotonic() - started < 10
    assert result.returncodes == [3, 0]
    assert (b"".join(chunks).decode() if sink else result.stdout) == "started\n"
    assert dead_soon(grandchild(pidfile))


def test_stdout_to_a_file_does_not_wait_for_the_grandchild(tmp_path, reaper):
    argv, pidfile = left_behind(tmp_path, "exit 0")
    started = time.monotonic()
    commands.run_pipeline([argv], stdout_path=str(tmp_path / "out"))
    reaper(grandchild(pidfile))
    assert time.monotonic() - started < 10
    assert (tmp_path / "out").read_text() == "started\n"
    assert dead_soon(grandchild(pidfile))


def test_a_timeout_kills_the_grandchild_too(tmp_path, reaper):
    argv, pidfile = left_behind(tmp_path, "wait")
    started = time.monotonic()
    with pytest.raises(PgdrError) as err:
        commands.run(argv, timeout=1)
    reaper(grandchild(pidfile))
    assert err.value.msg == "sh did not finish within 1 seconds"
    assert time.monotonic() - started < 10
    assert dead_soon(grandchild(pidfile))


def test_a_failing_sink_kills_the_grandchild_too(tmp_path, reaper):
    argv, pidfile = left_behind(tmp_path, "yes")

    def sink(chunk):
        raise RuntimeError("upload failed")

    with pytest.raises(RuntimeError):
        commands.run_pipeline([argv], sink=sink)
    reaper(grandchild(pidfile))
    assert dead_soon(grandchild(pidfile))


def test_each_command_runs_in_a_process_group_of_its_own():
    stat = commands.run(["cat", "/proc/self/stat"]).stdout
    pid, (pgid, sid) = int(stat.split()[0]), (int(field) for field in stat.rsplit(")", 1)[1].split()[2:4])
    assert pgid == sid == pid and pgid != os.getpgid(0)


def test_children_die_when_the_task_itself_is_killed(tmp_path, reaper):
    # an async job's timeout SIGKILLs the module's process group: nothing in the module runs, its children
    # are in groups of their own, and the guard process (in a session of its own) kills those groups
    pidfile = tmp_path / "grandchild.pid"
    ready = tmp_path / "ready"
    task = tmp_path / "task.py"
    task.write_text(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from ansible_collections.pgdr.backup.plugins.module_utils.core import commands\n"
        "commands.run(['sh', '-c', 'sleep 300 & echo $! > %s; touch %s; wait'])\n" % (COLLECTIONS, pidfile, ready)
    )
    module = subprocess.Popen([sys.executable, str(task)], start_new_session=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert module.poll() is None and time.monotonic() < deadline, "the task never started its command"
        time.sleep(0.05)
    reaper(grandchild(pidfile))
    os.killpg(module.pid, signal.SIGKILL)
    module.wait()
    assert dead_soon(grandchild(pidfile)), "the command's child outlived the task that was killed"


def test_without_pidfds_exits_are_polled_for(tmp_path, reaper, monkeypatch):
    # older kernels and Pythons have no pidfd_open: the same waits, with exits polled for
    monkeypatch.setattr(commands, "_pidfd", lambda proc: None)
    assert commands.run_pipeline([["printf", "b\na\n"], ["sort"]]).stdout == "a\nb\n"
    argv, pidfile = left_behind(tmp_path, "kill -9 $$")
    started = time.monotonic()
    result = commands.run(argv, check=False)
    reaper(grandchild(pidfile))
    assert time.monotonic() - started < 10 and result.returncodes == [-signal.SIGKILL]
    assert dead_soon(grandchild(pidfile))


def test_output_larger_than_a_pipe_arrives_whole_in_chunks():
    chunks = []
    commands.run_pipeline([["head", "-c", "5000001", "/dev/urandom"], ["cat"]], sink=chunks.append)
    assert sum(len(c) for c in chunks) == 5000001
    assert all(len(c) == commands.CHUNK for c in chunks[:-1]) and 0 < len(chunks[-1]) <= commands.CHUNK


def test_input_and_output_larger_than_a_pipe_do_not_deadlock():
    text = "0123456789abcdef\n" * 400000  # 6.8 MB each way
    assert commands.run(["cat"], input_text=text, timeout=60).stdout == text


def test_cancel_ends_a_run_at_once_and_raises_what_it_returned():
    started = time.monotonic()
    asked = []

    def cancel():
        asked.append(1)
        return PgdrError("the store refused the upload") if time.monotonic() - started > 0.3 else None

    with pytest.raises(PgdrError) as failed:
        commands.run_pipeline([["sleep", "30"]], cancel=cancel)
    assert failed.value.msg == "the store refused the upload" and time.monotonic() - started < 5 and len(asked) >= 2


def test_cancel_that_never_fires_leaves_the_result_alone():
    result = commands.run_pipeline([["sh", "-c", "sleep 0.5; echo done"]], cancel=lambda: None)
    assert result.stdout == "done\n" and result.returncodes == [0]
