# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Repository interface every backend implements, and what the backends share.

Paths inside a repository are always relative, '/'-separated keys such as
``<cluster>/<backup_id>/db_sales.dump``; each backend maps them onto its own
root (a folder, an SFTP folder, a bucket prefix). Writers stream: nothing is
staged as a whole copy on local disk, and a writer that does not finish
cleanly leaves nothing that looks complete (local/SFTP: a temporary name that
is removed; S3: the multipart upload is aborted). Every failure is a PgdrError.

Standard library only: pgdr-wal (which runs outside Ansible, once per WAL segment) imports this file.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from typing import NamedTuple

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_MARK = ".partial-"  # <key>.partial-<random>: an unfinished write, never listed as an object
MIB = 1024 * 1024
COPY_CHUNK = MIB
ADDRESSING_STYLES = ["path", "virtual", "auto"]  # S3's; here so the option spec need not load the S3 backend
DEFAULT_PART_SIZE_MB = 64  # S3 multipart part size: the repository option's default, and the WAL archive's (it has no option)


class NotFound(PgdrError):
    """No object under the key asked for (``open_reader``, ``get_bytes``, ``size``)."""


class Entry(NamedTuple):
    """One object of a listing: its name within the folder listed, size in bytes, last change (aware UTC)."""

    name: str
    size: int
    mtime: datetime.datetime


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


def temp_name(path):
    """The name an unfinished write of ``path`` goes to (never listed, never a valid key)."""
    return "%s%s%s" % (path, TEMP_MARK, secrets.token_hex(8))


def utc(timestamp):
    """A POSIX timestamp as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


def quietly(func, *args, **kwargs):
    """Cleanup whose own failure is not the caller's problem: after a failure, its errors must not hide the one that caused it."""
    try:
        func(*args, **kwargs)
    except Exception:
        pass


def copy_stream(reader, writer, chunk=COPY_CHUNK):
    """Copy ``reader`` to ``writer`` in chunks until ``read`` returns ``b''``; the number of bytes copied."""
    copied = 0
    while True:
        data = reader.read(chunk)
        if not data:
            return copied
        writer.write(data)
        copied += len(data)


class HashingReader:
    """A reader that hashes (sha256) and counts what passes through it, so a restore checks a stored file against its
    manifest while a tool consumes it and reads it once."""

    def __init__(self, inner):
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n=-1):
        data = self.inner.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self):
        """Read what the consumer left (tar and pg_restore stop at their end markers): the rest counts for the digest."""
        while self.read(COPY_CHUNK):
            pass

    def matches(self, size, sha256):
        return self.size == size and self.sha.hexdigest() == sha256


def _sha256(opener):
    digest = hashlib.sha256()
    with opener() as reader:
        for data in iter(lambda: reader.read(COPY_CHUNK), b""):
            digest.update(data)
    return digest.hexdigest()


class Stream:
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

    def put_if_absent(self, key, source):
        """Store the local file ``source`` under ``key`` unless an object is there already (a WAL push).

        An identical object is success: a retry after a lost reply. A different one is a PgdrError, and it is
        left as it is. Returns True when this call stored the file, False when an identical copy was there.
        This form looks, then writes through ``open_writer``; the local backend does better (see there).
        """
        if self.exists(key):
            self._check_identical(key, source)
            return False
        with open(source, "rb") as src, self.open_writer(key) as writer:
            copy_stream(src, writer)
        return True

    def _check_identical(self, key, source, make_durable=None):
        """An existing object: identical to ``source`` is fine once ``make_durable`` ran; different is an error."""
        stored_size = self.size(key)
        if stored_size == os.path.getsize(source) and _sha256(lambda: self.open_reader(key)) == _sha256(lambda: open(source, "rb")):
            if make_durable is not None:
                make_durable()
            return
        raise PgdrError(
            # its one caller today is pgdr-wal's push, hence the hint about archive names
            "%s already exists in %s with different content; refusing to overwrite it. Another cluster may be archiving "
            "into the same place (check the archive name), or the copy is damaged: compare it by hand" % (key, self.describe())
        )

    def open_reader(self, key):
        """Context manager yielding a binary file-like object with ``read(n)`` (streaming).

        ``read(n)`` may return fewer than ``n`` bytes; ``b''`` means the end.
        A missing key raises NotFound (a PgdrError) when the context is entered.
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
        """Size in bytes of the object under ``key``; NotFound if there is none."""
        raise NotImplementedError

    def list_dirs(self, key):
        """Names of the immediate children "folders" under ``key`` (e.g. backup ids under a cluster), sorted."""
        raise NotImplementedError

    def list_files(self, key):
        """Keys (from the repository root, ready for ``open_reader``) of every object below ``key``, recursively, sorted.

        Unfinished writes are not listed; an empty ``key`` means the whole repository.
        """
        raise NotImplementedError

    def list_entries(self, key):
        """The objects directly in the folder ``key`` (not in its sub-folders) as Entry(name, size, mtime), sorted by name.

        One listing call per folder (page): S3's listing pages, SFTP's listdir_attr and scandir carry size and
        mtime. Unfinished writes and folders are not listed; a missing folder lists nothing; an empty ``key``
        means the repository root.
        """
        raise NotImplementedError

    def delete_tree(self, key):
        """Remove ``key`` and everything below it; no error if it does not exist.

        The repository root itself (an empty key) is refused.
        """
        raise NotImplementedError

    def delete(self, key):
        """Remove the one object ``key``; no error if there is none. A folder is not an object: use ``delete_tree``."""
        raise NotImplementedError

    def delete_many(self, keys):
        """Remove the objects ``keys`` (one ``delete`` each; S3 sends batches); the number of keys asked for."""
        keys = list(keys)
        for key in keys:
            self.delete(key)
        return len(keys)

    def close(self):
        """Release connections (SFTP session, S3 client)."""

    def _not_found(self, key):
        return NotFound("%s not found in %s: check the key and that the backup that writes it finished" % (key, self.describe()), key=key)

    @staticmethod
    def _tree_key(key):
        key = clean_key(key, allow_root=True)
        if not key:
            raise PgdrError("refusing to delete the whole repository: give the key of a cluster or backup folder")
        return key
