"""pgdr-wal fetch: "not in the archive" (exit 1) told from "the store failed" (retried, then exit 126), the
read-ahead's bookkeeping (Window), and pg_receivewal's compressed segments."""

import errno
import gzip
import os
import struct
import subprocess
import threading
import time

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import NotFound
from ansible_collections.pgdr.backup.plugins.module_utils.wal import pgdr_wal

# the fixtures helper (pgdr-wal installed for a local archive) and restore (installed as restore_cluster does it)
from tests.unit.test_wal_helper import MIB, content, helper, restore, seg, wait_for  # noqa: F401 pylint: disable=unused-import


def caused_by(cause, message="reading x failed"):
    """A storage-layer error as the backends raise it: a PgdrError from the library's exception."""
    try:
        raise PgdrError(message) from cause
    except PgdrError as exc:
        return exc


class NoValidConnectionsError(OSError):  # paramiko's, by name: every address refused (its errno is None)
    pass


class SSHException(Exception):
    pass


class AuthenticationException(SSHException):
    pass


class EndpointConnectionError(Exception):  # botocore's, by name
    pass


@pytest.mark.parametrize(
    "error, transient",
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (caused_by(ConnectionResetError(errno.ECONNRESET, "reset")), True),
        (caused_by(TimeoutError("timed out")), True),
        (caused_by(OSError(errno.EHOSTUNREACH, "No route to host")), True),
        (caused_by(NoValidConnectionsError(None, "Unable to connect to port 22")), True),
        (caused_by(SSHException("Error reading SSH protocol banner")), True),
        (caused_by(EndpointConnectionError("Could not connect to the endpoint URL")), True),
        (PgdrError("S3 refused reading x (503 Slow Down)", error_code="503"), True),
        (PgdrError("S3 refused reading x (SlowDown)", error_code="SlowDown"), True),
        (PgdrError("archive folder /x does not exist", transient=True), True),
        # answers, not silence: retrying changes nothing
        (NotFound("no such key"), False),
        (caused_by(AuthenticationException("Authentication failed")), False),
        (PgdrError("S3 refused reading x (AccessDenied)", error_code="AccessDenied"), False),
        (caused_by(OSError(errno.EACCES, "Permission denied")), False),
        (caused_by(OSError("Socket is closed")), True),
        (pgdr_wal.DecryptionFailed("cannot decrypt"), False),
        (PgdrError("x holds 5 bytes"), False),
    ],
)
def test_store_errors_that_are_worth_retrying(error, transient):
    assert pgdr_wal.is_transient(error) is transient


class Clock:
    def __init__(self):
        self.now, self.pauses = 100.0, []

    def sleep(self, seconds):
        self.pauses.append(seconds)
        self.now += seconds


def failing(error):
    def attempt():
        raise error

    return attempt


def test_retrying_backs_off_and_gives_up_after_the_window():
    clock = Clock()
    answers = [ConnectionRefusedError(errno.ECONNREFUSED, "refused")] * 3 + ["done"]

    def attempt():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert pgdr_wal.retrying(attempt, 60, clock.sleep, lambda: clock.now) == "done"
    assert clock.pauses == [0.5, 1.0, 2.0]

    clock = Clock()
    with pytest.raises(pgdr_wal.StoreFailed, match=r"still fails after 10 s of retries .*: refused"):
        pgdr_wal.retrying(failing(caused_by(ConnectionRefusedError(111, "x"), "refused")), 10, clock.sleep, lambda: clock.now)
    assert sum(clock.pauses) == 10 and max(clock.pauses) <= pgdr_wal.RETRY_MAX

    clock = Clock()
    with pytest.raises(NotFound):  # not in the archive: at once, no retry
        pgdr_wal.retrying(failing(NotFound("gone")), 10, clock.sleep, lambda: clock.now)
    assert clock.pauses == []


SIZE = 16 * MIB


