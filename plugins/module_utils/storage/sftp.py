# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SFTP backend: a folder on an SSH server, reached with paramiko (the only file that imports it).

paramiko speaks SFTP. The SSH transport under it is OpenSSH's own client (``ssh -s ... sftp``) wherever ``ssh`` is
installed: paramiko's transport encrypts in Python and reads at about half of OpenSSH's speed on the same hosts
(docs/architecture.md, "SFTP transport"). Where ``ssh`` is missing or cannot log in, paramiko's own transport is
used, with the same strict host keys; its connect then names the reason (an unknown host key with its fingerprint).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import select
import shutil
import socket
import stat
import subprocess
import tempfile

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import (
    DIR_MODE,
    FILE_MODE,
    MIB,
    TEMP_MARK,
    Entry,
    Repository,
    Stream,
    clean_key,
    quietly,
    temp_name,
    utc,
)

try:
    import paramiko
    from paramiko.sftp import CMD_EXTENDED as SFTP_CMD_EXTENDED

    HAS_PARAMIKO = True
    PARAMIKO_IMPORT_ERROR = None
except ImportError as exc:  # reported when a repository of this type is opened
    paramiko = None
    SFTP_CMD_EXTENDED = None
    HAS_PARAMIKO = False
    PARAMIKO_IMPORT_ERROR = exc

SSH_TIMEOUT = 30
SFTP_TIMEOUT = 300
SFTP_CHUNK = 32768  # paramiko's largest SFTP read/write request
SFTP_READ_WINDOW = 8 * MIB  # read-ahead: requests in flight at once, and the most buffered
SFTP_CLIENTS = ("auto", "openssh", "paramiko")  # the SSH transport under paramiko's SFTP; auto: openssh when it can
# ssh's words for a server it could not reach at all (not a refused key or host key, which paramiko then explains)
UNREACHABLE = ("Connection refused", "Connection timed out", "No route to host", "Could not resolve hostname", "Network is unreachable")


def openssh_argv(ssh, host, port, user, key_file, known_hosts, home):
    """``ssh`` running the server's sftp subsystem (no shell needed), as strict as the paramiko transport is.

    Only the host keys paramiko would load are trusted (known_hosts, or ~/.ssh/known_hosts and
    /etc/ssh/ssh_known_hosts), nothing is written to them, no prompt, no ssh_config (paramiko reads none either);
    with a key_file that key is the only identity. None when a path cannot be passed to ssh's options safely.
    """
    if known_hosts:
        user_files, global_files = known_hosts, "/dev/null"
    else:
        user_files, global_files = os.path.join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"
    paths = [user_files, global_files] + ([key_file] if key_file else [])
    if any(bad in path for path in paths for bad in ('"', "\n", " ", "%")):  # would be read as ssh_config syntax
        return None
    argv = [ssh, "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no",
            "-o", "UserKnownHostsFile=" + user_files, "-o", "GlobalKnownHostsFile=" + global_files,
            "-o", "ConnectTimeout=%d" % SSH_TIMEOUT, "-o", "ServerAliveInterval=30", "-o", "LogLevel=ERROR",
            "-o", "ForwardAgent=no", "-o", "ClearAllForwardings=yes", "-p", str(port), "-l", user]
    if key_file:
        argv += ["-o", "IdentitiesOnly=yes", "-o", "IdentityFile=" + key_file]
    return argv + ["-s", "--", host, "sftp"]


class _OpenSshPipe:
    """The socket paramiko's SFTPClient talks through: the stdin and stdout of an ``ssh -s sftp`` process."""

    def __init__(self, argv):
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0, close_fds=True)
        self._out, self._in = self._proc.stdin.fileno(), self._proc.stdout.fileno()

    def send(self, data):
        return os.write(self._out, data)

    def recv(self, size):
        # a dead or stuck server must not hang the play forever (as the paramiko channel's timeout)
        if not select.select([self._in], [], [], SFTP_TIMEOUT)[0]:
            raise socket.timeout("no answer from the SFTP server in %d s" % SFTP_TIMEOUT)
        return os.read(self._in, size)

    def recv_ready(self):  # pipelined writes collect the replies waiting here now and then
        return bool(select.select([self._in], [], [], 0)[0])

    def get_name(self):
        return "openssh"

    def close(self):
        for stream in (self._proc.stdin, self._proc.stdout):
            quietly(stream.close)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        quietly(self._stderr.close)

    def failure(self):
        """ssh's own words on why it stopped (one line), once it has."""
        try:
            self._proc.wait(timeout=5)
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return "ssh did not say why"
        return lines[-1] if lines else "ssh exited with %s" % self._proc.returncode


