# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup repositories: one interface, three backends (local path, SFTP, S3-compatible).

Paths inside a repository are always relative, '/'-separated keys such as
``<cluster>/<backup_id>/db_sales.dump``; each backend maps them onto its own
root (a folder, an SFTP folder, a bucket prefix). Writers stream: nothing is
staged as a whole copy on local disk, and a writer that does not finish
cleanly leaves nothing that looks complete (local/SFTP: a temporary name that
is removed; S3: the multipart upload is aborted).

Use ``storage_argument_spec()`` in a module's argument spec (documented by the
``pgdr.backup.storage`` doc fragment) and ``repository_from_params()`` to get
a backend; every failure is a ``PgdrError``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import posixpath
import secrets
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

try:
    import paramiko
    from paramiko.sftp import CMD_EXTENDED as SFTP_CMD_EXTENDED

    HAS_PARAMIKO = True
    PARAMIKO_IMPORT_ERROR = None
except ImportError as exc:  # only the sftp backend needs it
    paramiko = None
    SFTP_CMD_EXTENDED = None
    HAS_PARAMIKO = False
    PARAMIKO_IMPORT_ERROR = exc

try:
    import boto3
    import botocore.config
    import botocore.exceptions

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # only the s3 backend needs it
    boto3 = None
    botocore = None
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc

REPOSITORY_TYPES = ["local", "sftp", "s3"]
ADDRESSING_STYLES = ["path", "virtual", "auto"]

DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_MARK = ".partial-"  # <key>.partial-<random>: an unfinished write, never listed as an object
MIB = 1024 * 1024

SSH_TIMEOUT = 30
SFTP_TIMEOUT = 300
SFTP_CHUNK = 32768  # paramiko's largest SFTP read/write request
SFTP_READ_WINDOW = 8 * MIB  # read-ahead: requests in flight at once, and the most buffered

S3_MIN_PART_MB = 5  # S3's minimum for every part but the last
S3_MAX_PART_MB = 5120
S3_MAX_PARTS = 10000
S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts


def location_options():
    """Where a backend is: the suboptions ``repository`` and the WAL ``archive`` option share (without ``type``)."""
    return dict(
        path=dict(type="str"),
        host=dict(type="str"),
        port=dict(type="int", default=22),
        user=dict(type="str", default="root"),
        key_file=dict(type="path"),
        known_hosts=dict(type="path"),
        endpoint_url=dict(type="str"),
        region=dict(type="str"),
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        access_key=dict(type="str", no_log=True),
        secret_key=dict(type="str", no_log=True),
        addressing_style=dict(type="str", default="path", choices=ADDRESSING_STYLES),
    )


def storage_argument_spec():
    """The ``repository`` option every module that reads or writes backups accepts."""
    options = dict(type=dict(type="str", required=True, choices=REPOSITORY_TYPES), **location_options())
    options["part_size_mb"] = dict(type="int", default=64)
    return dict(repository=dict(type="dict", required=True, options=options))


@dataclasses.dataclass(frozen=True)
class RepositoryOptions:
    """The ``repository`` option (storage_argument_spec), typed."""

    type: str
    path: Optional[str]
    host: Optional[str]
    port: Optional[int]
    user: Optional[str]
    key_file: Optional[str]
    known_hosts: Optional[str]
    endpoint_url: Optional[str]
    region: Optional[str]
    bucket: Optional[str]
    prefix: Optional[str]
    access_key: Optional[str]
    secret_key: Optional[str]
    addressing_style: Optional[str]
    part_size_mb: Optional[int]


def open_repository(options):
    """The backend for a RepositoryOptions."""
    return repository_from_params(dataclasses.asdict(options))