def test_window_follows_what_recovery_took_and_stops_at_the_archives_end():
    window = pgdr_wal.Window(seg(5), SIZE, 4, now=0.0)
    assert window.to_fetch(set(), parallel=2) == [seg(6), seg(7)]  # no more than the workers at once
    window.in_flight.update([seg(6), seg(7)])
    assert window.to_fetch(set(), parallel=2) == []
    window.done(seg(6), "", now=1.0)
    window.done(seg(7), ".gz", now=1.0)
    assert window.suffix == ".gz" and window.spooled == {seg(6), seg(7)}
    assert window.to_fetch({seg(6), seg(7)}, parallel=2) == [seg(8), seg(9)]
    # the shell's mv took 6: recovery moved on, the window too
    assert window.observe({seg(7)}, seg(5), now=2.0) is True
    assert window.served == seg(6) and window.wanted() == [seg(7), seg(8), seg(9), seg(10)]
    # the archive ends at 9: nothing from there is fetched (or kept) until END_RECHECK has passed
    window.in_flight.update([seg(8), seg(9)])
    window.done(seg(9), None, now=3.0)
    window.done(seg(8), "", now=3.0)
    assert window.to_fetch({seg(7), seg(8)}, parallel=4) == []
    assert window.keep() == {seg(7), seg(8)}
    assert window.observe({seg(7), seg(8)}, seg(5), now=3.0 + pgdr_wal.END_RECHECK + 0.1) is False
    assert window.to_fetch({seg(7), seg(8)}, parallel=4) == [seg(9), seg(10)]
    # a fetch through pgdr-wal names another timeline: its word wins, the old timeline's segments go
    assert window.observe({seg(7), seg(8)}, seg(8, timeline=2), now=20.0) is True
    assert window.wanted()[0] == seg(9, timeline=2) and seg(7) not in window.keep()
    # a segment of the old timeline that disappears (removed by tidy) is not progress
    assert window.observe(set(), seg(8, timeline=2), now=21.0) is False
    assert not window.idle(now=21.0 + 5, limit=10) and window.idle(now=20.0 + 10.5, limit=10)
    window.in_flight.add(seg(9, timeline=2))
    assert not window.idle(now=100.0, limit=10)  # a download still running keeps it


def test_a_store_that_stays_down_ends_recovery_with_126_and_one_that_comes_back_is_waited_for(helper, tmp_path):  # noqa: F811
    """The local archive folder missing (a share not mounted) stands for a store that does not answer."""
    out = tmp_path / "out"
    helper.archive.rmdir()  # the installer made it
    started = time.monotonic()
    down = helper("fetch", "--retry-window", "2", seg(5), str(out))
    assert down.returncode == pgdr_wal.ABORT_RECOVERY == 126 and time.monotonic() - started >= 2
    assert "still fails after 2 s of retries" in down.stderr and "is the share mounted?" in down.stderr
    assert len(down.stderr.splitlines()) == 1 and not out.exists()

    def mount():
        time.sleep(1.5)
        helper.archive.mkdir()
        (helper.archive / seg(5)).write_bytes(content(seg(5)))

    later = threading.Thread(target=mount)
    later.start()
    back = helper("fetch", "--retry-window", "30", seg(5), str(out))
    later.join()
    assert back.returncode == 0 and out.read_bytes() == content(seg(5))
    missing = helper("fetch", "--retry-window", "30", seg(6), str(out))  # an answer: not retried
    assert missing.returncode == pgdr_wal.NOT_IN_ARCHIVE == 1 and missing.stderr == ""


def long_header_segment(size=MIB, used=5000):
    """A segment whose first page header names ``size`` (xlp_seg_size at byte 32), ``used`` bytes of it written."""
    head = bytes(32) + struct.pack("<I", size) + struct.pack("<I", 8192)
    return head + content("record", used - len(head))


