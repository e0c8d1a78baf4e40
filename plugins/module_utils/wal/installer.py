# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Installing pgdr-wal on this host: the zipapp, its 0600 config, its spool; and the restore_command that needs them.

``pgdr-wal`` is a Python zipapp built at module run time from the files in ``_SOURCES`` (the collection's own
source, read through the module loader, so it works from an AnsiballZ zip), installed at
``/usr/local/lib/pgdr/pgdr-wal`` with its settings in ``/etc/pgdr/wal/<name>.json`` (0600, owned by the server's
OS user: it may hold S3 keys). The program (``wal/pgdr_wal.py``) never imports this file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from ansible_collections.pgdr.backup.plugins.module_utils.core import zipapp
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import (
    CONFIG_DIR,
    HELPER_DIR,
    PARALLEL,
    PREFETCH,
    RETRY_WINDOW,
    STORE_TYPES,
    config_path,
    helper_path,
    restore_command_string,
    validate,
    validate_name,
)

# imported (not only named in _SOURCES) so that AnsiballZ, which follows import statements, ships the program
from ansible_collections.pgdr.backup.plugins.module_utils.wal.pgdr_wal import CONFIG_FORMAT, SPOOL_DIR, spool_path

# every module the program imports, dotted below zipapp.PACKAGE (test_wal_helper checks the list against its imports)
_SOURCES = (
    "core.encryption",
    "core.errors",
    "core.options",
    "storage.base",
    "storage.local",
    "storage.sftp",
    "storage.s3",
    "storage.repository",
    "wal.archive",
    "wal.pgdr_wal",
)
_MAIN = "import sys\nfrom ansible_collections.pgdr.backup.plugins.module_utils.wal.pgdr_wal import main\nsys.exit(main(sys.argv[1:]))\n"

# options that make up the store's settings in the helper's config, per type
_STORE_KEYS = {
    "local": ("path", "encryption"),
    "sftp": ("path", "host", "port", "user", "key_file", "known_hosts", "encryption"),
    "s3": ("endpoint_url", "region", "bucket", "prefix", "access_key", "secret_key", "addressing_style", "sse", "encryption"),
}


def restore_command(options, name, os_user, check_mode=False, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR, spool_dir=SPOOL_DIR, prefetch=PREFETCH,
                    parallel=PARALLEL, retry_window=RETRY_WINDOW):
    """The restore_command for the ArchiveOptions ``options``; for local/sftp/s3 installs pgdr-wal, its config and
    an empty spool on this host first (check_mode: says what it would install, changes nothing)."""
    command = restore_command_string(options, name, helper_dir, config_dir, prefetch, parallel, retry_window, spool_dir)
    validate(options)
    if options.type in STORE_TYPES:
        install(options, name, os_user=os_user, check_mode=check_mode, helper_dir=helper_dir, config_dir=config_dir, spool_dir=spool_dir)
        if not check_mode:
            prepare_spool(name, os_user=os_user, spool_dir=spool_dir)
    return command


# --- building the zipapp --------------------------------------------------------------------------


def build_zipapp(python=None):
    """The pgdr-wal zipapp as bytes; the same sources give the same bytes (so reinstalling is a no-op)."""
    return zipapp.build(_SOURCES, _MAIN, python)


def _plain(value):
    """An option as JSON: a suboption (a dataclass) as a dict without its unset fields, so configs stay small and stable."""
    if dataclasses.is_dataclass(value):
        return {key: item for key, item in sorted(dataclasses.asdict(value).items()) if item not in (None, "")}
    return value


def helper_config(options, name, spool_dir=SPOOL_DIR):
    """The helper's JSON settings for the ArchiveOptions ``options`` (holds secrets: written 0600 only)."""
    validate(options)
    kind = options.type
    if kind not in STORE_TYPES:
        raise PgdrError("pgdr-wal serves archive types %s, not %s" % (", ".join(STORE_TYPES), kind))
    store = {key: _plain(getattr(options, key)) for key in _STORE_KEYS[kind] if getattr(options, key) not in (None, "")}
    config = dict(format=CONFIG_FORMAT, name=name, type=kind, store=store)
    if spool_dir != SPOOL_DIR:
        config["spool_dir"] = spool_dir  # only when moved, so configs written before read-ahead stay byte-identical
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


# --- installing -----------------------------------------------------------------------------------


def install(options, name, os_user="postgres", check_mode=False, helper_dir=HELPER_DIR, config_dir=CONFIG_DIR, spool_dir=SPOOL_DIR):
    """Install pgdr-wal and the config for the ArchiveOptions ``options`` on this host; dict(helper=, config=, changed=).

    Only local/sftp/s3 need it; other types return changed False and no paths. Needs root for the default
    folders (the helper is root:root 0755; the config 0600 owned by ``os_user``, who runs the archiver).
    """
    validate(options)
    name = validate_name(name)
    if options.type not in STORE_TYPES:
        return dict(helper=None, config=None, changed=False)
    uid, gid = zipapp.owner_ids(os_user)
    readable = [(option, getattr(options, option) if options.type == "sftp" else None) for option in ("key_file", "known_hosts")]
    readable.append(("sse.customer_key_file", options.sse.customer_key_file if options.sse else None))
    for option, path in readable:
        if path and not zipapp.readable_by(path, uid, gid):
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
        changed |= zipapp.ensure_dir(helper_dir, 0o755, 0, 0, check_mode)
        changed |= zipapp.ensure_dir(config_dir, 0o755, 0, 0, check_mode)
        changed |= zipapp.install_file(helper, build_zipapp(), 0o755, 0, 0, check_mode)
        changed |= zipapp.install_file(config, helper_config(options, name, spool_dir), 0o600, uid, gid, check_mode)
        if options.type == "local":
            # the folder the archiver writes to; a mounted share that is missing is not created by the helper itself
            changed |= zipapp.ensure_dir(options.path, 0o700, uid, gid, check_mode)
    except OSError as exc:
        raise PgdrError("installing pgdr-wal (%s, %s) failed: %s" % (helper, config, exc.strerror or exc)) from None
    return dict(helper=helper, config=config, changed=changed)


def prepare_spool(name, os_user="postgres", spool_dir=SPOOL_DIR):
    """Make the read-ahead spool of ``name`` empty, 0700, owned by ``os_user``; returns its path.

    Emptied on every restore: a segment an earlier restore under this name left (maybe of another archive) must never
    be served. The old folder is renamed away, not emptied in place, so a prefetcher still writing into it (it works
    through a handle on that folder) cannot refill the new one.
    """
    uid, gid = zipapp.owner_ids(os_user)
    path = spool_path(name, spool_dir)
    try:
        zipapp.ensure_dir(spool_dir, 0o755, 0, 0, False)
        if os.path.lexists(path):
            old = os.path.join(spool_dir, ".%s.old-%d" % (name, os.getpid()))
            os.rename(path, old)
            shutil.rmtree(old, ignore_errors=True)
        zipapp.ensure_dir(path, 0o700, uid, gid, False)
    except OSError as exc:
        raise PgdrError("preparing the WAL spool %s failed: %s" % (path, exc.strerror or exc)) from None
    return path
