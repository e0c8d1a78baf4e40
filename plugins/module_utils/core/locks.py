# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One backup of a source into a repository at a time (DBS skips a run while the last one runs).

An flock on the host that runs the module: the kernel drops it when the process
dies, so a crashed run never leaves a stale lock behind. Runs for the same
source and repository from *different* hosts are not serialized by it; run a
given backup from one host (the inventory makes that natural).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time

LOCK_DIRS = ("/run/lock", "/var/lock", "/tmp")


def lock_path(source, repository):
    digest = hashlib.sha256(("%s|%s" % (source, repository)).encode()).hexdigest()[:16]
    folder = next((d for d in LOCK_DIRS if os.path.isdir(d) and os.access(d, os.W_OK)), "/tmp")
    return os.path.join(folder, "pgdr-backup-%s.lock" % digest)


@contextlib.contextmanager
def exclusive(source, repository):
    """Yields True when the lock was taken, False when another run holds it (with its details)."""
    path = lock_path(source, repository)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False, _holder(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        try:
            yield True, None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096) or b"{}")
    except ValueError:
        return {}
