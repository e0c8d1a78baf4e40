# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL version numbers: the server's, and a client binary's."""

from __future__ import annotations

import re

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def major_of(version_num):
    """150018 -> 15, 90624 -> 9.6 style numbers are out of scope (returns 9)."""
    return int(version_num) // 10000


def server_version(conn):
    """{num, major, text} of the server behind a psycopg connection."""
    num = conn.info.server_version
    return dict(num=num, major=major_of(num), text=conn.info.parameter_status("server_version") or str(num))


def parse_tool_version(text):
    """'pg_dump (PostgreSQL) 18.1 (Debian 18.1-1)' -> (18, 1); None if not a PostgreSQL tool."""
    match = _VERSION_RE.search(text or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)
