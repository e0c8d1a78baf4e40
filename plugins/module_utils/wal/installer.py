# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Installing pgdr-wal on this host: the zipapp, its 0600 config, its spool; and the commands PostgreSQL runs."""

from __future__ import annotations

import dataclasses

from ansible_collections.pgdr.backup.plugins.module_utils.wal import pgdr_wal


def restore_command(options, name, os_user, check_mode=False):
    """The restore_command for the archive ``options`` (ArchiveOptions), installing pgdr-wal unless check_mode."""
    return pgdr_wal.restore_command(dataclasses.asdict(options), name, os_user=os_user, check_mode=check_mode)
