# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One backup of a source into a repository at a time (DBS skips a run while the last one runs).

An flock on the host that runs the module: the kernel drops it when the process dies, so a crashed run never
leaves a held lock behind. Runs for the same source and repository from *different* hosts are not serialized
by it; run a given backup from one host (the inventory makes that natural).

The lock must work across the users that run backups (root, postgres, a backup user), and be cleaned up:

- Where: the first of LOCK_DIRS that is root's, sticky and writable by all (``/run/lock`` is 1777 root). The
  choice never depends on who asks, or root and postgres would lock different files; sticky, so no user can
  remove or replace another's lock file.
- The file is made 0666 whatever the umask (fchmod), so any later run can open it; it is opened without
  following a symbolic link and without O_CREAT on an existing file, and must be a plain file of one link, so
  a link planted by another local user is refused, never written through.
- Removal: the holder removes the file while it still holds the lock; a run that locked a file must then find
  that same file (st_dev, st_ino) at the path, or it locked one that was just removed and tries again. So two
  runs never both believe they hold the lock. In a sticky folder only the file's owner (or root) may remove it:
  a run as postgres that locked a file root made leaves it (0666, usable by all), and root's next run removes it.
- What a hostile local user can still do: open a lock file and hold the flock (every user can open it), so the
  backup of that source reports "another backup is running" with the holder's pid; or fill the file with a
  fake holder, which is read back only as a pid and a time. Neither reaches the backup data.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import stat
import time

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

LOCK_DIRS = ("/run/lock", "/var/lock", "/tmp")
FOLDER_OWNER = 0  # a folder every user trusts: root's
FILE_MODE = 0o666
ATTEMPTS = 100  # each retry means a holder removed the file between our open and our flock
_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a planted FIFO never blocks the open


def lock_folder():
    """The folder of the lock files: the same for every user (see the module's docstring)."""
    for folder in LOCK_DIRS:
        try:
            st = os.stat(folder)
        except OSError:
            continue
        shared = stat.S_ISVTX | stat.S_IWOTH | stat.S_IXOTH
        if stat.S_ISDIR(st.st_mode) and st.st_uid == FOLDER_OWNER and st.st_mode & shared == shared:
            return folder
    raise PgdrError(
        "no folder for backup locks: none of %s is a root folder with mode 1777 (sticky, writable by all); "
        "create /run/lock so (systemd-tmpfiles does: d /run/lock 1777 root root)" % ", ".join(LOCK_DIRS)
    )


def lock_path(source, repository):
    digest = hashlib.sha256(("%s|%s" % (source, repository)).encode()).hexdigest()[:16]
    return os.path.join(lock_folder(), "pgdr-backup-%s.lock" % digest)


@contextlib.contextmanager
def exclusive(source, repository):
    """Yields (True, None) when the lock was taken, (False, holder) when another run holds it (holder: its pid and since when)."""
    path = lock_path(source, repository)
    fd, holder = _acquire(path)
    if fd is None:
        yield False, holder
        return
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
        except OSError as exc:
            raise _error(path, exc) from None
        yield True, None
    finally:
        _release(fd, path)


def _acquire(path):
    """(fd holding the flock on the file now at ``path``, None), or (None, holder) when another run holds it."""
    for _attempt in range(ATTEMPTS):
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            return None, holder
        except OSError as exc:
            os.close(fd)
            raise _error(path, exc) from None
        if _is_at(fd, path):
            return fd, None
        os.close(fd)  # its holder removed it after we opened it: lock the file at the path now
    raise PgdrError("the backup lock %s was removed and made again %d times while this run tried to take it; run the backup again" % (path, ATTEMPTS))


def _open(path):
    """The lock file at ``path``, made if missing: a plain file of one link, 0666 when it is ours."""
    for _attempt in range(ATTEMPTS):
        try:
            fd = os.open(path, _FLAGS)
        except FileNotFoundError:
            try:  # O_CREAT only with O_EXCL: never opens (with fs.protected_regular: is refused) another user's file as a new one
                fd = os.open(path, _FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                continue  # made meanwhile by another run: open that one
            except OSError as exc:
                raise _error(path, exc) from None
        except OSError as exc:
            raise _error(path, exc) from None
        try:
            st = os.fstat(fd)
            if st.st_nlink == 0:  # removed by its holder since we opened it
                os.close(fd)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                raise PgdrError(
                    "the backup lock %s is not a plain file (%s); this run does not write through it: remove it (no backup data is in it)"
                    % (path, _kind(st.st_mode))
                )
            if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)  # the umask, or an earlier version's 0600, must not lock out the other users
        except OSError as exc:
            os.close(fd)
            raise _error(path, exc) from None
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise PgdrError("the backup lock %s was removed and made again %d times while this run opened it; run the backup again" % (path, ATTEMPTS))


def _kind(mode):
    if stat.S_ISREG(mode):
        return "a hard link"
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def _is_at(fd, path):
    """Whether the file of ``fd`` is still the one at ``path``."""
    try:
        at_path = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


def _release(fd, path):
    """Remove the file while still holding its lock (a run that opened it meanwhile finds it gone and tries again), then let go."""
    try:
        if _is_at(fd, path):
            os.unlink(path)
    except OSError:  # another user's file in the sticky folder (EPERM), or gone: it stays usable by all, its owner removes it
        pass
    finally:
        os.close(fd)


def _holder(fd):
    """{pid, since} as the holder wrote them; only these two, short (another user may have written the file)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in ("pid", "since") if isinstance(data.get(key), (int, str)) and len(str(data[key])) <= 40}


def _error(path, exc):
    """One line: the lock file, what went wrong, and what to do."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        try:
            st = os.lstat(path)
            whose = " (owner %s, mode %04o)" % (_user(st.st_uid), stat.S_IMODE(st.st_mode))
        except OSError:
            whose = ""
        return PgdrError(
            "cannot open the backup lock %s as %s: permission denied%s; it was left by an earlier version or another user: "
            "remove it when no backup of this source is running (no backup data is in it)" % (path, _user(os.geteuid()), whose)
        )
    if exc.errno == errno.ELOOP:
        return PgdrError("the backup lock %s is a symbolic link, which this run does not follow; remove it (no backup data is in it)" % path)
    return PgdrError(
        "the backup lock %s could not be used: %s; check its folder %s (root's, mode 1777)" % (path, exc.strerror or exc, os.path.dirname(path))
    )


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "uid %d" % uid
