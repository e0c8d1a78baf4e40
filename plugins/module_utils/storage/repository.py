# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup repositories: the ``repository`` option and ``open_repository``, which opens the backend it names.

One interface (``storage/base.py``), three backends, each in its own file with its own library: ``local.py``
(standard library), ``sftp.py`` (paramiko), ``s3.py`` (boto3). A backend's file is imported only when a
repository of its type is opened, so a local push of pgdr-wal never loads boto3 or paramiko. (AnsiballZ still
ships all three with a module: it finds imports inside functions too.)

Use ``storage_argument_spec()`` in a module's argument spec (documented by the ``pgdr.backup.storage`` doc
fragment), ``typed(RepositoryOptions, module.params["repository"])`` once, and ``open_repository(options)``;
every failure is a ``PgdrError``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import (
    ADDRESSING_STYLES,
    DEFAULT_PART_SIZE_MB,
)

REPOSITORY_TYPES = ["local", "sftp", "s3"]


def location_options():
    """Where a backend is: the suboptions ``repository`` and the WAL ``archive`` option share (without ``type``)."""
    return dict(
        path=dict(type="str"),
        host=dict(type="str"),
        port=dict(type="int", default=22),
        user=dict(type="str", default="root"),
        key_file=dict(type="path"),
        known_hosts=dict(type="path"),
        endpoint_url=dict(type="str"),
        region=dict(type="str"),
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        access_key=dict(type="str", no_log=True),
        secret_key=dict(type="str", no_log=True),
        addressing_style=dict(type="str", default="path", choices=ADDRESSING_STYLES),
    )


def storage_argument_spec():
    """The ``repository`` option every module that reads or writes backups accepts."""
    options = dict(type=dict(type="str", required=True, choices=REPOSITORY_TYPES), **location_options())
    options["part_size_mb"] = dict(type="int", default=DEFAULT_PART_SIZE_MB)
    return dict(repository=dict(type="dict", required=True, options=options))


@dataclasses.dataclass(frozen=True)
class LocationOptions:
    """Where a backend is (location_options), typed: shared by the ``repository`` and the WAL ``archive`` options."""

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


@dataclasses.dataclass(frozen=True)
class RepositoryOptions(LocationOptions):
    """The ``repository`` option (storage_argument_spec), typed."""

    type: str
    part_size_mb: Optional[int]


def open_repository(options):
    """The backend for a RepositoryOptions; its library is imported here, only for the type asked for."""
    kind = options.type

    def required(*names):
        for name in names:
            if getattr(options, name) in (None, ""):
                raise PgdrError("repository.%s is required for type %s" % (name, kind))

    if kind == "local":
        required("path")
        from ansible_collections.pgdr.backup.plugins.module_utils.storage.local import LocalRepository

        return LocalRepository(options.path)
    if kind == "sftp":
        required("host", "path")
        from ansible_collections.pgdr.backup.plugins.module_utils.storage.sftp import SftpRepository

        return SftpRepository(options.host, options.path, port=options.port, user=options.user, key_file=options.key_file, known_hosts=options.known_hosts)
    if kind == "s3":
        required("bucket")
        from ansible_collections.pgdr.backup.plugins.module_utils.storage.s3 import S3Repository

        return S3Repository(
            options.bucket,
            prefix=options.prefix,
            endpoint_url=options.endpoint_url,
            region=options.region,
            access_key=options.access_key,
            secret_key=options.secret_key,
            addressing_style=options.addressing_style,
            part_size_mb=options.part_size_mb,
        )
    raise PgdrError("repository.type must be one of %s, not %r" % (", ".join(REPOSITORY_TYPES), kind))
