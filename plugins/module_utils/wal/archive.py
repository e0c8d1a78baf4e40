# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive as the modules see it: the ``archive`` option, typed and checked; the archive_command and
restore_command strings PostgreSQL runs for it; and a read view of what it holds.

WAL files are stored flat under the archive root (``<path>/<walfile>``, or ``<bucket>/<prefix>/<walfile>``),
the layout pg_receivewal writes too, so one reader serves both.

pgdr-wal (``wal/pgdr_wal.py``) imports this file, so it must stay importable without Ansible and cheap to import.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import (
    DEFAULT_PART_SIZE_MB,
    LocationOptions,
    RepositoryOptions,
    location_options,
    open_repository,
    sse_request,
)

ARCHIVE_TYPES = ["local", "sftp", "s3", "probackup", "command"]
ENCRYPTION_METHODS = ("none", "gpg")  # as core.encryption.METHODS, which the option spec need not load
STORE_TYPES = ("local", "sftp", "s3")  # the ones pgdr-wal reads and writes
HELPER_DIR = "/usr/local/lib/pgdr"
HELPER_NAME = "pgdr-wal"
CONFIG_DIR = "/etc/pgdr/wal"
PREFETCH = 16  # segments restore_command reads ahead (the spool holds at most this many); 0 turns read-ahead off
PARALLEL = 4  # the read-ahead's download workers, each over its own store session
RETRY_WINDOW = 60  # seconds fetch retries a store that fails transiently before it ends recovery with an error
SPOOL_DIR = "/var/spool/pgdr"  # read-ahead segments, per config name; a config's spool_dir key overrides it (tests)

# 24 hex digits (timeline, log, segment) with the suffixes PostgreSQL and pg_receivewal use
WAL_NAME_RE = re.compile(r"^([0-9A-F]{8}\.history|[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?)(\.gz)?$")
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def archive_argument_spec():
    """The ``archive`` option (doc fragment pgdr.backup.wal_archive): where WAL files are archived."""
    return dict(
        archive=dict(
            type="dict",
            options=dict(
                type=dict(type="str", required=True, choices=ARCHIVE_TYPES),
                **location_options(),
                backup_path=dict(type="path"),
                instance=dict(type="str"),
                binary=dict(type="path", default="pg_probackup"),
                archive_command=dict(type="str"),
                restore_command=dict(type="str"),
                encryption=dict(
                    type="dict",
                    options=dict(
                        method=dict(type="str", default="none", choices=list(ENCRYPTION_METHODS)),
                        passphrase=dict(type="str", no_log=True),
                    ),
                ),
            ),
        )
    )


@dataclasses.dataclass(frozen=True)
class WalEncryptionOptions:
    """``archive.encryption``: gpg (OpenPGP symmetric AES-256) on push; the passphrase also decrypts on fetch."""

    method: Optional[str]
    passphrase: Optional[str]


@dataclasses.dataclass(frozen=True)
class ArchiveOptions(LocationOptions):
    """The ``archive`` option (doc fragment pgdr.backup.wal_archive), typed."""

    type: str
    backup_path: Optional[str]
    instance: Optional[str]
    binary: Optional[str]
    archive_command: Optional[str]
    restore_command: Optional[str]
    encryption: Optional[WalEncryptionOptions]

    @property
    def encrypts(self):
        """Whether push encrypts (gpg)."""
        return bool(self.encryption) and self.encryption.method == "gpg"

    @property
    def passphrase(self):
        return self.encryption.passphrase if self.encryption else None


# options each type needs (given and not empty)
_REQUIRED = {
    "local": ("path",),
    "sftp": ("host", "path"),
    "s3": ("bucket",),
    "probackup": ("backup_path", "instance"),
    "command": (),
}


def validate(archive):
    """Raise PgdrError unless the ArchiveOptions ``archive`` have what their type needs; returns them."""
    kind = archive.type
    if kind not in ARCHIVE_TYPES:
        raise PgdrError("archive.type must be one of %s, not %r" % (", ".join(ARCHIVE_TYPES), kind))
    for option in _REQUIRED[kind]:
        if getattr(archive, option) in (None, ""):
            raise PgdrError("archive.%s is required for archive type %s" % (option, kind))
    if kind in ("local", "sftp") and not archive.path.startswith("/"):
        raise PgdrError("archive.path must be an absolute path for archive type %s, not %r" % (kind, archive.path))
    if kind == "command" and not (archive.archive_command or archive.restore_command):
        raise PgdrError("archive type command needs archive.archive_command and/or archive.restore_command")
    if archive.sse is not None:
        sse_request(archive.sse, kind, "archive")  # S3 only, and the mode's key checked before anything is installed
    if archive.encryption is not None:
        method = archive.encryption.method or "none"
        if method not in ENCRYPTION_METHODS:
            raise PgdrError("archive.encryption.method must be one of %s, not %r" % (", ".join(ENCRYPTION_METHODS), method))
        if kind not in STORE_TYPES and (method != "none" or archive.passphrase):
            raise PgdrError("archive.encryption is done by pgdr-wal, for archive types %s, not %s: drop archive.encryption" % (", ".join(STORE_TYPES), kind))
        if method == "gpg" and not archive.passphrase:
            raise PgdrError("archive.encryption.method gpg needs archive.encryption.passphrase")
    return archive