def repository_from_params(repo):
    """The backend for a ``repository`` dict (as validated by ``storage_argument_spec``)."""
    repo = repo or {}
    kind = repo.get("type")

    def required(*names):
        for name in names:
            if repo.get(name) in (None, ""):
                raise PgdrError("repository.%s is required for type %s" % (name, kind))

    if kind == "local":
        required("path")
        return LocalRepository(repo["path"])
    if kind == "sftp":
        required("host", "path")
        return SftpRepository(
            repo["host"],
            repo["path"],
            port=repo.get("port") or 22,
            user=repo.get("user") or "root",
            key_file=repo.get("key_file"),
            known_hosts=repo.get("known_hosts"),
        )
    if kind == "s3":
        required("bucket")
        return S3Repository(
            repo["bucket"],
            prefix=repo.get("prefix") or "",
            endpoint_url=repo.get("endpoint_url"),
            region=repo.get("region"),
            access_key=repo.get("access_key"),
            secret_key=repo.get("secret_key"),
            addressing_style=repo.get("addressing_style") or "path",
            part_size_mb=repo.get("part_size_mb") or 64,
        )
    raise PgdrError("repository.type must be one of %s, not %r" % (", ".join(REPOSITORY_TYPES), kind))


def clean_key(key, allow_root=False):
    """``key`` normalised ('a//b/' -> 'a/b'); refuses anything that could leave the repository root."""
    if not isinstance(key, str):
        raise PgdrError("repository key must be a string, not %s" % type(key).__name__)
    parts = [part for part in key.split("/") if part]
    if key.startswith("/") or any(part in (".", "..") for part in parts):
        raise PgdrError("invalid repository key %r: keys are relative '/' paths without '.' or '..'" % key)
    if any(TEMP_MARK in part for part in parts):
        raise PgdrError("invalid repository key %r: names containing %r are reserved for unfinished writes" % (key, TEMP_MARK))
    if not parts and not allow_root:
        raise PgdrError("an empty repository key names no object: give a key such as <cluster>/<backup_id>/manifest.json")
    return "/".join(parts)


def _temp_name(path):
    return "%s%s%s" % (path, TEMP_MARK, secrets.token_hex(8))


def _content_md5(data):
    # the store checks each upload against it, whatever checksums the boto3 version adds
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _quietly(func, *args, **kwargs):
    """Cleanup after a failure: its own errors must not hide the one that caused it."""
    try:
        func(*args, **kwargs)
    except Exception:
        pass


class _Stream:
    """A file-like wrapper whose I/O errors become PgdrError; a caller's own exceptions are left alone."""

    def __init__(self, raw, errors, where, hint):
        self._raw = raw
        self._errors = errors
        self._where = where
        self._hint = hint
        self._pos = 0

    def _fail(self, action, exc):
        return PgdrError("%s %s failed: %s; %s" % (action, self._where, exc, self._hint))

    def write(self, data):
        try:
            self._raw.write(data)
        except self._errors as exc:
            raise self._fail("writing", exc) from exc
        self._pos += len(data)
        return len(data)

    def read(self, size=-1):
        try:
            # read() rather than read(-1): an old urllib3 reads -1 as "until the server closes the connection"
            data = self._raw.read() if size is None or size < 0 else self._raw.read(size)
        except self._errors as exc:
            raise self._fail("reading", exc) from exc
        self._pos += len(data)
        return data

    def tell(self):
        return self._pos


class Repository:
    """The interface every backend implements. Keys are relative '/' paths."""

    kind = None  # "local", "sftp", "s3"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def describe(self):
        """Where the repository is, for messages and results; never includes secrets."""
        raise NotImplementedError

    def location(self, key):
        """The URL (or local path) of ``key``, for results: where a user finds a set; never includes secrets."""
        raise NotImplementedError

    def open_writer(self, key):
        """Context manager yielding a binary file-like object with ``write(bytes)`` and ``tell()``.

        On normal exit the object becomes visible under ``key`` (rename or
        multipart completion); on an exception nothing is left under ``key``
        and the temporary data is removed or aborted, then the exception
        propagates. Files are created 0600 and folders 0700 where the backend
        has modes.
        """
        raise NotImplementedError

    def put_bytes_atomic(self, key, data):
        """Write small ``data`` so that readers see either nothing or all of it (the manifest)."""
        with self.open_writer(key) as writer:
            writer.write(data)

    def open_reader(self, key):
        """Context manager yielding a binary file-like object with ``read(n)`` (streaming).

        ``read(n)`` may return fewer than ``n`` bytes; ``b''`` means the end.
        A missing key raises PgdrError.
        """
        raise NotImplementedError

    def get_bytes(self, key):
        """The whole content of a small object (the manifest)."""
        with self.open_reader(key) as reader:
            return reader.read()

    def exists(self, key):
        """Whether an object (not a folder) is stored under ``key``."""
        raise NotImplementedError

    def size(self, key):
        """Size in bytes of the object under ``key``; PgdrError if there is none."""
        raise NotImplementedError

    def list_dirs(self, key):
        """Names of the immediate children "folders" under ``key`` (e.g. backup ids under a cluster), sorted."""
        raise NotImplementedError

    def list_files(self, key):
        """Keys (from the repository root, ready for ``open_reader``) of every object below ``key``, recursively, sorted.

        Unfinished writes are not listed; an empty ``key`` means the whole repository.
        """
        raise NotImplementedError

    def delete_tree(self, key):
        """Remove ``key`` and everything below it; no error if it does not exist.

        The repository root itself (an empty key) is refused.
        """
        raise NotImplementedError

    def close(self):
        """Release connections (SFTP session, S3 client)."""

    def _not_found(self, key):
        return PgdrError("%s not found in %s: check the key and that the backup that writes it finished" % (key, self.describe()), key=key)

    @staticmethod
    def _tree_key(key):
        key = clean_key(key, allow_root=True)
        if not key:
            raise PgdrError("refusing to delete the whole repository: give the key of a cluster or backup folder")
        return key


