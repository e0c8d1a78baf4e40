"""core.locks: one backup of a source into a repository at a time, across processes and users, cleaned up.

Each test uses a folder of its own made like /run/lock (sticky, writable by all, owned by the test's user).
"""

import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core import locks
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

FORK = multiprocessing.get_context("fork")  # the children inherit the patched folder


@pytest.fixture
def folder(tmp_path, monkeypatch):
    path = tmp_path / "lock"
    path.mkdir()
    path.chmod(0o1777)
    monkeypatch.setattr(locks, "LOCK_DIRS", (str(path),))
    monkeypatch.setattr(locks, "FOLDER_OWNER", os.geteuid())
    return path


def held_in_child(ready, release):
    with locks.exclusive("src", "repo") as (taken, _holder):
        if taken:
            ready.set()
            release.wait(30)


def test_taken_released_and_removed(folder):
    path = locks.lock_path("src", "repo")
    assert os.path.dirname(path) == str(folder)
    with locks.exclusive("src", "repo") as (taken, holder):
        assert (taken, holder) == (True, None)
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o666
        assert json.loads(open(path).read())["pid"] == os.getpid()
        # a second open of it is another open file description: flock refuses it even in this process
        with locks.exclusive("src", "repo") as (again, holder):
            assert again is False and holder["pid"] == os.getpid() and holder["since"].endswith("Z")
        assert os.path.exists(path)  # the run that did not get it removes nothing
    assert os.listdir(folder) == []
    with locks.exclusive("src", "other repo") as (taken, _holder):
        assert taken is True and len(os.listdir(folder)) == 1
    assert os.listdir(folder) == []


def test_a_failing_body_still_releases_and_removes(folder):
    with pytest.raises(RuntimeError):
        with locks.exclusive("src", "repo") as (taken, _holder):
            assert taken
            raise RuntimeError("the backup failed")
    assert os.listdir(folder) == []
    with locks.exclusive("src", "repo") as (taken, _holder):
        assert taken


def test_another_process_holds_it_then_lets_go(folder):
    ready, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=held_in_child, args=(ready, release))
    child.start()
    try:
        assert ready.wait(30)
        with locks.exclusive("src", "repo") as (taken, holder):
            assert taken is False and holder["pid"] == child.pid
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0 and os.listdir(folder) == []
    with locks.exclusive("src", "repo") as (taken, _holder):
        assert taken is True


def test_made_0666_whatever_the_umask_and_an_own_0600_file_is_opened_up(folder):
    old = os.umask(0o077)
    try:
        with locks.exclusive("src", "repo") as (taken, _holder):
            assert taken and stat.S_IMODE(os.stat(locks.lock_path("src", "repo")).st_mode) == 0o666
        path = locks.lock_path("src", "repo")
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)  # what an earlier version left
        os.close(fd)
        with locks.exclusive("src", "repo") as (taken, _holder):
            assert taken and stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert not os.path.exists(path)
    finally:
        os.umask(old)


def test_a_lock_file_removed_between_open_and_flock_is_not_trusted(folder, monkeypatch):
    """The classic race: a run opens the file, its holder finishes and removes it, the run's flock then succeeds on
    a file no longer at the path, while a third run makes a new one. The run must lock the file at the path."""
    real_open, opened = locks._open, []

    def open_then_holder_removes_it(path):
        fd = real_open(path)
        opened.append(os.fstat(fd).st_ino)
        if len(opened) == 1:
            os.unlink(path)  # the holder's release, right after our open
        return fd

    monkeypatch.setattr(locks, "_open", open_then_holder_removes_it)
    with locks.exclusive("src", "repo") as (taken, _holder):
        assert taken is True and len(opened) == 2
        path = locks.lock_path("src", "repo")
        assert os.stat(path).st_ino == opened[1]
        monkeypatch.setattr(locks, "_open", real_open)
        with locks.exclusive("src", "repo") as (again, _holder):
            assert again is False  # the lock taken is the one on the file at the path
    assert os.listdir(folder) == []


def hammer(rounds, inside, violations):
    done = 0
    while done < rounds:
        with locks.exclusive("src", "repo") as (taken, _holder):
            if not taken:
                continue
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                with violations.get_lock():
                    violations.value += 1
                continue
            os.close(fd)
            os.unlink(inside)
            done += 1


def test_never_two_holders_under_contention(folder, tmp_path):
    """Processes take, remove and take again the same lock as fast as they can: never two inside at once."""
    inside, violations = str(tmp_path / "inside"), FORK.Value("i", 0)
    children = [FORK.Process(target=hammer, args=(300, inside, violations)) for _worker in range(6)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0] * 6
    assert violations.value == 0 and os.listdir(folder) == []


