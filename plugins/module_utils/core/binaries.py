# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the client binaries (pg_dump, pg_basebackup, ...) that match a server.

Order: the ``pg_bin_dir`` option (vendor builds such as EDB/PPAS must use
their own binaries), Debian's ``/usr/lib/postgresql/<major>/bin``, then PATH.
A binary found on PATH must report the same major version as the server.
"""

from __future__ import annotations

import os
import shutil

from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.versions import parse_tool_version

DEBIAN_BIN_DIR = "/usr/lib/postgresql/%d/bin"


def candidate_paths(name, major, pg_bin_dir=None):
    """Where ``name`` is looked for, in order (pure: nothing is checked)."""
    if pg_bin_dir:
        return [os.path.join(pg_bin_dir, name)]
    paths = [os.path.join(DEBIAN_BIN_DIR % major, name)]
    on_path = shutil.which(name)
    if on_path:
        paths.append(on_path)
    return paths


def tool_version(path):
    """(major, minor) a PostgreSQL tool reports with --version."""
    result = run([path, "--version"], check=False)
    return parse_tool_version(result.stdout)


def find_binary(name, major, pg_bin_dir=None):
    """Path and version of ``name`` for a server of ``major``; PgdrError if none fits."""
    tried = []
    for path in candidate_paths(name, major, pg_bin_dir):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            tried.append("%s (missing)" % path)
            continue
        version = tool_version(path)
        if pg_bin_dir:  # the user chose it: vendor builds may report other versions
            return path, version
        if version and version[0] == major:
            return path, version
        tried.append("%s (version %s)" % (path, "%d.%d" % version if version else "unknown"))
    raise PgdrError(
        "no %s for PostgreSQL %d found (tried %s); install the PostgreSQL %d client or set pg_bin_dir"
        % (name, major, ", ".join(tried), major)
    )