class _RejectUnknownHost:
    """paramiko's missing-host-key policy: unknown hosts fail, with the fingerprint to verify out of band."""

    def __init__(self, source):
        self.source = source

    def missing_host_key(self, client, hostname, key):
        digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
        raise PgdrError(
            "host key of %s is not in %s: verify its fingerprint out of band, then add it (ssh-keyscan) or set repository.known_hosts"
            % (hostname, self.source),
            host_key_type=key.get_name(),
            host_key_fingerprint="SHA256:%s" % digest,
        )


SFTP_FSYNC = "fsync@openssh.com"


def _sftp_fsync(fileobj, what, key):
    """Ask the server to fsync an open file (OpenSSH's fsync@openssh.com); raise PgdrError if it does not confirm.

    paramiko has no fsync call (2.12 to 5.x), so the extended request goes out by hand on the file's own session,
    through paramiko's private ``_request``: that stays in this file, the only one that knows paramiko.
    A server without the extension answers "unsupported" (SSH_FX_OP_UNSUPPORTED): the write fails, because
    reporting it stored would let PostgreSQL recycle a WAL segment that a power loss on the server can still lose.
    """
    try:
        fileobj.sftp._request(SFTP_CMD_EXTENDED, SFTP_FSYNC, fileobj.handle)  # raises IOError unless the status is OK
    except (OSError, EOFError) as exc:
        raise PgdrError(
            "writing %s failed: the SFTP server did not confirm %s (%s), so the copy may not survive a power loss on the server; "
            "use a server that supports it (OpenSSH sftp-server 6.5 or later)" % (what, SFTP_FSYNC, exc),
            key=key,
        ) from exc


def _finish_pipelined(fileobj):
    """Wait for the reply to every pipelined write still in flight and raise the first failure.

    paramiko's close() discards those replies, errors such as "no space left" included (2.12 to 5.x),
    which would let a truncated file be renamed into place; its private ``_reqs`` and ``_read_response`` are the
    only way to collect them (used here only, like ``_request`` above).
    """
    fileobj.flush()
    pending = fileobj._reqs
    while pending:
        fileobj.sftp._read_response(pending.popleft())  # raises IOError if the write failed


class _SftpReader:
    """Reads ahead in windows of parallel requests (paramiko's readv): fast over latency, bounded memory."""

    def __init__(self, fileobj, size):
        self._file = fileobj
        self._size = size
        self._offset = 0  # where the next window starts
        self._pieces = iter(())
        self._piece = b""
        self._pos = 0

    def _next_window(self):
        end = min(self._offset + SFTP_READ_WINDOW, self._size)
        chunks = [(start, min(SFTP_CHUNK, end - start)) for start in range(self._offset, end, SFTP_CHUNK)]
        self._offset = end
        return self._file.readv(chunks) if chunks else None

    def read(self, size=-1):
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(SFTP_READ_WINDOW), b""))
        while self._pos >= len(self._piece):
            piece = next(self._pieces, None)
            if piece is None:
                window = self._next_window()
                if window is None:  # at the end; stays there for later reads
                    return b""
                self._pieces = window
                continue
            self._piece, self._pos = piece, 0
        data = self._piece[self._pos:self._pos + size]
        self._pos += len(data)
        return data