def test_compressed_segments_are_served_decompressed(helper, tmp_path):  # noqa: F811
    whole = content(seg(5))
    (helper.archive / (seg(5) + ".gz")).write_bytes(gzip.compress(whole))
    assert helper("fetch", seg(5), str(tmp_path / "a")).returncode == 0
    assert (tmp_path / "a").read_bytes() == whole
    # pg_receivewal's unfinished compressed segment: cut wherever it flushed last, not padded; recovery gets a whole one
    started = long_header_segment()
    cut = gzip.compress(started)[:-8]  # without gzip's trailer, as a stream still being written
    (helper.archive / (seg(6) + ".gz.partial")).write_bytes(cut)
    assert helper("fetch", seg(6), str(tmp_path / "b")).returncode == 0
    got = (tmp_path / "b").read_bytes()
    assert len(got) == MIB and got[: len(started)] == started and got[len(started) :] == bytes(MIB - len(started))
    # cut inside a deflate block: what decodes is served, the rest is zeros
    random_tail = started[:40] + os.urandom(200000)  # does not compress: the cut falls inside a block
    (helper.archive / (seg(9) + ".gz.partial")).write_bytes(gzip.compress(random_tail)[:-3000])
    served = helper("fetch", seg(9), str(tmp_path / "e"))
    assert served.returncode == 0, served.stderr
    got = (tmp_path / "e").read_bytes()
    assert got[:40] == started[:40] and len(got) == MIB
    # one that holds no whole page header yet (pg_receivewal has not flushed): nothing to replay yet, the end
    (helper.archive / (seg(8) + ".gz.partial")).write_bytes(gzip.compress(bytes(20))[:-8])
    empty = helper("fetch", seg(8), str(tmp_path / "d"))
    assert empty.returncode == 1 and empty.stderr == "" and not (tmp_path / "d").exists()
    # a whole .gz that is cut off is damaged, not the end of the archive
    (helper.archive / (seg(7) + ".gz")).write_bytes(gzip.compress(content(seg(7)))[:-100])
    damaged = helper("fetch", seg(7), str(tmp_path / "c"))
    assert damaged.returncode == 126 and "cut-off gzip" in damaged.stderr and not (tmp_path / "c").exists()


def test_the_read_ahead_spools_compressed_segments(restore, tmp_path):  # noqa: F811
    restore.store(seg(5))
    for number in (6, 7, 8):
        (restore.archive / (seg(number) + ".gz")).write_bytes(gzip.compress(content(seg(number))))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: restore.spooled() == [seg(6), seg(7), seg(8)]), restore.log()
    taken = restore(seg(6), tmp_path / "out")  # the shell's mv
    assert taken.returncode == 0 and (tmp_path / "out").read_bytes() == content(seg(6))


def test_the_hot_path_is_a_shell_move_and_its_exit_codes_are_pgdr_wals(restore, tmp_path):  # noqa: F811
    restore.store(*(seg(n) for n in range(5, 9)))
    assert restore(seg(5), tmp_path / "out").returncode == 0
    assert wait_for(lambda: seg(6) in restore.spooled())
    # no Python starts for a spooled segment: the helper, made unrunnable, is not needed
    helper_file = restore.installed_helper()
    saved = open(helper_file, "rb").read()
    with open(helper_file, "wb") as out:
        out.write(b"#!/bin/sh\nexit 99\n")
    try:
        served = restore(seg(6), tmp_path / "out")
        assert served.returncode == 0 and (tmp_path / "out").read_bytes() == content(seg(6))
        assert restore("00000002.history", tmp_path / "h").returncode == 99  # anything not spooled goes to pgdr-wal
    finally:
        with open(helper_file, "wb") as out:
            out.write(saved)
    assert restore("00000002.history", tmp_path / "h").returncode == 1
    assert subprocess.run(["sh", "-n", "-c", restore.line], check=False).returncode == 0


def test_a_fetch_that_outran_the_read_ahead_waits_for_its_download_instead_of_starting_another(restore, tmp_path):  # noqa: F811
    restore.store(seg(5), seg(7))
    fifo = restore.archive / seg(6)
    os.mkfifo(fifo)  # the prefetcher blocks reading it until the test writes
    writer = None
    deadline = time.monotonic() + 15
    assert restore(seg(5), tmp_path / "out").returncode == 0
    while writer is None:
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # only once the prefetcher has it open
        except OSError:
            assert time.monotonic() < deadline, "no prefetcher is reading the next segment"
            time.sleep(0.05)
    os.unlink(fifo)  # from now on only the prefetcher's download can give recovery segment 6
    asking = restore(seg(6), tmp_path / "six", wait=False)
    time.sleep(1)
    assert asking.poll() is None  # waiting for the download in progress
    os.set_blocking(writer, True)
    os.write(writer, content(seg(6)))
    os.close(writer)
    assert asking.wait(timeout=20) == 0, asking.stderr.read()
    assert (tmp_path / "six").read_bytes() == content(seg(6))
    assert "came from the store directly" not in restore.log()