def validate_name(name):
    """``name`` (the archive name: pgdr-wal's config and spool are named after it) if it is a usable file name."""
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 100:
        raise PgdrError("archive name %r is not usable as a file name: use letters, digits, '_', '-' and '.'" % (name,))
    return name


def helper_path(helper_dir=HELPER_DIR):
    return os.path.join(helper_dir, HELPER_NAME)


def config_path(name, config_dir=CONFIG_DIR):
    return os.path.join(config_dir, "%s.json" % validate_name(name))


# --- the strings PostgreSQL runs ------------------------------------------------------------------


def _helper_invocation(name, action, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR):
    argv = [helper_path(helper_dir), "--config", config_path(name, config_dir)]
    return " ".join(shlex.quote(part) for part in argv) + " " + action


# direction -> (pgdr-wal action, pg_probackup subcommand, the option of archive type command)
_DIRECTIONS = {"archive": ("push %p %f", "archive-push", "archive_command"), "restore": ("fetch %f %p", "archive-get", "restore_command")}


def _whole(value, what, least=0):
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise PgdrError("%s must be a whole number, %d or more, not %r" % (what, least, value))
    return value


def _command(archive, name, direction, helper_dir, config_dir, fetch=None):
    validate(archive)
    helper_action, probackup_subcommand, own_option = _DIRECTIONS[direction]
    kind = archive.type
    if kind in STORE_TYPES:
        if direction == "restore" and fetch is not None:
            return _restore_line(name, helper_dir, config_dir, **fetch)
        return _helper_invocation(name, helper_action, helper_dir, config_dir)
    if kind == "probackup":
        argv = [archive.binary, probackup_subcommand, "-B", archive.backup_path, "--instance", archive.instance]
        return " ".join(shlex.quote(part) for part in argv) + " --wal-file-path=%p --wal-file-name=%f"
    command = getattr(archive, own_option)
    if not command:
        raise PgdrError("archive type command needs archive.%s to %s" % (own_option, direction))
    return command


def _restore_line(name, helper_dir, config_dir, prefetch, parallel, retry_window, spool_dir):
    """pgdr-wal fetch, behind a shell test-and-move from the read-ahead spool when it reads ahead.

    PostgreSQL runs restore_command through /bin/sh once per file; a spooled segment is handed over by ``mv`` without
    starting Python (the prefetcher renames a segment into the spool only once it is whole and its size checked, and
    only under its own name, so ``%f`` finds nothing but the exact file asked for). Anything else (not spooled, a
    history file, a failed mv) falls through to pgdr-wal, whose exit code is the command's.
    """
    _whole(prefetch, "prefetch")
    _whole(parallel, "parallel", 1)
    _whole(retry_window, "retry_window")
    action = "fetch --retry-window %d" % retry_window
    if not prefetch:
        return _helper_invocation(name, action + " %f %p", helper_dir, config_dir)
    action += " --prefetch %d --parallel %d %%f %%p" % (prefetch, parallel)
    spool = os.path.join(spool_dir, validate_name(name))
    if "%" in spool:  # PostgreSQL would read it as a placeholder
        raise PgdrError("the WAL spool folder %r must not contain '%%'" % spool)
    spooled = shlex.quote(spool) + "/%f"
    # %f is a WAL file name and %p a path under pg_wal: PostgreSQL substitutes them unquoted, as everywhere else
    return "test -f %s && mv -f %s %%p || %s" % (spooled, spooled, _helper_invocation(name, action, helper_dir, config_dir))


def archive_command(archive, name, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR):
    """The archive_command setting for the ArchiveOptions ``archive`` (pure: installs nothing; see installer.install)."""
    return _command(archive, name, "archive", helper_dir, config_dir)


