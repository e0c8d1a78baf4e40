# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive: its ``archive`` option, and ``pgdr-wal``, the helper PostgreSQL runs as archive/restore_command.

WAL files are stored flat under the archive root (``<path>/<walfile>``, or ``<bucket>/<prefix>/<walfile>``),
the layout pg_receivewal writes too, so one reader serves both.

``pgdr-wal`` is a Python zipapp built at module run time from this file, ``storage/repository.py`` and ``core/errors.py``
(the collection's own source, read through the module loader, so it works from an AnsiballZ zip), installed
at ``/usr/local/lib/pgdr/pgdr-wal`` with its settings in ``/etc/pgdr/wal/<name>.json`` (0600, owned by the
server's OS user: it may hold S3 keys)::

    pgdr-wal --config FILE push %p %f     store; identical existing copy = success, different = exit 1
    pgdr-wal --config FILE fetch %f %p    download; a missing segment falls back to %f.partial; missing = exit 1
    pgdr-wal --config FILE fetch --prefetch N %f %p
                                          the same, reading the next N segments ahead in the background into
                                          /var/spool/pgdr/<name>/ (restore_command; like pgBackRest's async archive-get)
    pgdr-wal --config FILE list [--json]  what the archive holds

This file must stay importable without Ansible (the helper runs outside it) and cheap to import:
boto3 and paramiko are loaded only by the helper that needs them.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import sys
import time
import zipfile

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

ARCHIVE_TYPES = ["local", "sftp", "s3", "probackup", "command"]
STORE_TYPES = ("local", "sftp", "s3")  # the ones pgdr-wal reads and writes
HELPER_DIR = "/usr/local/lib/pgdr"
HELPER_NAME = "pgdr-wal"
CONFIG_DIR = "/etc/pgdr/wal"
CONFIG_FORMAT = 1
CHUNK = 1024 * 1024
SPOOL_DIR = "/var/spool/pgdr"  # read-ahead segments, per config name; a config's spool_dir key overrides it (tests)
PREFETCH = 8  # segments restore_command reads ahead; 0 turns read-ahead off
LOCK_NAME = ".lock"  # held by the one prefetcher of a spool
LOG_NAME = ".prefetch.log"
SERVED_NAME = ".served"  # the segment fetch served last: the prefetcher keeps the next N after it spooled
IDLE = 15.0  # seconds without a new .served before the prefetcher ends (recovery ended or stopped asking)
IDLE_ENV = "PGDR_WAL_PREFETCH_IDLE"  # tests only: fetch passes it on as prefetch --idle
PREFETCH_POLL = 0.2  # seconds between looks at .served once the window is full
LOG_LIMIT = 64 * 1024

# 24 hex digits (timeline, log, segment) with the suffixes PostgreSQL and pg_receivewal use
WAL_NAME_RE = re.compile(r"^([0-9A-F]{8}\.history|[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?)(\.gz)?$")
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# suboptions that make up the store's settings in the helper's config, per type
_STORE_KEYS = {
    "local": ("path",),
    "sftp": ("path", "host", "port", "user", "key_file", "known_hosts"),
    "s3": ("endpoint_url", "region", "bucket", "prefix", "access_key", "secret_key", "addressing_style"),
}


def archive_argument_spec():
    """The ``archive`` option (doc fragment pgdr.backup.wal_archive): where WAL files are archived."""
    # imported here: pgdr-wal itself must not load storage.py (and boto3/paramiko) before it knows which it needs
    from ansible_collections.pgdr.backup.plugins.module_utils.storage import repository as storage

    return dict(
        archive=dict(
            type="dict",
            options=dict(
                type=dict(type="str", required=True, choices=ARCHIVE_TYPES),
                **storage.location_options(),
                backup_path=dict(type="path"),
                instance=dict(type="str"),
                binary=dict(type="path", default="pg_probackup"),
                archive_command=dict(type="str"),
                restore_command=dict(type="str"),
            ),
        )
    )


def validate_spec(spec):
    """Raise PgdrError unless ``spec`` has what its type needs."""
    spec = spec or {}
    kind = spec.get("type")
    if kind not in ARCHIVE_TYPES:
        raise PgdrError("archive.type must be one of %s, not %r" % (", ".join(ARCHIVE_TYPES), kind))
    needed = {
        "local": ("path",),
        "sftp": ("host", "path"),
        "s3": ("bucket",),
        "probackup": ("backup_path", "instance"),
        "command": (),
    }[kind]
    for option in needed:
        if spec.get(option) in (None, ""):
            raise PgdrError("archive.%s is required for archive type %s" % (option, kind))
    if kind in ("local", "sftp") and not spec["path"].startswith("/"):
        raise PgdrError("archive.path must be an absolute path for archive type %s, not %r" % (kind, spec["path"]))
    if kind == "command" and not (spec.get("archive_command") or spec.get("restore_command")):
        raise PgdrError("archive type command needs archive.archive_command and/or archive.restore_command")
    return spec


def validate_name(name):
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 100:
        raise PgdrError("archive name %r is not usable as a file name: use letters, digits, '_', '-' and '.'" % (name,))
    return name


def helper_path(helper_dir=HELPER_DIR):
    return os.path.join(helper_dir, HELPER_NAME)


def config_path(name, config_dir=CONFIG_DIR):
    return os.path.join(config_dir, "%s.json" % validate_name(name))


def spool_path(name, spool_dir=SPOOL_DIR):
    return os.path.join(spool_dir, validate_name(name))


# --- the strings PostgreSQL runs ------------------------------------------------------------------


def _helper_invocation(name, action, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR):
    argv = [helper_path(helper_dir), "--config", config_path(name, config_dir)]
    return " ".join(shlex.quote(part) for part in argv) + " " + action


# direction -> (pgdr-wal action, pg_probackup subcommand, the option of archive type command)
_DIRECTIONS = {"archive": ("push %p %f", "archive-push", "archive_command"), "restore": ("fetch %f %p", "archive-get", "restore_command")}


def _command(spec, name, direction, helper_dir, config_dir, prefetch=0):
    validate_spec(spec)
    helper_action, probackup_subcommand, own_option = _DIRECTIONS[direction]
    kind = spec["type"]
    if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
        raise PgdrError("prefetch must be a whole number of segments, 0 or more, not %r" % (prefetch,))
    if kind in STORE_TYPES:
        if direction == "restore" and prefetch:
            helper_action = "fetch --prefetch %d %%f %%p" % prefetch
        return _helper_invocation(name, helper_action, helper_dir, config_dir)
    if kind == "probackup":
        argv = [spec.get("binary") or "pg_probackup", probackup_subcommand, "-B", spec["backup_path"], "--instance", spec["instance"]]
        return " ".join(shlex.quote(part) for part in argv) + " --wal-file-path=%p --wal-file-name=%f"
    if not spec.get(own_option):
        raise PgdrError("archive type command needs archive.%s to %s" % (own_option, direction))
    return spec[own_option]


def archive_command(spec, name, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR):
    """The archive_command for ``spec`` (pure: installs nothing; see install())."""
    return _command(spec, name, "archive", helper_dir, config_dir)


def restore_command_string(spec, name, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR, prefetch=PREFETCH):
    """The restore_command for ``spec``, without installing anything; ``prefetch`` segments are read ahead (0: none)."""
    return _command(spec, name, "restore", helper_dir, config_dir, prefetch)


def restore_command(
    spec, name, os_user="postgres", install_helper=True, check_mode=False, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR, spool_dir=SPOOL_DIR, prefetch=PREFETCH
):
    """The restore_command for ``spec``; for local/sftp/s3 installs pgdr-wal, its config and an empty spool on this host first."""
    validate_spec(spec)
    if install_helper and spec["type"] in STORE_TYPES:
        install(spec, name, os_user=os_user, check_mode=check_mode, helper_dir=helper_dir, config_dir=config_dir, spool_dir=spool_dir)
        if not check_mode:
            prepare_spool(name, os_user=os_user, spool_dir=spool_dir)
    return restore_command_string(spec, name, helper_dir, config_dir, prefetch)


# --- building and installing the helper -----------------------------------------------------------

_PACKAGE = "ansible_collections.pgdr.backup.plugins.module_utils"
_SOURCES = (  # dotted below _PACKAGE
    "core.errors",
    "core.options",
    "storage.base",
    "storage.local",
    "storage.sftp",
    "storage.s3",
    "storage.repository",
    "wal.pgdr_wal",
)
_MAIN = "import sys\nfrom ansible_collections.pgdr.backup.plugins.module_utils.wal.pgdr_wal import main\nsys.exit(main(sys.argv[1:]))\n"


def _source(module_name):
    """Source text of one of our module_utils, from wherever it was imported (a plain file or AnsiballZ's zip)."""
    full = "%s.%s" % (_PACKAGE, module_name)
    module = sys.modules.get(full)
    if module is None:
        import importlib

        module = importlib.import_module(full)
    loader = getattr(module, "__loader__", None)
    text = None
    if loader is not None and hasattr(loader, "get_source"):
        try:
            text = loader.get_source(full)
        except (ImportError, OSError):
            text = None
    if text is None:
        with open(module.__file__, encoding="utf-8") as handle:
            text = handle.read()
    return text


def build_zipapp(python=None):
    """The pgdr-wal zipapp as bytes; the same sources give the same bytes (so reinstalling is a no-op)."""
    python = python or sys.executable or "/usr/bin/python3"
    buf = io.BytesIO()
    # -I: ignore PYTHON* variables and the user's site-packages; the archiver's environment is not ours to trust
    buf.write(("#!%s -I\n" % python).encode())
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:

        def add(name, text):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text)

        add("__main__.py", _MAIN)
        packages = set()
        for module_name in _SOURCES:
            parts = ("%s.%s" % (_PACKAGE, module_name)).split(".")
            packages.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        for package in sorted(packages):
            add(package + "/__init__.py", "")
        for module_name in _SOURCES:
            add("%s.py" % ("%s.%s" % (_PACKAGE, module_name)).replace(".", "/"), _source(module_name))
    return buf.getvalue()


def helper_config(spec, name, spool_dir=SPOOL_DIR):
    """The helper's JSON settings for ``spec`` (holds secrets: written 0600 only)."""
    validate_spec(spec)
    kind = spec["type"]
    if kind not in STORE_TYPES:
        raise PgdrError("pgdr-wal serves archive types %s, not %s" % (", ".join(STORE_TYPES), kind))
    store = {key: spec.get(key) for key in _STORE_KEYS[kind] if spec.get(key) not in (None, "")}
    config = dict(format=CONFIG_FORMAT, name=name, type=kind, store=store)
    if spool_dir != SPOOL_DIR:
        config["spool_dir"] = spool_dir  # only when moved, so configs written before read-ahead stay byte-identical
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def _owner_ids(user):
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PgdrError("OS user %s does not exist on this host; set os_user to the user that runs PostgreSQL" % user) from None
    return entry.pw_uid, entry.pw_gid


def _readable_by(path, uid, gid):
    """Whether ``uid`` can read ``path`` (mode bits; root can read anything)."""
    if uid == 0:
        return True
    try:
        found = os.stat(path)
    except OSError:
        return False
    mode = found.st_mode
    if found.st_uid == uid:
        return bool(mode & stat.S_IRUSR)
    if found.st_gid == gid:
        return bool(mode & stat.S_IRGRP)
    return bool(mode & stat.S_IROTH)


def _ensure_dir(path, mode, uid, gid, check_mode):
    if os.path.isdir(path):
        return False
    if not check_mode:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            _ensure_dir(parent, 0o755, 0, 0, check_mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            return False  # another run (a second task on this host) made it just now
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
    return True


def _copy(reader, out):
    copied = 0
    while True:
        data = reader.read(CHUNK)
        if not data:
            return copied
        out.write(data)
        copied += len(data)


def _unlink_quietly(path, dir_fd=None):
    """Remove a temporary or stale file; already gone (or not removable) is not this caller's problem."""
    try:
        os.unlink(path, dir_fd=dir_fd)
    except OSError:
        pass


def _install_file(path, data, mode, uid, gid, check_mode):
    """Write ``data`` atomically unless the file already holds it with this mode and owner; True if it changed."""
    try:
        found = os.stat(path)
        with open(path, "rb") as handle:
            same = handle.read() == data
        owner_ok = os.geteuid() != 0 or (found.st_uid, found.st_gid) == (uid, gid)
        if same and stat.S_IMODE(found.st_mode) == mode and owner_ok:
            return False
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    temp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if os.geteuid() == 0:
            os.chown(temp, uid, gid)
        os.chmod(temp, mode)
        os.rename(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise
    return True


def install(spec, name, os_user="postgres", check_mode=False, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR, spool_dir=SPOOL_DIR):
    """Install pgdr-wal and the config for ``spec`` on this host; dict(helper=, config=, changed=).

    Only local/sftp/s3 need it; other types return changed False and no paths. Needs root for the default
    folders (the helper is root:root 0755; the config 0600 owned by ``os_user``, who runs the archiver).
    """
    validate_spec(spec)
    name = validate_name(name)
    if spec["type"] not in STORE_TYPES:
        return dict(helper=None, config=None, changed=False)
    uid, gid = _owner_ids(os_user)
    for option in ("key_file", "known_hosts"):
        path = spec.get(option) if spec["type"] == "sftp" else None
        if path and not _readable_by(path, uid, gid):
            raise PgdrError(
                "archive.%s %s must be a file the %s user can read: pgdr-wal runs as %s from archive_command/restore_command "
                "(for example install -o %s -m 0600 the key into ~%s/.ssh/)" % (option, path, os_user, os_user, os_user, os_user)
            )
    if os.geteuid() != 0 and (helper_dir, config_dir) == (HELPER_DIR, CONFIG_DIR):
        if not (os.access(helper_dir, os.W_OK) and os.access(config_dir, os.W_OK)):
            raise PgdrError("installing pgdr-wal into %s and %s needs root: run the task with become (as root)" % (helper_dir, config_dir))
    helper, config = helper_path(helper_dir), config_path(name, config_dir)
    changed = False
    try:
        changed |= _ensure_dir(helper_dir, 0o755, 0, 0, check_mode)
        changed |= _ensure_dir(config_dir, 0o755, 0, 0, check_mode)
        changed |= _install_file(helper, build_zipapp(), 0o755, 0, 0, check_mode)
        changed |= _install_file(config, helper_config(spec, name, spool_dir), 0o600, uid, gid, check_mode)
        if spec["type"] == "local":
            # the folder the archiver writes to; a mounted share that is missing is not created by the helper itself
            changed |= _ensure_dir(spec["path"], 0o700, uid, gid, check_mode)
    except OSError as exc:
        raise PgdrError("installing pgdr-wal (%s, %s) failed: %s" % (helper, config, exc.strerror or exc)) from None
    return dict(helper=helper, config=config, changed=changed)


def prepare_spool(name, os_user="postgres", spool_dir=SPOOL_DIR):
    """Make the read-ahead spool of ``name`` empty, 0700, owned by ``os_user``; returns its path.

    Emptied on every restore: a segment an earlier restore under this name left (maybe of another archive) must never
    be served. The old folder is renamed away, not emptied in place, so a prefetcher still writing into it (it works
    through a handle on that folder) cannot refill the new one.
    """
    uid, gid = _owner_ids(os_user)
    path = spool_path(name, spool_dir)
    try:
        _ensure_dir(spool_dir, 0o755, 0, 0, False)
        if os.path.lexists(path):
            old = os.path.join(spool_dir, ".%s.old-%d" % (name, os.getpid()))
            os.rename(path, old)
            shutil.rmtree(old, ignore_errors=True)
        _ensure_dir(path, 0o700, uid, gid, False)
    except OSError as exc:
        raise PgdrError("preparing the WAL spool %s failed: %s" % (path, exc.strerror or exc)) from None
    return path


# --- reading an archive (restore prechecks, verify) -----------------------------------------------


def _utc(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


class WalArchive:
    """A read view of a local/sftp/s3 archive: ``list()``, ``exists(walfile)``, ``newest_segment()``."""

    def __init__(self, spec):
        self.spec = validate_spec(spec)
        if spec["type"] not in STORE_TYPES:
            raise PgdrError("archive type %s cannot be listed by pgdr.backup; check it with its own tool" % spec["type"])
        self.kind = spec["type"]
        self._repo = None

    @property
    def repo(self):
        if self._repo is None:
            from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import repository_from_params

            self._repo = repository_from_params(dict(self.spec))
        return self._repo

    def describe(self):
        return self.repo.describe()

    def close(self):
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def list(self):
        """Every WAL file stored: dicts name, size, mtime (aware UTC datetime), sorted by name."""
        return [dict(name=entry.name, size=entry.size, mtime=entry.mtime) for entry in self.repo.list_entries("") if WAL_NAME_RE.match(entry.name)]

    def exists(self, walfile):
        """Whether ``walfile`` is stored (as itself; ``.partial`` or ``.gz`` copies do not count)."""
        if not WAL_NAME_RE.match(walfile):
            raise PgdrError("%r is not a WAL file name" % (walfile,))
        if self.kind == "local":
            return os.path.isfile(os.path.join(self.spec["path"], walfile))
        return self.repo.exists(walfile)

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


def open_archive(spec):
    """A WalArchive for ``spec`` (local/sftp/s3); PgdrError for types pgdr.backup cannot read."""
    return WalArchive(spec)


# --- the pgdr-wal program -------------------------------------------------------------------------


class _Missing(Exception):
    """The WAL file asked for is not in the archive (fetch exits 1 without a message)."""


def _block_unneeded_imports(kind):
    # storage.py imports boto3 and paramiko up front; the archiver starts us once per segment, so skip the heavy ones
    for library, needed_by in (("boto3", "s3"), ("paramiko", "sftp")):
        if kind != needed_by and library not in sys.modules:
            sys.modules[library] = None


def load_config(path):
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as exc:
        raise PgdrError("cannot read config %s: %s" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise PgdrError("config %s is not valid JSON: %s" % (path, exc)) from None
    if config.get("format") != CONFIG_FORMAT or config.get("type") not in STORE_TYPES:
        raise PgdrError("config %s is not a pgdr-wal config (format %s)" % (path, CONFIG_FORMAT))
    return config


class LocalStore:
    """A folder: writes go to a temporary name and are linked into place, which never replaces an existing file."""

    def __init__(self, path):
        self.root = path

    def describe(self):
        return "local:%s" % self.root

    def _path(self, walfile):
        return os.path.join(self.root, walfile)

    def _fsync_dir(self):
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_existing(self, final):
        # an identical copy is success only once it is durable: the push that wrote it may have failed in its fsyncs
        with open(final, "rb") as handle:
            os.fsync(handle.fileno())
        self._fsync_dir()

    def _compare_existing(self, source, walfile, final):
        return _compare_existing(source, walfile, lambda: open(final, "rb"), os.path.getsize(final), self.describe(), lambda: self._sync_existing(final))

    def push(self, source, walfile):
        # a missing folder is an error, not something to create: it may be a share that is not mounted
        if not os.path.isdir(self.root):
            raise PgdrError("archive folder %s does not exist (is the share mounted?)" % self.root)
        final = self._path(walfile)
        if os.path.exists(final):
            return self._compare_existing(source, walfile, final)
        temp = "%s.pgdr-tmp-%d" % (final, os.getpid())
        try:
            with open(source, "rb") as src, open(temp, "wb") as dst:
                _copy(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            os.chmod(temp, 0o600)
            try:
                os.link(temp, final)  # fails if the name exists: a concurrent writer never gets replaced
            except FileExistsError:
                return self._compare_existing(source, walfile, final)
            finally:
                os.unlink(temp)
            self._fsync_dir()
        except BaseException:
            _unlink_quietly(temp)
            raise
        return "archived"

    def open_reader(self, walfile):
        try:
            return open(self._path(walfile), "rb")
        except FileNotFoundError:
            raise _Missing(walfile) from None

    def exists(self, walfile):
        return os.path.isfile(self._path(walfile))

    def close(self):
        pass


class RepoStore:
    """An sftp or s3 Repository from storage.py."""

    def __init__(self, repo):
        self.repo = repo

    def describe(self):
        return self.repo.describe()

    def push(self, source, walfile):
        if self.repo.exists(walfile):
            return _compare_existing(source, walfile, lambda: _ReaderContext(self.repo, walfile), self.repo.size(walfile), self.describe())
        with open(source, "rb") as src, self.repo.open_writer(walfile) as writer:
            while True:
                data = src.read(CHUNK)
                if not data:
                    break
                writer.write(data)
        return "archived"

    def open_reader(self, walfile):
        if not self.repo.exists(walfile):
            raise _Missing(walfile)
        return _ReaderContext(self.repo, walfile)

    def exists(self, walfile):
        return self.repo.exists(walfile)

    def close(self):
        self.repo.close()


class _ReaderContext:
    """``with`` support around a Repository's open_reader, like open() for local files."""

    def __init__(self, repo, key):
        self._cm = repo.open_reader(key)

    def __enter__(self):
        return self._cm.__enter__()

    def __exit__(self, *exc_info):
        return self._cm.__exit__(*exc_info)


def _digest(opener):
    digest = hashlib.sha256()
    with opener() as reader:
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()


def _compare_existing(source, walfile, opener, stored_size, where, make_durable=None):
    """An existing copy: identical is success (a retry after a lost reply) once ``make_durable`` ran, different is an error."""
    if stored_size == os.path.getsize(source) and _digest(opener) == _digest(lambda: open(source, "rb")):
        if make_durable is not None:
            make_durable()
        return "already archived (identical)"
    raise PgdrError(
        "%s already exists in %s with different content; refusing to overwrite it. Another cluster may be archiving "
        "into the same place (check the archive name), or the copy is damaged: compare it by hand" % (walfile, where)
    )


def store_from_config(config):
    _block_unneeded_imports(config["type"])
    store = dict(config.get("store") or {}, type=config["type"])
    if config["type"] == "local":
        return LocalStore(store["path"])
    from ansible_collections.pgdr.backup.plugins.module_utils.storage.repository import repository_from_params

    return RepoStore(repository_from_params(store))


def _write_dest(reader_cm, dest, sync=False):
    """Copy what ``reader_cm`` opens to ``dest`` through a temporary name, so ``dest`` is whole or absent."""
    temp = "%s.pgdr-tmp-%d" % (dest, os.getpid())
    try:
        with reader_cm as reader, open(temp, "wb") as out:
            _copy(reader, out)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.rename(temp, dest)
    except BaseException:
        _unlink_quietly(temp)
        raise


def fetch(store, walfile, dest):
    """Copy ``walfile`` (or, for a segment, ``walfile.partial``) to ``dest``; the name copied; raises _Missing."""
    candidates = [walfile]
    if SEGMENT_RE.match(walfile):
        candidates.append(walfile + ".partial")  # pg_receivewal's unfinished last segment
    for candidate in candidates:
        try:
            reader_cm = store.open_reader(candidate)
        except _Missing:
            continue
        _write_dest(reader_cm, dest)
        return candidate
    raise _Missing(walfile)


# --- read-ahead: fetch --prefetch N and its background prefetcher --------------------------------
#
# The spool holds only whole segments: the prefetcher writes a temporary name (".<segment>.tmp-<pid>"), fsyncs it
# and renames it into place, and fetch looks up nothing but the exact segment name. Any spool trouble falls back
# to the direct fetch; a prefetcher's error only ends the read-ahead (it is logged in <spool>/.prefetch.log).


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
        path = spool_path(config.get("name"), config.get("spool_dir") or SPOOL_DIR)
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
    try:
        os.unlink(source)
    except OSError:
        pass
    return True


def _prune_spool(spool, walfile):
    """Drop spooled segments before ``walfile``: recovery has moved past them (or to a later timeline)."""
    for entry in os.listdir(spool):
        if SEGMENT_RE.match(entry) and entry < walfile:
            _unlink_quietly(os.path.join(spool, entry))


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


def _start_prefetcher(config_file, spool, walfile, segment_size, count):
    """Start a detached ``pgdr-wal prefetch`` unless one already runs for ``spool``; PostgreSQL does not wait for it."""
    import subprocess

    probe = _try_lock(os.path.join(spool, LOCK_NAME))
    if probe is None:
        return False  # the running one follows .served and carries on
    os.close(probe)  # the child takes it for real: two starting at once still give one prefetcher
    argv = [sys.executable, "-I", os.path.abspath(sys.argv[0]), "--config", os.path.abspath(config_file), "prefetch"]
    argv += ["--count", str(count), "--size", str(segment_size)]
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


def _spool_one(store, dir_fd, walfile, segment_size):
    """Download ``walfile`` into the spool (temp, fsync, rename); False when the store has no whole copy."""
    try:
        reader_cm = store.open_reader(walfile)  # never the .partial: it is not a whole segment yet
    except _Missing:
        return False
    temp = ".%s.tmp-%d" % (walfile, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as out, reader_cm as reader:
            copied = _copy(reader, out)
            out.flush()
            os.fsync(out.fileno())
        if copied != segment_size:  # an upload in progress, or not a segment: never spool it
            raise PgdrError("%s has %d bytes, not the segment size %d" % (walfile, copied, segment_size))
        os.rename(temp, walfile, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink_quietly(temp, dir_fd)
        raise
    return True


def _tidy_spool(dir_fd, wanted):
    """Under the lock: drop temporary files of dead prefetchers and segments outside this run's window."""
    for entry in os.listdir(dir_fd):
        if (entry.startswith(".") and ".tmp-" in entry) or (SEGMENT_RE.match(entry) and entry not in wanted):
            _unlink_quietly(entry, dir_fd)


def _replaced(dir_fd, spool):
    """True when ``spool`` no longer names the folder behind ``dir_fd`` (a new restore renamed it away)."""
    try:
        now = os.stat(spool, follow_symlinks=False)
    except OSError:
        return True
    held = os.fstat(dir_fd)
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


def prefetch(config, walfile, segment_size, count, idle=IDLE):
    """The background half of ``fetch --prefetch``: one per recovery, it keeps the ``count`` segments after the one
    named in ``.served`` spooled over one store session. It ends at the end of the archive, on an error (logged),
    after ``idle`` seconds without a new ``.served``, or at once when its spool folder is replaced."""
    spool = _spool_of(config)
    if spool is None or count < 1:
        return
    # every step goes through this handle: if a new restore swaps the folder away, we notice and stop
    try:
        dir_fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    lock, store = None, None
    try:
        lock = _try_lock(LOCK_NAME, dir_fd)
        if lock is None:
            return  # another prefetcher serves this spool
        last, changed = None, time.monotonic()
        spooled = set()  # what this run spooled: a fetch takes a segment a moment before it updates .served
        while not _replaced(dir_fd, spool):
            served = _read_served(dir_fd) or walfile
            if served != last:
                last, changed = served, time.monotonic()
            elif time.monotonic() - changed > idle:
                return  # recovery ended or stopped asking
            wanted = next_segments(served, segment_size, count)
            _tidy_spool(dir_fd, wanted)
            spooled.intersection_update(wanted)
            present = set(os.listdir(dir_fd)) | spooled
            missing = [name for name in wanted if name not in present]
            if not missing:
                time.sleep(PREFETCH_POLL)
                continue
            store = store or store_from_config(config)
            if not _spool_one(store, dir_fd, missing[0], segment_size):
                _log(dir_fd, "stopped at %s: not in the archive" % missing[0])
                return
            spooled.add(missing[0])
            _log(dir_fd, "fetched %s" % missing[0])
    except Exception as exc:  # the direct fetch still works: an error only ends the read-ahead
        _log_error(dir_fd, config, exc)
    finally:
        if store is not None:
            _quietly(store.close)
        if lock is not None:
            os.close(lock)
        os.close(dir_fd)


def _log_error(dir_fd, config, exc):
    message = exc.msg if isinstance(exc, PgdrError) else "%s: %s" % (type(exc).__name__, exc)
    secret = (config.get("store") or {}).get("secret_key")
    if secret:
        message = message.replace(secret, "********")
    _quietly(_log, dir_fd, "stopped: %s" % message)


def _quietly(function, *args):
    try:
        function(*args)
    except Exception:
        pass


def _fetch_command(args, config):
    """fetch: the spool's copy when read ahead, else the store's; then keep reading ahead. The exit code."""
    walfile = args.walfile
    spool = _spool_of(config) if args.prefetch and SEGMENT_RE.match(walfile) else None
    if spool is not None and _take_spooled(spool, walfile, args.path):
        served = walfile
    else:
        try:
            served = fetch(store_from_config(config), walfile, args.path)
        except _Missing:
            return 1  # the normal end of the archive: PostgreSQL asks for files that do not exist yet
    if spool is not None and served == walfile:  # not after a .partial: that is the end of the archive
        _quietly(_read_ahead, args, spool, walfile)
    return 0


def _read_ahead(args, spool, walfile):
    _prune_spool(spool, walfile)
    _mark_served(spool, walfile)  # a running prefetcher moves its window after it
    segment_size = os.path.getsize(args.path)
    if valid_segment_size(segment_size):
        _start_prefetcher(args.config, spool, walfile, segment_size, args.prefetch)


def _count(text):
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _check_walfile(walfile):
    if not WAL_NAME_RE.match(walfile or "") or walfile.endswith(".gz"):
        raise PgdrError("%r is not a WAL file name" % (walfile,))


def main(argv=None):
    """The pgdr-wal command line; returns the exit code (0 done, 1 failed or not found, 2 usage)."""
    import argparse

    parser = argparse.ArgumentParser(prog=HELPER_NAME, description="pgdr.backup WAL archive helper")
    parser.add_argument("--config", required=True)
    sub = parser.add_subparsers(dest="action", required=True)
    push_parser = sub.add_parser("push", help="archive_command: push %%p %%f")
    push_parser.add_argument("path")
    push_parser.add_argument("walfile")
    fetch_parser = sub.add_parser("fetch", help="restore_command: fetch [--prefetch N] %%f %%p")
    fetch_parser.add_argument("--prefetch", type=_count, default=0, metavar="N", help="read the next N segments ahead (0: off)")
    fetch_parser.add_argument("walfile")
    fetch_parser.add_argument("path")
    prefetch_parser = sub.add_parser("prefetch", help="internal: the background read-ahead that fetch --prefetch starts")
    prefetch_parser.add_argument("--count", type=_count, required=True)
    prefetch_parser.add_argument("--size", type=int, required=True)
    prefetch_parser.add_argument("--idle", type=float, default=IDLE, help=argparse.SUPPRESS)
    prefetch_parser.add_argument("walfile")
    list_parser = sub.add_parser("list", help="list the archive")
    list_parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    secret = None
    try:
        config = load_config(args.config)
        secret = (config.get("store") or {}).get("secret_key")
        if args.action == "push":
            _check_walfile(args.walfile)
            store_from_config(config).push(args.path, args.walfile)
        elif args.action == "fetch":
            _check_walfile(args.walfile)
            return _fetch_command(args, config)
        elif args.action == "prefetch":
            if SEGMENT_RE.match(args.walfile) and valid_segment_size(args.size):
                prefetch(config, args.walfile, args.size, args.count, args.idle)
        else:
            spec = dict(config.get("store") or {}, type=config["type"])
            with WalArchive(spec) as archive:
                items = archive.list()
            if args.json:
                sys.stdout.write(json.dumps([dict(item, mtime=item["mtime"].isoformat()) for item in items]) + "\n")
            else:
                for item in items:
                    sys.stdout.write("%s\t%d\t%s\n" % (item["name"], item["size"], item["mtime"].isoformat()))
        return 0
    except PgdrError as exc:
        _complain(args, exc.msg, secret)
    except (OSError, EOFError) as exc:
        _complain(args, "%s%s" % (exc.strerror or exc, " (%s)" % exc.filename if getattr(exc, "filename", None) else ""), secret)
    except Exception as exc:  # never a traceback in the server log, and never exit > 125 (the archiver would die)
        _complain(args, "%s: %s" % (type(exc).__name__, exc), secret)
    return 1


def _complain(args, message, secret):
    if secret:
        message = message.replace(secret, "********")
    target = getattr(args, "walfile", "")
    sys.stderr.write("pgdr-wal: %s %s failed: %s\n" % (args.action, target, message))
    sys.stderr.flush()
