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

import base64
import dataclasses
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import (
    ADDRESSING_STYLES,
    DEFAULT_PART_SIZE_MB,
)

REPOSITORY_TYPES = ["local", "sftp", "s3"]
SSE_MODES = ["sse-s3", "sse-kms", "sse-c"]
SSE_KEY_BYTES = 32  # SSE-C is AES-256: the store refuses any other key length


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
        sse=dict(
            type="dict",
            options=dict(
                mode=dict(type="str", required=True, choices=SSE_MODES),
                kms_key_id=dict(type="str"),
                customer_key=dict(type="str", no_log=True),
                customer_key_file=dict(type="path"),
            ),
        ),
    )


def storage_argument_spec():
    """The ``repository`` option every module that reads or writes backups accepts."""
    options = dict(type=dict(type="str", required=True, choices=REPOSITORY_TYPES), **location_options())
    options["part_size_mb"] = dict(type="int", default=DEFAULT_PART_SIZE_MB)
    return dict(repository=dict(type="dict", required=True, options=options))


@dataclasses.dataclass(frozen=True)
class SseOptions:
    """S3 server-side encryption (the ``sse`` suboption), typed."""

    mode: str
    kms_key_id: Optional[str]
    customer_key: Optional[str]
    customer_key_file: Optional[str]


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
    sse: Optional[SseOptions]


@dataclasses.dataclass(frozen=True)
class RepositoryOptions(LocationOptions):
    """The ``repository`` option (storage_argument_spec), typed."""

    type: str
    part_size_mb: Optional[int]


def _decode_key(text, where):
    """The 32 bytes of an SSE-C key written as base64 (what AWS and every S3 tool print); PgdrError otherwise."""
    try:
        key = base64.b64decode("".join(text.split()), validate=True)
    except (ValueError, TypeError):
        key = None
    if key is None or len(key) != SSE_KEY_BYTES:
        raise PgdrError(
            "%s is not a 256-bit key in base64: make one with 'openssl rand -base64 32' (the same key is needed to read every object back)" % where
        )
    return key


def sse_request(sse, kind, option="repository"):
    """The S3 request parameters of the SseOptions ``sse`` (None: none), checked up front: {"write": {...}, "read": {...}}.

    ``write`` goes with every object written (PutObject, CreateMultipartUpload); ``read`` with every request that
    touches an object's content (UploadPart, GetObject, HeadObject), which SSE-C needs and the others do not.
    ``option`` names the option in messages (``repository`` or ``archive``). The key is never in a message.
    """
    if sse is None:
        return None
    if kind != "s3":
        raise PgdrError("%s.sse is server-side encryption of an S3 store, not of type %s: drop %s.sse (encrypt with gpg instead)" % (option, kind, option))
    mode = sse.mode
    if mode not in SSE_MODES:
        raise PgdrError("%s.sse.mode must be one of %s, not %r" % (option, ", ".join(SSE_MODES), mode))
    customer = sse.customer_key not in (None, "") or sse.customer_key_file not in (None, "")
    if mode != "sse-c" and customer:
        raise PgdrError("%s.sse.customer_key and customer_key_file are for mode sse-c, not %s: drop them or use mode sse-c" % (option, mode))
    if mode != "sse-kms" and sse.kms_key_id not in (None, ""):
        raise PgdrError("%s.sse.kms_key_id is for mode sse-kms, not %s: drop it or use mode sse-kms" % (option, mode))
    if mode == "sse-s3":
        return {"write": {"ServerSideEncryption": "AES256"}, "read": {}}
    if mode == "sse-kms":
        write = {"ServerSideEncryption": "aws:kms"}
        if sse.kms_key_id:  # without one the store uses its default key (on AWS the account's aws/s3 key)
            write["SSEKMSKeyId"] = sse.kms_key_id
        return {"write": write, "read": {}}
    given = [name for name in ("customer_key", "customer_key_file") if getattr(sse, name) not in (None, "")]
    if len(given) != 1:
        raise PgdrError("%s.sse.mode sse-c needs exactly one of %s.sse.customer_key (base64) and %s.sse.customer_key_file" % (option, option, option))
    if given[0] == "customer_key":
        key = _decode_key(sse.customer_key, "%s.sse.customer_key" % option)
    else:
        path = sse.customer_key_file
        try:
            with open(path, "rb") as handle:
                data = handle.read(4096)
        except OSError as exc:
            raise PgdrError("cannot read %s.sse.customer_key_file %s: %s" % (option, path, exc.strerror or exc)) from None
        # 32 raw bytes, or the key in base64 on one line
        where = "the content of %s.sse.customer_key_file %s" % (option, path)
        key = data if len(data) == SSE_KEY_BYTES else _decode_key(data.decode("ascii", "replace"), where)
    customer = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    return {"write": dict(customer), "read": dict(customer)}


def open_repository(options):
    """The backend for a RepositoryOptions; its library is imported here, only for the type asked for."""
    kind = options.type
    sse = sse_request(options.sse, kind)

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
            sse=sse,
        )
    raise PgdrError("repository.type must be one of %s, not %r" % (", ".join(REPOSITORY_TYPES), kind))
