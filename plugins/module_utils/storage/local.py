# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local backend: a folder on the host the module (or pgdr-wal) runs on. Standard library only."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import (
    DIR_MODE,
    FILE_MODE,
    TEMP_MARK,
    Entry,
    Repository,
    Stream,
    clean_key,
    copy_stream,
    quietly,
    temp_name,
    utc,
)


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

    def _stream(self, fileobj, key):
        return Stream(fileobj, OSError, "%s in %s" % (key, self.describe()), self._hint)

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

    def _create_temp(self, key, path):
        """A new temporary file beside ``path`` (its folders made 0700): (its name, an open binary file)."""
        temp = temp_name(path)
        try:
            self._makedirs(os.path.dirname(path))
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise self._fail("creating", key, exc) from exc
        return temp, os.fdopen(fd, "wb")

    def _sync_file(self, key, fileobj):
        try:
            fileobj.flush()
            os.fsync(fileobj.fileno())
        except OSError as exc:
            raise self._fail("finishing", key, exc) from exc

    @contextlib.contextmanager
    def open_writer(self, key):
        path = self._path(key)
        temp, fileobj = self._create_temp(key, path)
        done = False
        try:
            with fileobj:
                yield self._stream(fileobj, key)
                self._sync_file(key, fileobj)
                try:
                    os.rename(temp, path)
                    self._fsync_dir(os.path.dirname(path))  # the rename itself must survive a crash too
                except OSError as exc:
                    raise self._fail("finishing", key, exc) from exc
            done = True
        finally:
            if not done:
                quietly(os.unlink, temp)

    def put_if_absent(self, key, source):
        """As Repository.put_if_absent, but race-free: the copy is hard-linked into place, which never replaces a
        file another writer stored meanwhile; and an identical copy already there is fsynced (file, then folder)
        before it counts, because the push that wrote it may have failed in its own fsyncs."""
        path = self._path(key)
        if self.exists(key):
            return self._keep_identical(key, source, path)
        with open(source, "rb") as src:
            temp, fileobj = self._create_temp(key, path)
            try:
                with fileobj:
                    copy_stream(src, self._stream(fileobj, key))
                    self._sync_file(key, fileobj)
                try:
                    os.link(temp, path)  # fails if the name exists: a concurrent writer never gets replaced
                except FileExistsError:
                    return self._keep_identical(key, source, path)
                except OSError as exc:
                    raise self._fail("finishing", key, exc) from exc
                finally:
                    quietly(os.unlink, temp)
                try:
                    self._fsync_dir(os.path.dirname(path))
                except OSError as exc:
                    raise self._fail("finishing", key, exc) from exc
            except BaseException:
                quietly(os.unlink, temp)
                raise
        return True

    def _keep_identical(self, key, source, path):
        def make_durable():
            try:
                with open(path, "rb") as existing:
                    os.fsync(existing.fileno())
                self._fsync_dir(os.path.dirname(path))
            except OSError as exc:
                raise self._fail("syncing", key, exc) from exc

        self._check_identical(key, source, make_durable)
        return False

    @contextlib.contextmanager
    def open_reader(self, key):
        try:
            fileobj = open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise self._not_found(key) from exc
        except OSError as exc:
            raise self._fail("opening", key, exc) from exc
        with fileobj:
            yield self._stream(fileobj, key)

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

    def list_entries(self, key):
        found = []
        try:
            with os.scandir(self._path(key, allow_root=True)) as entries:
                for entry in entries:
                    if TEMP_MARK not in entry.name and entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        found.append(Entry(entry.name, info.st_size, utc(info.st_mtime)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise self._fail("listing", key, exc) from exc
        return sorted(found)

    def delete(self, key):
        key = clean_key(key)
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._fail("deleting", key, exc) from exc

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
