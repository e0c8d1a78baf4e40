"""The argv runner: pipelines with every exit code checked, never a shell."""

import os

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import commands
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError


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