def restore_command_string(archive, name, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR, prefetch=PREFETCH, parallel=PARALLEL,
                           retry_window=RETRY_WINDOW, spool_dir=SPOOL_DIR):
    """The restore_command setting for ``archive``, without installing anything: ``prefetch`` segments are read ahead
    (0: none) by ``parallel`` workers; a store that fails is retried for ``retry_window`` seconds."""
    fetch = dict(prefetch=prefetch, parallel=parallel, retry_window=retry_window, spool_dir=spool_dir)
    return _command(archive, name, "restore", helper_dir, config_dir, fetch)


# --- reading an archive (restore prechecks, verify, pgdr-wal list) --------------------------------


def repository_options(archive):
    """The RepositoryOptions of a local/sftp/s3 archive: the same place, as the storage layer opens it."""
    location = {field.name: getattr(archive, field.name) for field in dataclasses.fields(RepositoryOptions) if field.name != "part_size_mb"}
    # the archive option has no part size: a WAL segment (16 MiB by default) fits in one part of the default
    return RepositoryOptions(part_size_mb=DEFAULT_PART_SIZE_MB, **location)


class WalArchive:
    """A read view of a local/sftp/s3 archive: ``list()``, ``exists(walfile)``, ``newest_segment()``.

    The repository is opened on first use, so a view costs nothing (and fails nothing) until it is asked something.
    """

    def __init__(self, repository_options):
        self.repository_options = repository_options
        self._repository = None

    @property
    def repository(self):
        if self._repository is None:
            self._repository = open_repository(self.repository_options)
        return self._repository

    def describe(self):
        return self.repository.describe()

    def close(self):
        if self._repository is not None:
            self._repository.close()
            self._repository = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def list(self):
        """Every WAL file stored: dicts name, size, mtime (aware UTC datetime), sorted by name."""
        entries = self.repository.list_entries("")
        return [dict(name=entry.name, size=entry.size, mtime=entry.mtime) for entry in entries if WAL_NAME_RE.match(entry.name)]

    def exists(self, walfile):
        """Whether ``walfile`` is stored (as itself; ``.partial`` or ``.gz`` copies do not count)."""
        if not WAL_NAME_RE.match(walfile):
            raise PgdrError("%r is not a WAL file name" % (walfile,))
        return self.repository.exists(walfile)

    def newest_segment(self):
        """(segment name, mtime) of the newest segment stored, whole or ``.partial``; None if there is none."""
        newest = None
        for item in self.list():
            segment = item["name"].split(".")[0]
            if SEGMENT_RE.match(segment) and not item["name"].endswith(".backup") and ".backup." not in item["name"]:
                key = (segment[8:], segment[:8])  # by position first, then timeline
                if newest is None or key >= newest[0]:
                    newest = (key, segment, item["mtime"])
        return None if newest is None else (newest[1], newest[2])

    def check_decryption(self, passphrase, walfile):
        """Whether ``walfile`` is stored encrypted (gpg); raises PgdrError, in one line, when it is and ``passphrase``
        is missing or does not decrypt it: recovery would otherwise take the failure for the end of the archive."""
        from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption

        with self.repository.open_reader(walfile) as reader:
            head = reader.read(64 * 1024)
            if not encryption.looks_encrypted(head):
                return False
            what = "%s in the WAL archive %s" % (walfile, self.describe())
            if not passphrase:
                raise PgdrError("%s is encrypted (gpg): give archive.encryption.passphrase, the one it was archived with" % what)
            with encryption.gpg_session(passphrase) as gpg, open(os.devnull, "wb") as sink:
                try:
                    encryption.run_gpg(gpg.decrypt_argv(), Prepend(head, reader), sink)
                except encryption.GpgFailed as exc:
                    raise PgdrError(
                        "cannot decrypt %s: gpg says %s; check archive.encryption.passphrase: it must be the one the archive was encrypted with"
                        % (what, exc)
                    ) from None
        return True


class Prepend:
    """A reader that returns ``head`` first, then what ``reader`` yields."""

    def __init__(self, head, reader):
        self._head = head
        self._reader = reader

    def read(self, size=-1):
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._reader.read(size)


def open_archive(archive):
    """A read view (list, exists, newest_segment) of the archive the ArchiveOptions ``archive`` name; a context manager.

    PgdrError for types pgdr.backup cannot read (probackup, command).
    """
    validate(archive)
    if archive.type not in STORE_TYPES:
        raise PgdrError("archive type %s cannot be listed by pgdr.backup; check it with its own tool" % archive.type)
    return WalArchive(repository_options(archive))
