# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgdr-wal``, the program PostgreSQL runs as archive_command / restore_command for local, sftp and s3 archives.

The installer (``wal/installer.py``) packs this file and what it imports into a zipapp with its settings in
``/etc/pgdr/wal/<name>.json``::

    pgdr-wal --config FILE push %p %f     store; identical existing copy = success, different = exit 1
    pgdr-wal --config FILE fetch [--retry-window S] %f %p
                                          download (pg_receivewal's .gz copies decompressed); a missing segment falls
                                          back to %f.partial; missing = exit 1; a store that still fails after S
                                          seconds of retries = exit 126 (recovery stops with an error)
    pgdr-wal --config FILE fetch --prefetch N --parallel P %f %p
                                          the same, reading the next N segments ahead in the background into
                                          /var/spool/pgdr/<name>/, P at once (like pgBackRest's async archive-get);
                                          restore_command takes spooled segments with a shell mv before it
                                          (archive.restore_command_string)
    pgdr-wal --config FILE list [--json]  what the archive holds

It stores through the storage layer's public Repository interface (put_if_absent, open_reader, list_entries).
This file must stay importable without Ansible (it runs outside it), must not import the installer, and must
stay cheap to import: the archiver starts it once per segment, and a backend's library (boto3, paramiko) is
loaded only when the archive is of that backend (storage/repository.py imports backends on demand).
The JSON config is read into typed options (``typed(ArchiveOptions, ...)``), as a module reads its params.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import stat
import sys
import time
from typing import NamedTuple

from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import COPY_CHUNK, NotFound, copy_stream, quietly
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import open_repository
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import (
    HELPER_NAME,
    PARALLEL,
    RETRY_WINDOW,
    SEGMENT_RE,
    SPOOL_DIR,
    STORE_TYPES,
    WAL_NAME_RE,
    ArchiveOptions,
    Prepend,
    WalArchive,
    repository_options,
    validate_name,
)

CONFIG_FORMAT = 1
LOCK_NAME = ".lock"  # held by the one prefetcher of a spool
LOG_NAME = ".prefetch.log"
SERVED_NAME = ".served"  # the segment fetch served last: the prefetcher keeps the next N after it spooled
END_NAME = ".end"  # the first segment the prefetcher found missing: fetch does not wait for it (or later ones)
SPOOL_WAIT = 30.0  # seconds fetch waits for a segment the prefetcher is downloading, rather than download it again
SPOOL_WAIT_START = 3.0  # seconds fetch waits for the prefetcher to start on a segment (its first session may be opening)
IDLE = 15.0  # seconds without recovery taking a segment before the prefetcher empties the spool and ends
IDLE_ENV = "PGDR_WAL_PREFETCH_IDLE"  # tests only: fetch passes it on as prefetch --idle
PREFETCH_POLL = 0.05  # seconds between looks at the spool (what recovery took, .served) once the window is full
END_RECHECK = 5.0  # seconds before the prefetcher asks again for a segment the archive did not have (it may grow)
WORKER_JOIN = 5.0  # seconds the prefetcher waits for a download to end when it stops (then leaves it to die with it)
RETRY_FIRST, RETRY_MAX = 0.5, 8.0  # backoff between attempts on a store that fails transiently (seconds)
LOG_LIMIT = 64 * 1024
# fetch's exit codes. PostgreSQL takes any exit code up to 125 for "this file is not in the archive": at the end of
# recovery that is normal, but a store that is down would then end recovery early, at a wrong point, and promote
# there. Above 125 recovery stops with an error instead, and the restore can be run again once the store is back.
NOT_IN_ARCHIVE = 1
ABORT_RECOVERY = 126  # the store failed (after the retry window), or a file is there but unreadable (does not decrypt)
GZ = ".gz"  # pg_receivewal --compress: <segment>.gz, and <segment>.gz.partial while it writes


def spool_path(name, spool_dir=SPOOL_DIR):
    return os.path.join(spool_dir, validate_name(name))


class HelperConfig(NamedTuple):
    """A pgdr-wal config file, read: the archive's name, where it is, and the read-ahead spool's folder."""

    name: object  # as written; checked (validate_name) where a file name is made of it
    archive: ArchiveOptions  # the store's settings: local, sftp or s3
    spool_dir: str


def load_config(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise PgdrError("cannot read config %s: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise PgdrError("config %s is not valid JSON: %s" % (path, exc)) from None
    if data.get("format") != CONFIG_FORMAT or data.get("type") not in STORE_TYPES:
        raise PgdrError("config %s is not a pgdr-wal config (format %s)" % (path, CONFIG_FORMAT))
    archive = typed(ArchiveOptions, dict(data.get("store") or {}, type=data["type"]))
    # spool_dir is written only when it is not the default (configs from before read-ahead have none)
    return HelperConfig(name=data.get("name"), archive=archive, spool_dir=data.get("spool_dir") or SPOOL_DIR)


def open_store(config):
    """The Repository the config names (its backend's library is loaded only now)."""
    return open_repository(repository_options(config.archive))


# --- what failed: the archive has no such file, or the store did not answer --------------------

# errno values of a network or a server that is down or restarting: worth another attempt
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH,
    errno.ENETDOWN, errno.EHOSTDOWN, errno.EPIPE,
}
# by class name, so that paramiko and botocore are not imported to look at their exceptions
_TRANSIENT_NAMES = {
    "NoValidConnectionsError",  # paramiko: every address refused the connection
    "SSHException",  # paramiko: banner not read, session dropped (its authentication and host key failures are below)
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",  # botocore
    "ResponseStreamingError", "IncompleteReadError",
}
_PERMANENT_NAMES = {"AuthenticationException", "BadHostKeyException", "PasswordRequiredException"}
_TRANSIENT_S3_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"}


def is_transient(exc):
    """Whether ``exc`` (or what caused it) is a store that did not answer, rather than an answer: worth retrying."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (NotFound, DecryptionFailed)):
            return False
        if isinstance(exc, PgdrError) and (exc.details.get("transient") or str(exc.details.get("error_code")) in _TRANSIENT_S3_CODES):
            return True
        names = {kind.__name__ for kind in type(exc).__mro__}
        if names & _PERMANENT_NAMES:
            return False
        if names & _TRANSIENT_NAMES or isinstance(exc, (ConnectionError, TimeoutError, EOFError)):
            return True
        if isinstance(exc, OSError) and (exc.errno in _TRANSIENT_ERRNOS or exc.errno is None):
            return True  # errno None: a socket paramiko found closed ("Socket is closed"), not a file system's answer
        exc = exc.__cause__ or exc.__context__
    return False


class StoreFailed(PgdrError):
    """The store still failed when the retry window ended: fetch ends recovery with an error, not at a wrong point."""


def retrying(attempt, window, sleep=time.sleep, clock=time.monotonic):
    """``attempt()``'s result, retried with a growing pause while it fails transiently, for ``window`` seconds at most.

    Raises what ``attempt`` raises when that is not transient, and StoreFailed when the window is over."""
    deadline, pause = clock() + window, RETRY_FIRST
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - clock()
            if left <= 0:
                message = exc.msg if isinstance(exc, PgdrError) else "%s: %s" % (type(exc).__name__, exc)
                raise StoreFailed("the store still fails after %d s of retries (restore_command --retry-window): %s" % (window, message)) from exc
            sleep(min(pause, left))
            pause = min(pause * 2, RETRY_MAX)


# --- push and fetch -------------------------------------------------------------------------------


class _Missing(Exception):
    """The WAL file asked for is not in the archive (fetch exits 1 without a message)."""


def push(config, source, walfile):
    """Store ``source`` as ``walfile`` unless it is there; True if stored, False if an identical copy was there."""
    archive = config.archive
    # a missing folder is an error, not something to create: it may be a share that is not mounted
    if archive.type == "local" and not os.path.isdir(archive.path):
        raise PgdrError("archive folder %s does not exist (is the share mounted?)" % archive.path)
    with open_store(config) as repository:
        if not archive.encrypts:
            return repository.put_if_absent(walfile, source)
        return _push_encrypted(repository, source, walfile, archive.passphrase)


def _push_encrypted(repository, source, walfile, passphrase):
    """Encrypt ``source`` (gpg, to a private temporary file: ciphertext only) and store it unless ``walfile`` is there.

    gpg output differs on every run (a new salt and session key), so an existing copy is compared after decryption.
    """
    if repository.exists(walfile):
        _check_same_plaintext(repository, walfile, source, passphrase)
        return False
    with encryption.gpg_session(passphrase) as gpg:
        sealed = os.path.join(gpg.home, "sealed")
        with open(sealed, "wb") as out:
            _gpg(encryption.run_gpg, gpg.encrypt_argv() + [source], None, out, "encrypting %s" % walfile)
        try:
            return repository.put_if_absent(walfile, sealed)
        except PgdrError:
            if not repository.exists(walfile):
                raise
    # stored meanwhile by another push (a retry after a lost reply): fine if it is the same segment
    _check_same_plaintext(repository, walfile, source, passphrase)
    return False


def _check_same_plaintext(repository, walfile, source, passphrase):
    with encryption.gpg_session(passphrase) as gpg:
        plain = os.path.join(gpg.home, "stored")
        with repository.open_reader(walfile) as reader, open(plain, "wb") as out:
            copy_plain(reader, out, passphrase)
        if _digest(plain) == _digest(source):
            return
    raise PgdrError(
        "%s already exists in %s with different content; refusing to overwrite it. Another cluster may be archiving "
        "into the same place (check the archive name), or the copy is damaged: compare it by hand" % (walfile, repository.describe())
    )


def _digest(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for data in iter(lambda: handle.read(COPY_CHUNK), b""):
            digest.update(data)
    return digest.hexdigest()


class DecryptionFailed(PgdrError):
    """An archived file that does not decrypt: fetch must not let recovery take it for the end of the archive."""


def _gpg(func, argv, reader, out, what):
    try:
        func(argv, reader, out)
    except encryption.GpgFailed as exc:
        if "--decrypt" in argv:
            hint = "check archive.encryption.passphrase: it must be the one the archive was encrypted with"
            raise DecryptionFailed("%s: gpg says %s; %s" % (what, exc, hint)) from None
        raise PgdrError("%s: gpg says %s" % (what, exc)) from None
    except OSError as exc:
        failure = DecryptionFailed if "--decrypt" in argv else PgdrError  # a file that is there but unreadable is never the end
        raise failure("%s: cannot run gpg: %s; install gnupg on this host" % (what, exc.strerror or exc)) from None


def copy_plain(reader, out, passphrase, what="the archived file"):
    """Copy a stored WAL file to the binary file ``out``, decrypting it when it is gpg output; the bytes written.

    Encrypted or not is read from the file itself, so an archive that was encrypted from some segment on (or that
    also holds pg_receivewal's plain files) reads back whole.
    """
    head = reader.read(COPY_CHUNK)
    if not encryption.looks_encrypted(head):
        out.write(head)
        return len(head) + copy_stream(reader, out)
    if not passphrase:
        raise DecryptionFailed("%s is encrypted (gpg): give archive.encryption.passphrase (the archive's, in the archive option)" % what)
    out.flush()
    start = out.tell()
    with encryption.gpg_session(passphrase) as gpg:
        _gpg(encryption.run_gpg, gpg.decrypt_argv(), Prepend(head, reader), out, "cannot decrypt %s" % what)
    end = os.lseek(out.fileno(), 0, os.SEEK_END)  # gpg wrote through the descriptor
    out.seek(end)
    return end - start


class Gunzip:
    """A reader of what the gzip stream ``reader`` holds (pg_receivewal's ``.gz`` segments); a cut-off stream is an
    error unless ``cut_ok`` (a ``.gz.partial`` that pg_receivewal is still writing ends wherever it flushed last)."""

    def __init__(self, reader, what, cut_ok=False):
        import zlib

        self._zlib, self._reader, self._what, self._cut_ok = zlib, reader, what, cut_ok
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._ended = False

    def read(self, size=-1):
        while not self._ended:
            data = self._reader.read(COPY_CHUNK)
            if not data:
                self._ended = True
                if not self._inflate.eof and not self._cut_ok:
                    raise PgdrError("%s is a cut-off gzip file (the archive copy is damaged)" % self._what)
                try:
                    return self._inflate.flush() if not self._inflate.eof else b""
                except self._zlib.error:  # a cut-off stream: what it held whole was returned already
                    return b""
            try:
                out = self._inflate.decompress(data)
            except self._zlib.error as exc:
                raise PgdrError("%s is not a valid gzip file: %s (the archive copy is damaged)" % (self._what, exc)) from None
            if self._inflate.eof and self._inflate.unused_data:  # a second gzip member follows
                rest = self._inflate.unused_data
                self._inflate = self._zlib.decompressobj(16 + self._zlib.MAX_WBITS)
                out += self._inflate.decompress(rest)
            if out:
                return out
        return b""


def stored_reader(reader, stored_name):
    """What to copy from the stored file ``stored_name``: its bytes, or for a ``.gz`` copy the segment inside."""
    base = stored_name[: -len(".partial")] if stored_name.endswith(".partial") else stored_name
    if base.endswith(GZ):
        return Gunzip(reader, stored_name, cut_ok=stored_name.endswith(".partial"))
    return reader


def _segment_size_in(path):
    """The segment size a WAL segment's first (long) page header names, or None when it names none that is valid."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(40)
    # XLogLongPageHeaderData: the short header (xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, xlp_rem_len: 24 bytes with
    # padding), xlp_sysid (8), then xlp_seg_size; little-endian on every platform PostgreSQL's WAL is read back on here
    size = struct.unpack("<I", head[32:36])[0] if len(head) >= 36 else None
    return size if valid_segment_size(size) else None


def _write_dest(reader_cm, dest, sync=False, passphrase=None, stored_name=None):
    """Copy what ``reader_cm`` opens to ``dest`` (decompressed, decrypted) through a temporary name, so ``dest`` is
    whole or absent."""
    temp = "%s.pgdr-tmp-%d" % (dest, os.getpid())
    try:
        with reader_cm as reader, open(temp, "wb") as out:
            copy_plain(stored_reader(reader, stored_name or ""), out, passphrase)
            if stored_name and stored_name.endswith(GZ + ".partial"):
                # pg_receivewal pads an uncompressed .partial to the segment size, not a compressed one; recovery
                # wants a whole segment (zeros after the last record end the WAL there)
                out.flush()
                size = _segment_size_in(temp)
                if size is None or out.tell() > size:
                    raise PgdrError("%s does not hold the start of a WAL segment" % stored_name)
                out.truncate(size)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.rename(temp, dest)
    except BaseException:
        quietly(os.unlink, temp)
        raise


def fetch(repository, walfile, dest, passphrase=None):
    """Copy ``walfile`` (a segment may also be stored compressed by pg_receivewal as ``.gz``, or be its unfinished
    ``.partial`` / ``.gz.partial``) to ``dest``, decompressed and decrypted; the name copied; raises _Missing."""
    candidates = [walfile]
    if SEGMENT_RE.match(walfile):
        candidates += [walfile + GZ, walfile + ".partial", walfile + GZ + ".partial"]
    for candidate in candidates:
        try:
            # NotFound comes before the temporary file
            _write_dest(repository.open_reader(candidate), dest, passphrase=passphrase, stored_name=candidate)
        except NotFound:
            continue
        except PgdrError as exc:
            # pg_receivewal flushes a compressed .partial only now and then: until its first page header is in it,
            # the segment it is writing holds nothing recovery can use yet (recovery reads ahead and asks for it)
            if candidate.endswith(GZ + ".partial") and not is_transient(exc):
                continue
            raise
        return candidate
    raise _Missing(walfile)


def fetch_with_retries(config, walfile, dest, window):
    """fetch over a new store session, retried while the store fails transiently (see ``retrying``)."""
    archive = config.archive

    def attempt():
        # a local archive folder that is missing is a share not mounted (yet), not an archive without the file
        if archive.type == "local" and not os.path.isdir(archive.path):
            raise PgdrError("archive folder %s does not exist (is the share mounted?)" % archive.path, transient=True)
        with open_store(config) as repository:
            return fetch(repository, walfile, dest, archive.passphrase)

    return retrying(attempt, window)


# --- read-ahead: fetch --prefetch N and its background prefetcher --------------------------------
#
# The spool holds only whole segments: the prefetcher writes a temporary name (".<segment>.tmp-<pid>"), fsyncs it,
# checks its size and renames it into place, and restore_command's shell mv (then fetch) looks up nothing but the
# exact segment name. Any spool trouble falls back to the direct fetch; a prefetcher's error pauses (transient) or
# ends (otherwise) the read-ahead, logged in <spool>/.prefetch.log.


def valid_segment_size(size):
    """PostgreSQL's wal_segment_size rule: a power of two from 1 MiB to 1 GiB."""
    return isinstance(size, int) and 1 << 20 <= size <= 1 << 30 and size & (size - 1) == 0


def next_segments(walfile, segment_size, count):
    """The ``count`` segment names after ``walfile`` on its timeline, for segments of ``segment_size`` bytes."""
    if not SEGMENT_RE.match(walfile or "") or not valid_segment_size(segment_size):
        raise PgdrError("cannot name the segments after %r for a segment size of %r" % (walfile, segment_size))
    per_log = 0x100000000 // segment_size
    log, segment = int(walfile[8:16], 16), int(walfile[16:], 16)
    if segment >= per_log:
        raise PgdrError("%s is not a segment name for a segment size of %d" % (walfile, segment_size))
    number = log * per_log + segment
    names = []
    for following in range(number + 1, number + 1 + count):
        log, segment = divmod(following, per_log)
        if log > 0xFFFFFFFF:
            break  # the end of the WAL address space
        names.append("%s%08X%08X" % (walfile[:8], log, segment))
    return names


def _spool_of(config):
    """This config's spool folder, or None when it is missing or not private to us (then nothing is read ahead)."""
    try:
        path = spool_path(config.name, config.spool_dir)
        found = os.lstat(path)
    except (PgdrError, OSError):
        return None
    # anyone else able to write into it could hand recovery WAL of their choosing
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
        return None
    return path


def _take_spooled(spool, walfile, dest):
    """Move the spool's copy of ``walfile`` to ``dest``; False when there is none (or it cannot be used)."""
    source = os.path.join(spool, walfile)
    try:
        os.rename(source, dest)
        return True
    except FileNotFoundError:
        return False  # not read ahead, or a concurrent fetch took it
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            return False
    # pg_wal is usually on another file system than /var/spool
    try:
        _write_dest(open(source, "rb"), dest, sync=True)
    except OSError:
        return False
    quietly(os.unlink, source)
    return True


def _prune_spool(spool, walfile):
    """Drop spooled segments before ``walfile``: recovery has moved past them (or to a later timeline)."""
    for entry in os.listdir(spool):
        if SEGMENT_RE.match(entry) and entry < walfile:
            quietly(os.unlink, os.path.join(spool, entry))


def _try_lock(path, dir_fd=None):
    """A non-blocking exclusive flock on ``path``: the open fd, or None when another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _start_prefetcher(config_file, spool, walfile, segment_size, count, parallel=PARALLEL):
    """Start a detached ``pgdr-wal prefetch`` unless one already runs for ``spool``; PostgreSQL does not wait for it."""
    import subprocess

    probe = _try_lock(os.path.join(spool, LOCK_NAME))
    if probe is None:
        return False  # the running one follows .served and carries on
    os.close(probe)  # the child takes it for real: two starting at once still give one prefetcher
    argv = [sys.executable, "-I", os.path.abspath(sys.argv[0]), "--config", os.path.abspath(config_file), "prefetch"]
    argv += ["--count", str(count), "--parallel", str(parallel), "--size", str(segment_size)]
    # tests only: a shorter idle limit through the environment; PostgreSQL never sets it, so the option stays unused
    idle = os.environ.get(IDLE_ENV)
    if idle:
        argv += ["--idle", idle]
    argv.append(walfile)
    devnull = subprocess.DEVNULL
    subprocess.Popen(argv, stdin=devnull, stdout=devnull, stderr=devnull, cwd="/", close_fds=True, start_new_session=True)
    return True


def _mark_served(spool, walfile):
    """Tell the prefetcher which segment recovery just got: ``.served`` holds its name (temp + rename)."""
    temp = os.path.join(spool, ".served.new-%d" % os.getpid())
    with open(temp, "w") as out:
        out.write(walfile)
    os.rename(temp, os.path.join(spool, SERVED_NAME))


def _read_served(dir_fd):
    """The name in ``.served``, or None when it is missing or not a segment name."""
    try:
        fd = os.open(SERVED_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return text if SEGMENT_RE.match(text) else None


def _log(dir_fd, message):
    fd = os.open(LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_size > LOG_LIMIT:
            os.ftruncate(fd, 0)  # a small log of the latest runs is enough
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.write(fd, ("%s [%d] %s\n" % (stamp, os.getpid(), message)).encode())
    finally:
        os.close(fd)


class _NotWhole(Exception):
    """A stored copy that is not a whole segment (an upload in progress, or not a segment): left to the direct fetch."""


def _spool_one(repository, dir_fd, walfile, segment_size, passphrase=None, suffixes=("", GZ)):
    """Download ``walfile`` into the spool (temp, fsync, size check, rename); the suffix of the stored copy (``""`` or
    ``.gz``), or None when the archive has no copy. Raises _NotWhole for a copy that is not a whole segment."""
    for suffix in suffixes:
        with contextlib.ExitStack() as stack:
            try:  # never a .partial: it is not a whole segment yet
                reader = stack.enter_context(repository.open_reader(walfile + suffix))
            except NotFound:
                continue
            temp = ".%s.tmp-%d" % (walfile, os.getpid())  # one worker per segment: the name is this download's
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as out:
                    copied = copy_plain(stored_reader(reader, walfile + suffix), out, passphrase, walfile)
                    out.flush()
                    os.fsync(out.fileno())
                if copied != segment_size:  # never spool it: fetch gets it (and PostgreSQL says what is wrong)
                    raise _NotWhole("%s%s holds %d bytes, not the segment size %d" % (walfile, suffix, copied, segment_size))
                os.rename(temp, walfile, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                quietly(os.unlink, temp, dir_fd=dir_fd)
                raise
        return suffix
    return None


def _write_end(dir_fd, name):
    temp = ".end.new-%d" % os.getpid()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, name.encode())
    finally:
        os.close(fd)
    os.rename(temp, END_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _tidy_spool(dir_fd, keep):
    """Under the lock: drop temporary files of dead prefetchers and segments not in ``keep``."""
    own = ".tmp-%d" % os.getpid()
    for entry in os.listdir(dir_fd):
        if (entry.startswith(".") and ".tmp-" in entry and not entry.endswith(own)) or (SEGMENT_RE.match(entry) and entry not in keep):
            quietly(os.unlink, entry, dir_fd=dir_fd)


def _replaced(dir_fd, spool):
    """True when ``spool`` no longer names the folder behind ``dir_fd`` (a new restore renamed it away)."""
    try:
        now = os.stat(spool, follow_symlinks=False)
    except OSError:
        return True
    held = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


class Window:
    """The prefetcher's bookkeeping, without I/O: which segments to fetch next, given what recovery took.

    Recovery's progress shows two ways: ``.served`` (a fetch that went through pgdr-wal writes it) and segments this
    prefetcher spooled that are gone (restore_command's ``mv`` took them). The window is the ``depth`` segments after
    the newest one recovery took, minus those the archive did not have (``end``, asked again after END_RECHECK).
    """

    def __init__(self, served, segment_size, depth, now):
        self.served, self.segment_size, self.depth = served, segment_size, depth
        self.last_progress = now
        self.spooled = set()  # whole segments this run put into the spool, not yet seen taken
        self.in_flight = set()  # being downloaded
        self.end = None  # (first segment the archive did not have, when that was seen)
        self.suffix = ""  # how the archive stores segments ("" or ".gz"): tried first
        self._served_file = served  # the name last read from .served (the fetch that started us wrote it)

    def wanted(self):
        return next_segments(self.served, self.segment_size, self.depth)

    def observe(self, present, served_file, now):
        """Take in the spool's listing ``present`` and the name in ``.served``; True when recovery moved on."""
        moved = False
        taken = sorted(name for name in self.spooled if name not in present)
        self.spooled.difference_update(taken)
        newest = [name for name in taken if name[:8] == self.served[:8] and name > self.served]
        if newest:
            self.served, moved = newest[-1], True
        if served_file and served_file != self.served and served_file != self._served_file:
            self.served, moved = served_file, True  # a fetch's word wins: it may be another timeline
        self._served_file = served_file
        if moved:
            self.last_progress, self.end = now, None
        elif self.end and now - self.end[1] > END_RECHECK:
            self.end = None
        return moved

    def to_fetch(self, present, parallel):
        """The segments to start downloading now: missing from the window, not in flight, before the archive's end."""
        room = parallel - len(self.in_flight)
        names = []
        for name in self.wanted():
            if room <= len(names) or (self.end and name >= self.end[0]):
                break
            if name not in present and name not in self.in_flight and name not in self.spooled:
                names.append(name)
        return names

    def keep(self):
        """Segments that may stay in the spool: the window up to the archive's end, and what is being downloaded (the
        rest is removed, and is not taken for a segment recovery took)."""
        keep = {name for name in self.wanted() if not self.end or name < self.end[0]} | self.in_flight
        self.spooled &= keep
        return keep

    def done(self, name, suffix, now):
        """A download ended: ``suffix`` None means the archive has no such segment (yet)."""
        self.in_flight.discard(name)
        if suffix is None:
            if self.end is None or name < self.end[0]:
                self.end = (name, now)
        else:
            self.suffix = suffix
            if name in self.wanted():
                self.spooled.add(name)

    def idle(self, now, limit):
        return not self.in_flight and now - self.last_progress > limit


def _worker(config, dir_fd, segment_size, jobs, results):
    """One download thread: its own store session, opened on first use and again after a failure."""
    repository = None
    try:
        while True:
            job = jobs.get()
            if job is None:
                return
            name, suffix = job
            try:
                repository = repository or open_store(config)
                order = (suffix, GZ if suffix == "" else "")
                results.put((name, _spool_one(repository, dir_fd, name, segment_size, config.archive.passphrase, order), None))
            except Exception as exc:  # reported to the main loop, which decides
                results.put((name, None, exc))
                if repository is not None:
                    quietly(repository.close)
                repository = None
    finally:
        if repository is not None:
            quietly(repository.close)


def prefetch(config, walfile, segment_size, count, idle=IDLE, parallel=PARALLEL):
    """The background half of ``fetch --prefetch``: one per recovery (a lock in the spool), it keeps the ``count``
    segments after the one recovery took last spooled, downloading ``parallel`` at once, each worker over its own
    store session. A store that fails transiently pauses it (the direct fetch retries on its own); it ends, emptying
    the spool, after ``idle`` seconds in which recovery took nothing, and at once when its spool folder is replaced
    or on an error that is not transient (logged in <spool>/.prefetch.log)."""
    import queue
    import threading

    spool = _spool_of(config)
    if spool is None or count < 1 or parallel < 1:
        return
    # every step goes through this handle: if a new restore swaps the folder away, we notice and stop
    try:
        dir_fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    lock, jobs, workers = None, queue.Queue(), []
    try:
        lock = _try_lock(LOCK_NAME, dir_fd)
        if lock is None:
            return  # another prefetcher serves this spool
        results = queue.Queue()
        for _number in range(parallel):
            thread = threading.Thread(target=_worker, args=(config, dir_fd, segment_size, jobs, results), daemon=True)
            thread.start()
            workers.append(thread)
        window = Window(walfile, segment_size, count, time.monotonic())
        paused_until, pause = 0.0, RETRY_FIRST
        while not _replaced(dir_fd, spool):
            now = time.monotonic()
            present = set(os.listdir(dir_fd))
            window.observe(present, _read_served(dir_fd), now)
            while True:
                try:
                    name, suffix, exc = results.get_nowait()
                except queue.Empty:
                    break
                if exc is None:
                    window.done(name, suffix, now)
                    if suffix is None:
                        _log(dir_fd, "%s is not in the archive (yet)" % name)
                        _write_end(dir_fd, window.end[0])
                    else:
                        _log(dir_fd, "fetched %s%s" % (name, suffix))
                        if window.end is None:
                            quietly(os.unlink, END_NAME, dir_fd=dir_fd)
                    pause = RETRY_FIRST
                elif isinstance(exc, _NotWhole) or is_transient(exc):
                    window.done(name, None, now)  # asked again later; the direct fetch serves it meanwhile
                    _write_end(dir_fd, window.end[0])  # so that fetch does not wait for us
                    paused_until, pause = now + pause, min(pause * 2, RETRY_MAX)
                    _log_error(dir_fd, config, exc, "paused")
                else:
                    _log_error(dir_fd, config, exc, "stopped")
                    return
            if window.idle(now, idle):
                _tidy_spool(dir_fd, set())  # recovery ended or stopped asking: leave nothing behind
                _log(dir_fd, "idle for %g s: spool emptied" % idle)
                return
            _tidy_spool(dir_fd, window.keep())
            if now >= paused_until:
                for name in window.to_fetch(present, parallel):
                    window.in_flight.add(name)
                    jobs.put((name, window.suffix))
            time.sleep(PREFETCH_POLL)
    except Exception as exc:  # the direct fetch still works: an error only ends the read-ahead
        _log_error(dir_fd, config, exc, "stopped")
    finally:
        for _thread in workers:
            jobs.put(None)
        for thread in workers:
            thread.join(WORKER_JOIN)
        if lock is not None:
            os.close(lock)
        os.close(dir_fd)


def secrets_of(config):
    """What a message from pgdr-wal must never show: the S3 secret key, the SSE-C key, the gpg passphrase."""
    archive = config.archive
    found = [archive.secret_key, archive.sse.customer_key if archive.sse else None]
    encryption = getattr(archive, "encryption", None)
    found.append(encryption.passphrase if encryption else None)
    return [secret for secret in found if secret]


def scrub(message, secrets):
    for secret in secrets or ():
        message = message.replace(secret, "********")
    return message


def _log_error(dir_fd, config, exc, what):
    message = exc.msg if isinstance(exc, PgdrError) else "%s: %s" % (type(exc).__name__, exc)
    quietly(_log, dir_fd, "%s: %s" % (what, scrub(message, secrets_of(config))))


def _fetch_command(args, config):
    """fetch: the spool's copy when read ahead, else the store's; then keep reading ahead. The exit code."""
    walfile = args.walfile
    spool = _spool_of(config) if args.prefetch and SEGMENT_RE.match(walfile) else None
    served, waited = None, None
    if spool is not None:
        if _take_spooled(spool, walfile, args.path):
            served = walfile
        else:
            waited = _wait_spooled(spool, walfile)
            served = walfile if waited and _take_spooled(spool, walfile, args.path) else None
    if served is None:
        try:
            served = fetch_with_retries(config, walfile, args.path, args.retry_window)
        except _Missing:
            return NOT_IN_ARCHIVE  # the normal end of the archive: PostgreSQL asks for files that do not exist yet
        if waited is False:  # the prefetcher runs but did not have it: worth knowing when tuning --prefetch/--parallel
            quietly(_log_at, spool, "%s came from the store directly: recovery was ahead of the read-ahead" % walfile)
    if spool is not None and served == walfile:  # not after a .partial: that is the end of the archive
        quietly(_read_ahead, args, spool, walfile)
    return 0


def _wait_spooled(spool, walfile):
    """Whether ``walfile`` turned up in the spool while the running prefetcher fetched it (None: no prefetcher runs):
    recovery outran the read-ahead, and a second download over a new session (an SSH handshake) would only come
    later than the first."""
    probe = _try_lock(os.path.join(spool, LOCK_NAME))
    if probe is not None:
        os.close(probe)
        return None
    try:
        with open(os.path.join(spool, END_NAME)) as handle:
            end = handle.read(64).strip()
    except OSError:
        end = ""
    if SEGMENT_RE.match(end) and end[:8] == walfile[:8] and walfile >= end:
        return False  # the prefetcher found the archive ending before it: fetch asks the store itself
    started, temp = time.monotonic(), ".%s.tmp-" % walfile
    while True:
        if os.path.exists(os.path.join(spool, walfile)):
            return True
        waited = time.monotonic() - started
        if waited > SPOOL_WAIT or (waited > SPOOL_WAIT_START and not any(name.startswith(temp) for name in os.listdir(spool))):
            return False
        time.sleep(0.01)


def _log_at(spool, message):
    fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _log(fd, message)
    finally:
        os.close(fd)


def _read_ahead(args, spool, walfile):
    _prune_spool(spool, walfile)
    _mark_served(spool, walfile)  # a running prefetcher moves its window after it
    segment_size = os.path.getsize(args.path)
    if valid_segment_size(segment_size):
        _start_prefetcher(args.config, spool, walfile, segment_size, args.prefetch, args.parallel)


def _count(text):
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _check_walfile(walfile):
    if not WAL_NAME_RE.match(walfile or "") or walfile.endswith(".gz"):
        raise PgdrError("%r is not a WAL file name" % (walfile,))


def _list(config, as_json):
    with WalArchive(repository_options(config.archive)) as view:
        items = view.list()
    if as_json:
        sys.stdout.write(json.dumps([dict(item, mtime=item["mtime"].isoformat()) for item in items]) + "\n")
    else:
        for item in items:
            sys.stdout.write("%s\t%d\t%s\n" % (item["name"], item["size"], item["mtime"].isoformat()))


def main(argv=None):
    """The pgdr-wal command line; returns the exit code: 0 done; 1 push or list failed, or fetch of a file the archive
    does not have; 2 usage; 126 fetch that failed otherwise (the store, after retries; a file that does not decrypt)."""
    import argparse

    parser = argparse.ArgumentParser(prog=HELPER_NAME, description="pgdr.backup WAL archive helper")
    parser.add_argument("--config", required=True)
    sub = parser.add_subparsers(dest="action", required=True)
    push_parser = sub.add_parser("push", help="archive_command: push %%p %%f")
    push_parser.add_argument("path")
    push_parser.add_argument("walfile")
    fetch_parser = sub.add_parser("fetch", help="restore_command: fetch [--prefetch N] %%f %%p")
    fetch_parser.add_argument("--prefetch", type=_count, default=0, metavar="N", help="read the next N segments ahead (0: off)")
    fetch_parser.add_argument("--parallel", type=_count, default=PARALLEL, metavar="P", help="download P segments at once when reading ahead")
    fetch_parser.add_argument("--retry-window", type=_count, default=RETRY_WINDOW, metavar="S", help="retry a failing store for S seconds")
    fetch_parser.add_argument("walfile")
    fetch_parser.add_argument("path")
    prefetch_parser = sub.add_parser("prefetch", help="internal: the background read-ahead that fetch --prefetch starts")
    prefetch_parser.add_argument("--count", type=_count, required=True)
    prefetch_parser.add_argument("--parallel", type=_count, default=PARALLEL)
    prefetch_parser.add_argument("--size", type=int, required=True)
    prefetch_parser.add_argument("--idle", type=float, default=IDLE, help=argparse.SUPPRESS)
    prefetch_parser.add_argument("walfile")
    list_parser = sub.add_parser("list", help="list the archive")
    list_parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    secret = None
    try:
        config = load_config(args.config)
        secret = secrets_of(config)
        if args.action == "push":
            _check_walfile(args.walfile)
            push(config, args.path, args.walfile)
        elif args.action == "fetch":
            _check_walfile(args.walfile)
            return _fetch_command(args, config)
        elif args.action == "prefetch":
            if SEGMENT_RE.match(args.walfile) and valid_segment_size(args.size):
                prefetch(config, args.walfile, args.size, args.count, args.idle, args.parallel)
        else:
            _list(config, args.json)
        return 0
    except PgdrError as exc:
        _complain(args, exc.msg, secret)
    except (OSError, EOFError) as exc:
        _complain(args, "%s%s" % (exc.strerror or exc, " (%s)" % exc.filename if getattr(exc, "filename", None) else ""), secret)
    except Exception as exc:  # never a traceback in the server log
        _complain(args, "%s: %s" % (type(exc).__name__, exc), secret)
    # fetch: only "not in the archive" may read as the end of it (see NOT_IN_ARCHIVE); push: never above 125, the
    # archiver would die
    return ABORT_RECOVERY if args.action == "fetch" else 1


def _complain(args, message, secrets):
    message = scrub(message, secrets)
    target = getattr(args, "walfile", "")
    sys.stderr.write("pgdr-wal: %s %s failed: %s\n" % (args.action, target, message))
    sys.stderr.flush()
