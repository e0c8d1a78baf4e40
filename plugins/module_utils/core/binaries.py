# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the client binaries (pg_dump, pg_basebackup, ...) that fit a server.

Order: the ``pg_bin_dir`` option (vendor builds such as EDB/PPAS use their own binaries), then Debian's
``/usr/lib/postgresql/<major>/bin`` and PATH. The server's own major is preferred. pg_dump, pg_dumpall,
pg_restore and psql of a newer major are accepted too: a newer pg_dump reads an older server (PostgreSQL
recommends it), an older one refuses a newer server. Every other tool must be of the server's major:
pg_basebackup and pg_receivewal sets are verified with that major's pg_verifybackup and pg_waldump (WAL is
per major), and pg_ctl starts that major's server. A ``pg_bin_dir`` binary obeys the same rules; only a
version it does not report in PostgreSQL's form (a vendor's) is taken on trust.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import parse_tool_version

DEBIAN_BIN_DIR = "/usr/lib/postgresql/%d/bin"
# tools that work against servers of older majors (and refuse newer ones themselves)
NEWER_IS_FINE = ("pg_dump", "pg_dumpall", "pg_restore", "psql")


def newer_majors(major):
    """Majors above ``major`` with a Debian bin folder on this host, nearest first."""
    found = set()
    for folder in glob.glob(DEBIAN_BIN_DIR.replace("%d", "*")):
        match = re.search(r"/(\d+)/bin$", folder)
        if match and int(match.group(1)) > major:
            found.add(int(match.group(1)))
    return sorted(found)


def candidate_paths(name, major, pg_bin_dir=None):
    """Where ``name`` is looked for, in order (pure but for listing folders: nothing is run)."""
    if pg_bin_dir:
        return [os.path.join(pg_bin_dir, name)]
    paths = [os.path.join(DEBIAN_BIN_DIR % major, name)]
    on_path = shutil.which(name)
    if on_path:
        paths.append(on_path)
    if name in NEWER_IS_FINE:
        paths += [os.path.join(DEBIAN_BIN_DIR % newer, name) for newer in newer_majors(major)]  # checked by find_binary
    return paths


def fits(name, major, version, min_major=None):
    """True if ``name`` of ``version`` ((major, minor) or None) may be used against a server of ``major``.

    ``min_major``: what else the tool must be able to read, e.g. pg_restore for an archive that pg_dump 18 wrote.
    """
    if version is None:
        return False
    if name not in NEWER_IS_FINE:
        return version[0] == major
    return version[0] >= max(major, min_major or major)


def rule(name, major, min_major=None):
    if name not in NEWER_IS_FINE:
        return "%s %d" % (name, major)
    return "%s %d or newer" % (name, max(major, min_major or major))


def tool_version(path):
    """(major, minor) a PostgreSQL tool reports with --version."""
    result = run([path, "--version"], check=False)
    return parse_tool_version(result.stdout)


def _usable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_binary(name, major, pg_bin_dir=None, min_major=None):
    """Path and version of ``name`` for a server of ``major``: the same major if there is one, else a newer one where
    the tool allows it (NEWER_IS_FINE; at least ``min_major`` if given); PgdrError (one line, naming the versions
    and the fix) if none fits."""
    if pg_bin_dir:
        path = os.path.join(pg_bin_dir, name)
        if not _usable(path):
            raise PgdrError("no %s for PostgreSQL %d found (tried %s (missing)); install the PostgreSQL %d client or fix pg_bin_dir"
                            % (name, major, path, major))
        version = tool_version(path)
        if version is None or fits(name, major, version, min_major):  # None: a vendor's own version text, taken on trust
            return path, version
        needs = rule(name, major, min_major)
        raise PgdrError("%s in pg_bin_dir %s is version %d.%d but the server is PostgreSQL %d, which needs %s; point pg_bin_dir "
                        "to such a client, or leave it unset to find one" % (name, pg_bin_dir, version[0], version[1], major, needs))
    tried, found = [], []
    for path in candidate_paths(name, major):
        if not _usable(path):
            tried.append("%s (missing)" % path)
            continue
        version = tool_version(path)
        found.append((path, version))
        tried.append("%s (version %s)" % (path, "%d.%d" % version if version else "unknown"))
    for path, version in found:  # the server's own major first, then the nearest newer one
        if version and version[0] == major and fits(name, major, version, min_major):
            return path, version
    for path, version in sorted(found, key=lambda item: item[1] or (0, 0)):
        if fits(name, major, version, min_major):
            return path, version
    raise PgdrError(
        "no %s for PostgreSQL %d found (tried %s; it needs %s); install the PostgreSQL %d client or set pg_bin_dir"
        % (name, major, ", ".join(tried), rule(name, major, min_major), max(major, min_major or major))
    )