class SftpRepository(Repository):
    """A folder on an SSH server, reached with paramiko (key authentication, strict host keys)."""

    kind = "sftp"
    _hint = "check the connection, free space and the permissions of the repository folder on the server"

    def __init__(self, host, path, port=22, user="root", key_file=None, known_hosts=None, client="auto"):
        if not HAS_PARAMIKO:
            raise PgdrError("repository type sftp needs the Python library paramiko on the managed host: install python3-paramiko (or pip install paramiko)")
        if not posixpath.isabs(path):
            raise PgdrError("repository.path must be an absolute path for type sftp, not %r" % path)
        if not 0 < int(port) < 65536:
            raise PgdrError("repository.port must be between 1 and 65535, not %s" % port)
        for option, value in (("key_file", key_file), ("known_hosts", known_hosts)):
            if value and not os.path.isfile(value):
                raise PgdrError("repository.%s %s does not exist (or is not a file) on the host the module runs on" % (option, value))
        self.host = host
        self.port = int(port)
        self.user = user
        self.root = posixpath.normpath(path)
        self.key_file = key_file
        self.known_hosts = known_hosts
        if client not in SFTP_CLIENTS:
            raise ValueError("client must be one of %s" % ", ".join(SFTP_CLIENTS))
        self.client = client  # after the first connect: the transport in use, openssh or paramiko
        self._ssh = None  # the paramiko transport's client, when that is in use
        self._sftp = None
        self._openssh_failure = None  # why ssh could not be used (the message when client="openssh")
        self._errors = (OSError, EOFError, paramiko.SSHException)

    def describe(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "sftp://%s@%s:%d%s" % (self.user, host, self.port, self.root)

    def location(self, key):
        return "%s/%s" % (self.describe().rstrip("/"), clean_key(key, allow_root=True))

    @property
    def _session(self):
        """The SFTP session for reads, listings and renames (writers open their own), opened on first use."""
        if self._sftp is None:
            self._connect()
        return self._sftp

    def _connect(self):
        # the known_hosts files are read as paramiko reads them whatever the transport: one that cannot be read, or has a
        # broken line, is a clear error before connecting (ssh would skip such a line)
        self._trust(paramiko.SSHClient())
        if self.client in ("auto", "openssh") and self._connect_openssh():
            return
        if self._openssh_failure and any(cause in self._openssh_failure for cause in UNREACHABLE):
            # paramiko would only wait for the same server a second time; transient: a server that did not answer, which
            # pgdr-wal fetch retries (wal/pgdr_wal.py is_transient) rather than ending recovery
            raise PgdrError(
                "cannot open an SFTP session to %s:%d: %s; check repository.host, repository.port and that sshd with the sftp subsystem runs there"
                % (self.host, self.port, self._openssh_failure),
                transient=True,
            )
        if self.client == "openssh":
            raise PgdrError(
                "cannot open an SFTP session to %s:%d with OpenSSH's client: %s; check ssh, the host key in known_hosts and repository.key_file"
                % (self.host, self.port, self._openssh_failure)
            )
        self._connect_paramiko()

    def _openssh_argv(self):
        ssh = shutil.which("ssh")
        if ssh is None:
            return None
        return openssh_argv(ssh, self.host, self.port, self.user, self.key_file, self.known_hosts, os.path.expanduser("~"))

    def _connect_openssh(self):
        """The session over OpenSSH's client; False (with the reason kept) when it cannot be had."""
        argv = self._openssh_argv()
        if argv is None:
            self._openssh_failure = "no ssh client, or a path ssh's options cannot hold"
            return False
        try:
            self._sftp = self._openssh_session(argv)
        except self._errors as exc:
            self._openssh_failure = str(exc)
            return False
        self.client = "openssh"
        return True

    def _openssh_session(self, argv):
        pipe = _OpenSshPipe(argv)
        try:
            sftp = paramiko.SFTPClient(pipe)
        except self._errors as exc:
            why = pipe.failure()
            pipe.close()
            raise paramiko.SSHException(why if why.startswith("ssh:") else "ssh: " + why) from exc
        return sftp  # its close() closes the pipe and waits for ssh

    def _open_session(self):
        """A further SFTP session on the transport in use (writers stream on one of their own)."""
        if self.client == "openssh":
            return self._openssh_session(self._openssh_argv())
        return self._new_session(self._ssh)

    def _connect_paramiko(self):
        ssh = paramiko.SSHClient()
        where = "%s:%d" % (self.host, self.port)
        source = self._trust(ssh)
        try:
            try:
                ssh.connect(
                    self.host,
                    port=self.port,
                    username=self.user,
                    key_filename=self.key_file,
                    # with a key_file use only that key (like ssh -o IdentitiesOnly=yes)
                    allow_agent=not self.key_file,
                    look_for_keys=not self.key_file,
                    timeout=SSH_TIMEOUT,
                    banner_timeout=SSH_TIMEOUT,
                    auth_timeout=SSH_TIMEOUT,
                )
                ssh.get_transport().set_keepalive(30)
                sftp = self._new_session(ssh)
            except paramiko.BadHostKeyException as exc:
                raise PgdrError(
                    "host key of %s does not match the one in %s: if the server was re-keyed, verify and update known_hosts; otherwise do not connect"
                    % (where, source)
                ) from exc
            except paramiko.AuthenticationException as exc:
                raise PgdrError(
                    "SSH authentication as %s to %s failed: check repository.user and repository.key_file (its public key must be in authorized_keys)"
                    % (self.user, where)
                ) from exc
            except self._errors as exc:
                raise PgdrError(
                    "cannot open an SFTP session to %s: %s; check repository.host, repository.port and that sshd with the sftp subsystem runs there"
                    % (where, exc)
                ) from exc
        except PgdrError:
            ssh.close()
            raise
        self._ssh, self._sftp = ssh, sftp
        self.client = "paramiko"

    def _trust(self, ssh):
        """Load the known host keys; returns where they came from, for messages."""
        if self.known_hosts:
            files, source = [self.known_hosts], self.known_hosts
        else:
            files = [path for path in (os.path.expanduser("~/.ssh/known_hosts"), "/etc/ssh/ssh_known_hosts") if os.path.isfile(path)]
            source = "~/.ssh/known_hosts or /etc/ssh/ssh_known_hosts"
        for path in files:
            try:
                # get_host_keys().load never writes back, unlike load_host_keys
                ssh.get_host_keys().load(path)
            except OSError as exc:
                raise PgdrError("cannot read known_hosts file %s: %s" % (path, exc.strerror or exc)) from exc
            except paramiko.hostkeys.InvalidHostKey as exc:
                raise PgdrError("known_hosts file %s has an invalid line (%.60s): fix or remove it" % (path, exc.line.strip())) from exc
        ssh.set_missing_host_key_policy(_RejectUnknownHost(source))
        return source

    @staticmethod
    def _new_session(ssh):
        sftp = paramiko.SFTPClient.from_transport(ssh.get_transport())
        if sftp is None:
            raise paramiko.SSHException("the server refused an SFTP session")
        sftp.get_channel().settimeout(SFTP_TIMEOUT)  # a dead server must not hang the play forever
        return sftp

    def close(self):
        if self._sftp is not None:
            quietly(self._sftp.close)
        if self._ssh is not None:
            quietly(self._ssh.close)
        self._ssh = self._sftp = None

    def _path(self, key, allow_root=False):
        key = clean_key(key, allow_root)
        return posixpath.join(self.root, key) if key else self.root

    @contextlib.contextmanager
    def _translated(self, action, key):
        try:
            yield
        except self._errors as exc:
            hint = "check that repository.path exists on the server" if isinstance(exc, FileNotFoundError) else self._hint
            raise PgdrError("%s %s in %s failed: %s; %s" % (action, key or "/", self.describe(), exc, hint), key=key) from exc

    def _lstat(self, path):
        try:
            return self._session.lstat(path)
        except FileNotFoundError:
            return None

    def _makedirs(self, folder):
        found = self._lstat(folder)
        if found is not None and stat.S_ISDIR(found.st_mode):
            return
        parent = posixpath.dirname(folder)
        if parent != folder:
            self._makedirs(parent)
        try:
            self._session.mkdir(folder, DIR_MODE)
        except OSError:
            found = self._lstat(folder)  # created meanwhile by another writer is fine
            if found is None or not stat.S_ISDIR(found.st_mode):
                raise

    def _rename(self, temp, path):
        try:
            self._session.posix_rename(temp, path)
        except OSError as exc:
            if exc.errno is not None:  # a real error, not "extension unsupported"
                raise
            # without posix-rename@openssh.com; a plain SFTP rename refuses to replace an existing key, which is the safe failure
            self._session.rename(temp, path)

    @contextlib.contextmanager
    def open_writer(self, key):
        path = self._path(key)
        temp = temp_name(path)
        with self._translated("creating", key):
            self._makedirs(posixpath.dirname(path))
            # A session of its own: paramiko drops the replies to pipelined writes when other requests
            # share the session (and then waits for them forever), so reads and listings go elsewhere.
            session = self._open_session()
            try:
                fileobj = session.open(temp, "wb", bufsize=SFTP_CHUNK)
                fileobj.chmod(FILE_MODE)  # before any data is in it
            except self._errors:
                quietly(session.close)
                quietly(self._session.remove, temp)
                raise
            fileobj.set_pipelined(True)  # writes stream without waiting for each reply
        stream = Stream(fileobj, self._errors, "%s in %s" % (key, self.describe()), self._hint)
        done = False
        try:
            yield stream
            with self._translated("finishing", key):
                _finish_pipelined(fileobj)
                # The data is durable once the server fsyncs it, before close. The rename below is not: SFTP cannot
                # fsync a folder (fsync@openssh.com takes only a file handle), so the new name is as durable as the
                # server's file system makes a rename (ext4 and xfs journal it with the next commit).
                _sftp_fsync(fileobj, "%s in %s" % (key, self.describe()), key)
                fileobj.close()
                stored = self._session.stat(temp).st_size
                if stored != stream.tell():
                    msg = "writing %s in %s failed: sent %d bytes, the server stored %d; %s" % (key, self.describe(), stream.tell(), stored, self._hint)
                    raise PgdrError(msg, key=key)
                self._rename(temp, path)
            done = True
        finally:
            if not done:
                quietly(fileobj.close)  # now, while its session is open, not when garbage collected
            quietly(session.close)
            if not done:
                quietly(self._session.remove, temp)

    @contextlib.contextmanager
    def open_reader(self, key):
        path = self._path(key)
        with self._translated("opening", key):
            try:
                fileobj = self._session.open(path, "rb")
            except FileNotFoundError as exc:
                raise self._not_found(key) from exc
            try:
                size = fileobj.stat().st_size
            except self._errors:
                quietly(fileobj.close)
                raise
        try:
            yield Stream(_SftpReader(fileobj, size), self._errors, "%s in %s" % (key, self.describe()), self._hint)
        finally:
            quietly(fileobj.close)

    def exists(self, key):
        with self._translated("checking", key):
            found = self._lstat(self._path(key))
        return found is not None and stat.S_ISREG(found.st_mode)

    def size(self, key):
        with self._translated("checking", key):
            found = self._lstat(self._path(key))
        if found is None or not stat.S_ISREG(found.st_mode):
            raise self._not_found(key)
        return found.st_size

    def _listdir(self, path):
        try:
            return self._session.listdir_attr(path)
        except FileNotFoundError:
            return []

    def list_dirs(self, key):
        path = self._path(key, allow_root=True)
        with self._translated("listing", key):
            return sorted(entry.filename for entry in self._listdir(path) if stat.S_ISDIR(entry.st_mode))

    def list_entries(self, key):
        path = self._path(key, allow_root=True)
        with self._translated("listing", key):
            entries = self._listdir(path)
        found = [
            Entry(entry.filename, entry.st_size, utc(entry.st_mtime))
            for entry in entries
            if stat.S_ISREG(entry.st_mode) and TEMP_MARK not in entry.filename
        ]
        return sorted(found)

    def list_files(self, key):
        key = clean_key(key, allow_root=True)
        found = []

        def walk(prefix):
            for entry in self._listdir(self._path(prefix, allow_root=True)):
                child = "%s/%s" % (prefix, entry.filename) if prefix else entry.filename
                if stat.S_ISDIR(entry.st_mode):
                    walk(child)
                elif TEMP_MARK not in entry.filename:
                    found.append(child)

        with self._translated("listing", key):
            walk(key)
        return sorted(found)

    def delete(self, key):
        key = clean_key(key)
        with self._translated("deleting", key):
            try:
                self._session.remove(self._path(key))
            except FileNotFoundError:
                pass

    def delete_tree(self, key):
        key = self._tree_key(key)

        def remove(path, attrs):
            if stat.S_ISDIR(attrs.st_mode):
                for entry in self._listdir(path):
                    remove(posixpath.join(path, entry.filename), entry)
                self._session.rmdir(path)
            else:
                self._session.remove(path)

        with self._translated("deleting", key):
            path = self._path(key)
            found = self._lstat(path)
            if found is not None:
                remove(path, found)
