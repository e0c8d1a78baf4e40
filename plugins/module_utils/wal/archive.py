# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The WAL archive as the modules see it: the ``archive`` option, typed, and a read view of what it holds."""

from __future__ import annotations

import dataclasses
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.wal import pgdr_wal


@dataclasses.dataclass(frozen=True)
class ArchiveOptions:
    """The ``archive`` option (doc fragment pgdr.backup.wal_archive), typed."""

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
    backup_path: Optional[str]
    instance: Optional[str]
    binary: Optional[str]
    archive_command: Optional[str]
    restore_command: Optional[str]


def archive_argument_spec():
    return pgdr_wal.archive_argument_spec()


def open_archive(options):
    """A read view (list, exists, newest_segment) of the archive ``options`` name."""
    return pgdr_wal.open_archive(dataclasses.asdict(options))