def test_a_symbolic_link_is_refused_and_not_written_through(folder, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = locks.lock_path("src", "repo")
    os.symlink(victim, path)
    with pytest.raises(PgdrError) as refused:
        with locks.exclusive("src", "repo"):
            pass
    assert refused.value.msg == "the backup lock %s is a symbolic link, which this run does not follow; remove it (no backup data is in it)" % path
    assert victim.read_text() == "precious" and os.path.islink(path)


def test_a_hard_link_or_a_fifo_is_refused(folder, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = locks.lock_path("src", "repo")
    os.link(victim, path)
    with pytest.raises(PgdrError, match=r"^the backup lock .* is not a plain file \(a hard link\); .* remove it"):
        with locks.exclusive("src", "repo"):
            pass
    assert victim.read_text() == "precious"
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(PgdrError, match=r"is not a plain file \(a FIFO\)"):
        with locks.exclusive("src", "repo"):
            pass


def test_permission_denied_is_one_line_naming_the_file_its_owner_and_the_fix(folder, monkeypatch):
    path = locks.lock_path("src", "repo")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    real_open = os.open

    def denied(name, flags, *args):
        if name == path:  # what a run as postgres meets on a root file of an earlier version
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, flags, *args)

    monkeypatch.setattr(locks.os, "open", denied)
    with pytest.raises(PgdrError) as refused:
        with locks.exclusive("src", "repo"):
            pass
    me = locks._user(os.geteuid())
    assert refused.value.msg == (
        "cannot open the backup lock %s as %s: permission denied (owner %s, mode 0600); it was left by an earlier version or "
        "another user: remove it when no backup of this source is running (no backup data is in it)" % (path, me, me)
    )


def test_a_file_another_user_owns_in_the_sticky_folder_stays_and_the_run_succeeds(folder, monkeypatch):
    def not_yours(path):
        raise PermissionError(1, "Operation not permitted", path)  # the sticky bit: only its owner removes it

    monkeypatch.setattr(locks.os, "unlink", not_yours)
    with locks.exclusive("src", "repo") as (taken, _holder):
        assert taken
    assert len(os.listdir(folder)) == 1
    monkeypatch.undo()
    monkeypatch.setattr(locks, "LOCK_DIRS", (str(folder),))
    monkeypatch.setattr(locks, "FOLDER_OWNER", os.geteuid())
    with locks.exclusive("src", "repo") as (taken, _holder):
        assert taken  # and this run, its owner's, removes it
    assert os.listdir(folder) == []


def test_the_folder_is_the_same_for_every_user_and_never_one_others_can_empty(tmp_path, monkeypatch):
    plain, sticky = tmp_path / "plain", tmp_path / "sticky"
    plain.mkdir()
    plain.chmod(0o777)  # writable by all without the sticky bit: anyone could remove a lock
    sticky.mkdir()
    sticky.chmod(0o1777)
    monkeypatch.setattr(locks, "FOLDER_OWNER", os.geteuid())
    monkeypatch.setattr(locks, "LOCK_DIRS", (str(tmp_path / "missing"), str(plain), str(sticky)))
    assert locks.lock_folder() == str(sticky)
    sticky.chmod(0o755)  # not writable by others: another user's run could not make its lock there
    with pytest.raises(PgdrError) as refused:
        locks.lock_folder()
    assert "\n" not in refused.value.msg and refused.value.msg.startswith("no folder for backup locks: none of %s" % tmp_path)
    assert refused.value.msg.endswith("create /run/lock so (systemd-tmpfiles does: d /run/lock 1777 root root)")
    sticky.chmod(0o1777)
    monkeypatch.setattr(locks, "FOLDER_OWNER", os.geteuid() + 1)  # a folder of someone else than root
    with pytest.raises(PgdrError, match="no folder for backup locks"):
        locks.lock_folder()


def test_the_holder_read_back_is_only_a_short_pid_and_time(folder):
    path = locks.lock_path("src", "repo")
    ready, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=held_in_child, args=(ready, release))
    child.start()
    try:
        assert ready.wait(30)
        with open(path, "w") as f:  # what another local user may write into a file all can open
            json.dump({"pid": "x" * 500, "since": "now", "note": "\nTraceback"}, f)
        with locks.exclusive("src", "repo") as (taken, holder):
            assert taken is False and holder == {"since": "now"}
    finally:
        release.set()
        child.join(30)
