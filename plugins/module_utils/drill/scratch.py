# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scratch place of a drill on the drill host: a folder of its own, a server on a port of its own.

Invariants:

- A drill never touches what runs on the drill host: everything it makes is under ``<drill_dir>/<name>/``
  (the data directory, the server's log and socket, the WAL a streaming drill receives, the sets it takes),
  its server listens on no TCP address, only on a socket in that 0700 folder, on its own port.
- What an interrupted drill left (a running scratch server, a pg_receivewal, the folder) is found by its
  place alone and removed before the next drill of that name starts: ``clear()`` needs no memory of the run.
- Only the drill's own folder is ever removed: ``clear()`` refuses a place whose folder is not a child of the
  drill folder, and never follows a symbolic link.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.pg_service import Cluster

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# a Unix socket path is at most 107 bytes; the server's is <folder>/.s.PGSQL.<port>
_SOCKET_MAX = 107
# trust on the socket only: the folder is 0700, so only root and the cluster's OS user can reach it
HBA_TEXT = "# written by pgdr.backup restore_drill: the scratch server takes local connections only\nlocal all all trust\n"


def check_name(name):
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PgdrError("drill name %r must be letters, digits, '.', '_' or '-' (a folder name)" % (name,))
    return name


class Place:
    """Where one drill lives on the drill host, and the scratch server that runs there."""

    def __init__(self, drill_dir, name, port, os_user="postgres"):
        if not drill_dir or not os.path.isabs(drill_dir):
            raise PgdrError("drill_dir must be an absolute path, not %r" % (drill_dir,))
        self.drill_dir = os.path.normpath(drill_dir)
        self.root = os.path.join(self.drill_dir, check_name(name))
        self.port = int(port)
        self.os_user = os_user
        if len(os.path.join(self.root, ".s.PGSQL.%d" % self.port)) > _SOCKET_MAX:
            raise PgdrError("drill_dir %s is too long for the scratch server's socket (at most %d bytes with it); choose a shorter drill_dir"
                            % (self.drill_dir, _SOCKET_MAX))

    @property
    def pg_data(self):
        return os.path.join(self.root, "data")

    @property
    def server_log(self):
        return os.path.join(self.root, "server.log")

    @property
    def socket_dir(self):
        return self.root

    @property
    def hba_file(self):
        return os.path.join(self.root, "pg_hba.conf")

    @property
    def wal_dir(self):
        return os.path.join(self.root, "wal")

    @property
    def sets_dir(self):
        return os.path.join(self.root, "sets")

    @property
    def receiver_pid_file(self):
        return os.path.join(self.root, "receiver.pid")

    def server(self, bin_dir):
        return Cluster(self.pg_data, bin_dir, manager="pg_ctl", server_log=self.server_log, os_user=self.os_user, port=self.port,
                       socket_dir=self.socket_dir)

    def server_settings(self):
        """What the restored copy must run with so that it stays beside the drill host's own server."""
        return {
            "port": str(self.port),
            "listen_addresses": "",
            "unix_socket_directories": self.socket_dir,
            "hba_file": self.hba_file,
            "cluster_name": "pgdr_drill",
        }

    def connection(self, dbname="postgres"):
        """libpq settings of the scratch server (over its socket, as its OS user's superuser)."""
        return dict(host=self.socket_dir, port=str(self.port), user=self.os_user, dbname=dbname)

    # --- making and removing ---------------------------------------------------------------------

    def make(self):
        """The drill's folder (0700, the cluster's OS user's) with its hba file; the drill folder above it if missing."""
        import pwd  # pylint: disable=import-outside-toplevel  # only where folders are made

        owner = pwd.getpwnam(self.os_user)
        for folder in (self.drill_dir, self.root, self.sets_dir):
            if not os.path.isdir(folder):
                os.makedirs(folder, 0o700, exist_ok=True)
                os.chown(folder, owner.pw_uid, owner.pw_gid)
        with open(self.hba_file, "w", encoding="utf-8") as handle:
            handle.write(HBA_TEXT)
        os.chmod(self.hba_file, 0o600)
        os.chown(self.hba_file, owner.pw_uid, owner.pw_gid)

    def leftovers(self):
        """What an earlier drill of this name left: [] when nothing."""
        found = []
        if os.path.lexists(self.root):
            found.append("folder %s" % self.root)
        if _pid_of(self.receiver_pid_file):
            found.append("pg_receivewal")
        if _pid_of(os.path.join(self.pg_data, "postmaster.pid")):
            found.append("scratch server")
        return found

    def clear(self):
        """Stop what runs from this place and remove its folder. Returns what was there (see leftovers)."""
        found = self.leftovers()
        if os.path.islink(self.root) or os.path.dirname(self.root) != self.drill_dir:
            raise PgdrError("%s is not a drill's own folder (a symbolic link?); remove it by hand" % self.root)
        stop_receiver(self.receiver_pid_file)
        pid = _pid_of(os.path.join(self.pg_data, "postmaster.pid"))
        if pid:
            _stop_process(pid, signal.SIGQUIT)  # immediate shutdown: a scratch copy is thrown away
        if os.path.isdir(self.root):
            shutil.rmtree(self.root)
        return found

    def initdb(self, bin_dir):
        """A new empty cluster in the place (for a logical drill), started on the place's port."""
        server = self.server(bin_dir)
        argv = server.as_owner([os.path.join(bin_dir, "initdb"), "-D", self.pg_data, "--auth=trust", "--no-sync", "--data-checksums",
                                "--encoding=UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C"])
        run(argv, timeout=300)
        with open(os.path.join(self.pg_data, "postgresql.auto.conf"), "a", encoding="utf-8") as handle:
            for key, value in self.server_settings().items():
                handle.write("%s = '%s'\n" % (key, value.replace("'", "''")))
            handle.write("fsync = off\n")  # nothing here outlives the drill
        server.start()
        return server


# the files a server reads from its data directory unless told otherwise; a source whose configuration lives
# elsewhere (Debian's /etc/postgresql/<major>/<name>) leaves them out of its base backups
CONFIG_FILES = ("postgresql.conf", "pg_ident.conf")


def complete_config(pg_data, os_user):
    """Empty configuration files where a restored data directory has none (a copy of a Debian-layout cluster), so the
    scratch server starts: its settings are in postgresql.auto.conf, its hba file is the drill's own. Returns the names
    written."""
    import pwd  # pylint: disable=import-outside-toplevel  # only where files are made

    owner = pwd.getpwnam(os_user)
    written = []
    for name in CONFIG_FILES:
        path = os.path.join(pg_data, name)
        if os.path.lexists(path):
            continue
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
            handle.write("# written by pgdr.backup restore_drill: the backed-up cluster kept this file outside its data directory\n")
        os.chown(path, owner.pw_uid, owner.pw_gid)
        written.append(name)
    return written


def _has_c_utf8():
    # Debian 12's glibc has C.UTF-8 built in; older systems may only have C
    return os.path.isdir("/usr/lib/locale/C.utf8") or os.path.isdir("/usr/lib/locale/C.UTF-8")


def _pid_of(path):
    """The pid in the first line of ``path`` if that process is alive, else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            pid = int(handle.readline().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid


def _stop_process(pid, sig, timeout=30):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # a child of this process (the drill's receiver) stays a zombie until reaped
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_receiver(pid_file):
    """Stop the drill's pg_receivewal (SIGINT: it closes the segment it writes, leaving it ``.partial``) and wait."""
    pid = _pid_of(pid_file)
    if pid:
        _stop_process(pid, signal.SIGINT)
    if os.path.exists(pid_file):
        os.unlink(pid_file)