class LocalRepository(Repository):
    """A folder on the host the module runs on."""

    kind = "local"
    _hint = "check free space and the permissions of the repository folder"

    def __init__(self, path):
        if not os.path.isabs(path):
            raise PgdrError("repository.path must be an absolute path for type local, not %r" % path)
        self.root = os.path.normpath(path)

    def describe(self):
        return "local:%s" % self.root

    def location(self, key):
        return self._path(key, allow_root=True)

    def _path(self, key, allow_root=False):
        key = clean_key(key, allow_root)
        return os.path.join(self.root, *key.split("/")) if key else self.root

    def _fail(self, action, key, exc):
        return PgdrError("%s %s in %s failed: %s; %s" % (action, key or "/", self.describe(), exc.strerror or exc, self._hint), key=key)

    @staticmethod
    def _makedirs(folder):
        # os.makedirs would give intermediate folders the umask's mode, not 0700
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for path in reversed(missing):
            try:
                os.mkdir(path, DIR_MODE)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise

    @staticmethod
    def _fsync_dir(folder):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open_writer(self, key):
        path = self._path(key)
        folder = os.path.dirname(path)
        temp = _temp_name(path)
        try:
            self._makedirs(folder)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise self._fail("creating", key, exc) from exc
        done = False
        try:
            with os.fdopen(fd, "wb") as fileobj:
                yield _Stream(fileobj, OSError, "%s in %s" % (key, self.describe()), self._hint)
                try:
                    fileobj.flush()
                    os.fsync(fileobj.fileno())
                    os.rename(temp, path)
                    self._fsync_dir(folder)  # the rename itself must survive a crash too
                except OSError as exc:
                    raise self._fail("finishing", key, exc) from exc
            done = True
        finally:
            if not done:
                _quietly(os.unlink, temp)

    @contextlib.contextmanager
    def open_reader(self, key):
        try:
            fileobj = open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise self._fail("opening", key, exc) from exc
        with fileobj:
            yield _Stream(fileobj, OSError, "%s in %s" % (key, self.describe()), self._hint)

    def _stat(self, key):
        try:
            return os.stat(self._path(key))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail("checking", key, exc) from exc

    def exists(self, key):
        found = self._stat(key)
        return found is not None and stat.S_ISREG(found.st_mode)

    def size(self, key):
        found = self._stat(key)
        if found is None or not stat.S_ISREG(found.st_mode):
            raise self._not_found(key)
        return found.st_size

    def list_dirs(self, key):
        try:
            with os.scandir(self._path(key, allow_root=True)) as entries:
                return sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._fail("listing", key, exc) from exc

    def list_files(self, key):
        key = clean_key(key, allow_root=True)
        top = self._path(key, allow_root=True)
        found = []

        def fail(exc):
            if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                raise self._fail("listing", key, exc) from exc

        for folder, _dirs, files in os.walk(top, onerror=fail):
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            found.extend(name if rel == "." else "%s/%s" % (rel, name) for name in files if TEMP_MARK not in name)
        return sorted(found)

    def delete_tree(self, key):
        key = self._tree_key(key)
        path = self._path(key)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail("deleting", key, exc) from exc


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

    paramiko has no fsync call (2.12 to 5.x), so the extended request goes out by hand on the file's own session.
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
    which would let a truncated file be renamed into place.
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

    def __init__(self, host, path, port=22, user="root", key_file=None, known_hosts=None):
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
        self._ssh = None
        self._sftp = None
        self._errors = (OSError, EOFError, paramiko.SSHException)

    def describe(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "sftp://%s@%s:%d%s" % (self.user, host, self.port, self.root)

    def location(self, key):
        return "%s/%s" % (self.describe().rstrip("/"), clean_key(key, allow_root=True))

    @property
    def sftp(self):
        """The SFTP session, opened on first use."""
        if self._sftp is None:
            self._connect()
        return self._sftp

    def _connect(self):
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
            _quietly(self._sftp.close)
        if self._ssh is not None:
            _quietly(self._ssh.close)
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
            return self.sftp.lstat(path)
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
            self.sftp.mkdir(folder, DIR_MODE)
        except OSError:
            found = self._lstat(folder)  # created meanwhile by another writer is fine
            if found is None or not stat.S_ISDIR(found.st_mode):
                raise

    def _rename(self, temp, path):
        try:
            self.sftp.posix_rename(temp, path)
        except OSError as exc:
            if exc.errno is not None:  # a real error, not "extension unsupported"
                raise
            # without posix-rename@openssh.com; a plain SFTP rename refuses to replace an existing key, which is the safe failure
            self.sftp.rename(temp, path)

    @contextlib.contextmanager
    def open_writer(self, key):
        path = self._path(key)
        temp = _temp_name(path)
        with self._translated("creating", key):
            self._makedirs(posixpath.dirname(path))
            # A session of its own: paramiko drops the replies to pipelined writes when other requests
            # share the session (and then waits for them forever), so reads and listings go elsewhere.
            session = self._new_session(self._ssh)
            try:
                fileobj = session.open(temp, "wb", bufsize=SFTP_CHUNK)
                fileobj.chmod(FILE_MODE)  # before any data is in it
            except self._errors:
                _quietly(session.close)
                _quietly(self.sftp.remove, temp)
                raise
            fileobj.set_pipelined(True)  # writes stream without waiting for each reply
        stream = _Stream(fileobj, self._errors, "%s in %s" % (key, self.describe()), self._hint)
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
                stored = self.sftp.stat(temp).st_size
                if stored != stream.tell():
                    msg = "writing %s in %s failed: sent %d bytes, the server stored %d; %s" % (key, self.describe(), stream.tell(), stored, self._hint)
                    raise PgdrError(msg, key=key)
                self._rename(temp, path)
            done = True
        finally:
            if not done:
                _quietly(fileobj.close)  # now, while its session is open, not when garbage collected
            _quietly(session.close)
            if not done:
                _quietly(self.sftp.remove, temp)

    @contextlib.contextmanager
    def open_reader(self, key):
        path = self._path(key)
        with self._translated("opening", key):
            try:
                fileobj = self.sftp.open(path, "rb")
            except FileNotFoundError as exc:
                raise self._not_found(key) from exc
            try:
                size = fileobj.stat().st_size
            except self._errors:
                _quietly(fileobj.close)
                raise
        try:
            yield _Stream(_SftpReader(fileobj, size), self._errors, "%s in %s" % (key, self.describe()), self._hint)
        finally:
            _quietly(fileobj.close)

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
            return self.sftp.listdir_attr(path)
        except FileNotFoundError:
            return []

    def list_dirs(self, key):
        path = self._path(key, allow_root=True)
        with self._translated("listing", key):
            return sorted(entry.filename for entry in self._listdir(path) if stat.S_ISDIR(entry.st_mode))

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

    def delete_tree(self, key):
        key = self._tree_key(key)

        def remove(path, attrs):
            if stat.S_ISDIR(attrs.st_mode):
                for entry in self._listdir(path):
                    remove(posixpath.join(path, entry.filename), entry)
                self.sftp.rmdir(path)
            else:
                self.sftp.remove(path)

        with self._translated("deleting", key):
            path = self._path(key)
            found = self._lstat(path)
            if found is not None:
                remove(path, found)


class _S3Writer:
    """Streams into a multipart upload; an object smaller than a part is one put_object.

    A full part is uploaded by a background thread while the next one fills, so
    the producer (pg_dump behind a pipe) never waits for the network unless two
    parts are pending: memory stays at two parts. A failed part upload is raised
    by the next write or by finish.
    """

    def __init__(self, repo, key):
        self._repo = repo
        self._key = key
        self._name = repo._object(key)
        self._buf = bytearray()
        self._upload_id = None
        self._parts = []
        self._written = 0
        self._uploader = None
        self._pending = None  # the future of the part being uploaded

    def write(self, data):
        view = memoryview(data).cast("B")
        written = len(view)
        part_size = self._repo.part_size
        while view:
            room = part_size - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) >= part_size:
                self._upload_part()
        self._written += written
        return written

    def tell(self):
        return self._written

    def _upload_part(self):
        what = "uploading %s" % self._key
        if self._upload_id is None:
            self._upload_id = self._repo._call("create_multipart_upload", what, Key=self._name)["UploadId"]
            self._uploader = ThreadPoolExecutor(max_workers=1)
        number = len(self._parts) + 1
        if number > S3_MAX_PARTS:
            raise PgdrError(
                "%s is larger than %d parts of %d MiB: raise repository.part_size_mb" % (self._key, S3_MAX_PARTS, self._repo.part_size // MIB), key=self._key
            )
        body, self._buf = bytes(self._buf), bytearray()
        self._wait_pending()
        part = dict(Key=self._name, UploadId=self._upload_id, PartNumber=number, Body=body, ContentMD5=_content_md5(body))
        self._parts.append({"ETag": None, "PartNumber": number})
        self._pending = self._uploader.submit(self._send_part, part, self._parts[-1], what)

    def _send_part(self, part, record, what):
        record["ETag"] = self._repo._call("upload_part", what, **part)["ETag"]

    def _wait_pending(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # re-raises the upload's PgdrError

    def finish(self):
        what = "uploading %s" % self._key
        if self._upload_id is None:
            self._repo._call("put_object", what, Key=self._name, Body=self._buf, ContentMD5=_content_md5(self._buf))
            return
        if self._buf:
            self._upload_part()
        self._wait_pending()
        self._uploader.shutdown()
        self._repo._call("complete_multipart_upload", what, Key=self._name, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})

    def abort(self):
        self._buf = bytearray()
        if self._uploader is not None:
            with contextlib.suppress(Exception):  # the original failure is the one to report
                self._wait_pending()
            self._uploader.shutdown()
        if self._upload_id is not None:
            # if even this fails, the parts stay invisible until a bucket lifecycle rule removes them
            _quietly(self._repo.client.abort_multipart_upload, Bucket=self._repo.bucket, Key=self._name, UploadId=self._upload_id)


_RAISE = object()


class S3Repository(Repository):
    """A bucket prefix on AWS S3 or an S3-compatible store (MinIO, SeaweedFS, Ceph RGW, Alibaba OSS, Tencent COS)."""

    kind = "s3"

    def __init__(self, bucket, prefix="", endpoint_url=None, region=None, access_key=None, secret_key=None, addressing_style="path", part_size_mb=64):
        if not HAS_BOTO3:
            raise PgdrError("repository type s3 needs the Python library boto3 on the managed host: install python3-boto3 (or pip install boto3)")
        if not S3_MIN_PART_MB <= int(part_size_mb) <= S3_MAX_PART_MB:
            raise PgdrError("repository.part_size_mb must be between %d and %d (S3 limits), not %s" % (S3_MIN_PART_MB, S3_MAX_PART_MB, part_size_mb))
        if addressing_style not in ADDRESSING_STYLES:
            raise PgdrError("repository.addressing_style must be one of %s, not %r" % (", ".join(ADDRESSING_STYLES), addressing_style))
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.addressing_style = addressing_style
        self.part_size = int(part_size_mb) * MIB
        self._access_key = access_key
        self._secret_key = secret_key
        self._client = None
        self._bucket_seen = False

    def describe(self):
        where = "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://%s" % self.bucket
        if self.endpoint_url:
            return "%s (endpoint %s)" % (where, self.endpoint_url)
        return "%s (region %s)" % (where, self.region) if self.region else where

    def location(self, key):
        parts = [part for part in (self.prefix, clean_key(key, allow_root=True)) if part]
        return "s3://%s/%s" % (self.bucket, "/".join(parts))

    @property
    def client(self):
        """The boto3 S3 client, made on first use."""
        if self._client is None:
            options = dict(
                s3={"addressing_style": self.addressing_style},
                signature_version="s3v4",
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
            )
            if "request_checksum_calculation" in botocore.config.Config.OPTION_DEFAULTS:
                # botocore >= 1.36 adds CRC trailers to every upload, which many S3-compatible stores reject
                options.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
            try:
                session = boto3.session.Session(aws_access_key_id=self._access_key, aws_secret_access_key=self._secret_key, region_name=self.region)
                self._client = session.client("s3", endpoint_url=self.endpoint_url, config=botocore.config.Config(**options))
            except (ValueError, botocore.exceptions.BotoCoreError) as exc:
                raise self._scrub(
                    PgdrError("cannot set up an S3 client for %s: %s; check repository.endpoint_url and repository.region" % (self.describe(), exc))
                ) from exc
        return self._client

    def close(self):
        if self._client is not None:
            with contextlib.suppress(AttributeError):  # client.close() is new in botocore 1.33
                self._client.close()
        self._client = None

    def _object(self, key, allow_root=False):
        key = clean_key(key, allow_root)
        return "/".join(part for part in (self.prefix, key) if part)

    def _folder(self, key):
        name = self._object(key, allow_root=True)
        return name + "/" if name else ""

    def _scrub(self, error):
        # no store should echo a secret, but a message is no place to find out
        if self._secret_key and self._secret_key in error.msg:
            error.msg = error.msg.replace(self._secret_key, "********")
            error.args = (error.msg,)
        return error

    def _error(self, what, exc):
        where = self.describe()
        errors = botocore.exceptions
        if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
            hint = "set repository.access_key and repository.secret_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            return self._scrub(PgdrError("no S3 credentials for %s while %s: %s" % (where, what, hint)))
        if isinstance(exc, (errors.EndpointConnectionError, errors.ConnectTimeoutError)):
            return self._scrub(PgdrError("cannot reach %s while %s: %s; check repository.endpoint_url (or region) and the network" % (where, what, exc)))
        if not isinstance(exc, errors.ClientError):
            return self._scrub(PgdrError("S3 request for %s failed while %s: %s" % (where, what, exc)))
        info = exc.response.get("Error", {})
        code = str(info.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown"))
        detail = "%s %s" % (code, info.get("Message") or "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            hint = "check repository.access_key and repository.secret_key"
        elif code in ("AccessDenied", "403", "AllAccessDisabled"):
            hint = "check that the credentials may use this bucket and prefix (bucket policy, IAM)"
        elif code == "NoSuchBucket":
            hint = "create the bucket or fix repository.bucket"
        elif code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "301"):
            hint = "check repository.region (and repository.endpoint_url)"
        else:
            hint = "check repository.endpoint_url, repository.bucket and the store's logs"
        return self._scrub(PgdrError("S3 refused %s on %s (%s): %s" % (what, where, detail.strip(), hint), error_code=code))

    @staticmethod
    def _is_missing(exc):
        info = exc.response.get("Error", {})
        return str(info.get("Code")) in ("404", "NoSuchKey", "NotFound")

    def _call(self, operation, what, missing=_RAISE, **kwargs):
        """One S3 API call on this bucket, errors as PgdrError; ``missing`` is returned instead of failing on 404."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if missing is not _RAISE and self._is_missing(exc):
                return missing
            raise self._error(what, exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(what, exc) from exc

    def _pages(self, what, **kwargs):
        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(what, exc) from exc

    @contextlib.contextmanager
    def open_writer(self, key):
        writer = _S3Writer(self, key)
        done = False
        try:
            yield writer
            writer.finish()
            done = True
        finally:
            if not done:
                writer.abort()

    def put_bytes_atomic(self, key, data):
        data = bytes(data)
        self._call("put_object", "uploading %s" % key, Key=self._object(key), Body=data, ContentMD5=_content_md5(data))

    @contextlib.contextmanager
    def open_reader(self, key):
        reply = self._call("get_object", "reading %s" % key, missing=None, Key=self._object(key))
        if reply is None:
            raise self._not_found(key)
        body = reply["Body"]
        try:
            hint = "check the network and retry"
            yield _Stream(body, (botocore.exceptions.BotoCoreError, OSError), "%s in %s" % (key, self.describe()), hint)
        finally:
            _quietly(body.close)

    def _head(self, key):
        reply = self._call("head_object", "checking %s" % key, missing=None, Key=self._object(key))
        if reply is None and not self._bucket_seen:
            # HEAD answers a missing bucket with the same bare 404 as a missing key: tell them apart once
            try:
                found = self._call("head_bucket", "checking the bucket", missing=False)
            except PgdrError:
                found = None  # not allowed to ask (403): the key is just missing
            if found is False:
                msg = "bucket %s does not exist at %s: create the bucket or fix repository.bucket" % (self.bucket, self.describe())
                raise PgdrError(msg, error_code="NoSuchBucket")
            self._bucket_seen = True
        return reply

    def exists(self, key):
        return self._head(key) is not None

    def size(self, key):
        reply = self._head(key)
        if reply is None:
            raise self._not_found(key)
        return reply["ContentLength"]

    def list_dirs(self, key):
        folder = self._folder(key)
        names = []
        for page in self._pages("listing %s" % (key or "/"), Prefix=folder, Delimiter="/"):
            names.extend(entry["Prefix"][len(folder):].rstrip("/") for entry in page.get("CommonPrefixes", []))
        return sorted(name for name in names if name)

    def _names_below(self, folder, what):
        for page in self._pages(what, Prefix=folder):
            for entry in page.get("Contents", []):
                yield entry["Key"]

    def list_files(self, key):
        root = self._folder("")
        names = self._names_below(self._folder(key), "listing %s" % (key or "/"))
        # keys ending in '/' are folder markers (made by consoles, or SeaweedFS's empty folders), not objects
        return sorted(name[len(root):] for name in names if not name.endswith("/"))

    def _walk(self, folder, what, objects, folders):
        """Every object and every folder below ``folder`` (itself included), folder by folder."""
        folders.append(folder)
        for page in self._pages(what, Prefix=folder, Delimiter="/"):
            objects.extend(entry["Key"] for entry in page.get("Contents", []) if entry["Key"] != folder)
            for entry in page.get("CommonPrefixes", []):
                self._walk(entry["Prefix"], what, objects, folders)

    def _abort_uploads(self, key, what):
        """Abort the unfinished multipart uploads of ``key`` and below it: parts nobody can list as objects, but
        that the store keeps (and bills) until aborted, e.g. those of a writer that died with the store unreachable."""
        name, folder = self._object(key), self._folder(key)
        try:
            pages = list(self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=name))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(what, exc) from exc
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Key"] == name or upload["Key"].startswith(folder):
                    self._call("abort_multipart_upload", what, missing=None, Key=upload["Key"], UploadId=upload["UploadId"])

    def delete_tree(self, key):
        key = self._tree_key(key)
        what = "deleting %s" % key
        self._abort_uploads(key, what)
        objects, folders = [], []
        self._walk(self._folder(key), what, objects, folders)
        # Stores with real folders (SeaweedFS) keep them, empty, once their objects are gone, and show them only
        # to listings with a delimiter; deleting the key "<folder>/" removes one (elsewhere it is a no-op or removes
        # a console's marker object). Objects first, then folders deepest first.
        names = [self._object(key)] + objects + folders[::-1]
        for start in range(0, len(names), S3_DELETE_BATCH):
            batch = [{"Key": name} for name in names[start:start + S3_DELETE_BATCH]]
            reply = self._call("delete_objects", what, Delete={"Objects": batch, "Quiet": True})
            failed = reply.get("Errors") or []
            if failed:
                first = failed[0]
                raise PgdrError(
                    "S3 refused to delete %d objects under %s in %s (first: %s %s): check that the credentials may delete there"
                    % (len(failed), key, self.describe(), first.get("Key"), first.get("Code")),
                    error_code=first.get("Code"),
                )
