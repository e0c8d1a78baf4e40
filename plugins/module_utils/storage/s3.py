# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 backend: a bucket prefix on AWS S3 or an S3-compatible store, reached with boto3 (the only file that imports it)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import (
    ADDRESSING_STYLES,
    DEFAULT_PART_SIZE_MB,
    MIB,
    TEMP_MARK,
    Entry,
    Repository,
    Stream,
    clean_key,
    quietly,
)

try:
    import boto3
    import botocore.config
    import botocore.exceptions

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # reported when a repository of this type is opened
    boto3 = None
    botocore = None
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc

S3_MIN_PART_MB = 5  # S3's minimum for every part but the last
S3_MAX_PART_MB = 5120
S3_MAX_PARTS = 10000
S3_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts


def _content_md5(data):
    # the store checks each upload against it, whatever checksums the boto3 version adds
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class _S3Writer:
    """Streams into a multipart upload; an object smaller than a part is one put_object.

    A full part is uploaded by a background thread while the next one fills, so
    the producer (pg_dump behind a pipe) never waits for the network unless two
    parts are pending: memory stays at two parts. A failed part upload is raised
    by the next write or by finish.
    """

    def __init__(self, repo, key):
        self._repo = repo
        self._key = key
        self._name = repo._object(key)
        self._buf = bytearray()
        self._upload_id = None
        self._parts = []
        self._written = 0
        self._uploader = None
        self._pending = None  # the future of the part being uploaded

    def write(self, data):
        view = memoryview(data).cast("B")
        written = len(view)
        part_size = self._repo.part_size
        while view:
            room = part_size - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) >= part_size:
                self._upload_part()
        self._written += written
        return written

    def tell(self):
        return self._written

    def _upload_part(self):
        what = "uploading %s" % self._key
        if self._upload_id is None:
            self._upload_id = self._repo._call("create_multipart_upload", what, Key=self._name, **self._repo.sse_write)["UploadId"]
            self._uploader = ThreadPoolExecutor(max_workers=1)
        number = len(self._parts) + 1
        if number > S3_MAX_PARTS:
            raise PgdrError(
                "%s is larger than %d parts of %d MiB: raise repository.part_size_mb" % (self._key, S3_MAX_PARTS, self._repo.part_size // MIB), key=self._key
            )
        body, self._buf = bytes(self._buf), bytearray()
        self._wait_pending()
        part = dict(Key=self._name, UploadId=self._upload_id, PartNumber=number, Body=body, ContentMD5=_content_md5(body), **self._repo.sse_read)
        self._parts.append({"ETag": None, "PartNumber": number})
        self._pending = self._uploader.submit(self._send_part, part, self._parts[-1], what)

    def _send_part(self, part, record, what):
        record["ETag"] = self._repo._call("upload_part", what, **part)["ETag"]

    def _wait_pending(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # re-raises the upload's PgdrError

    def finish(self):
        what = "uploading %s" % self._key
        if self._upload_id is None:
            self._repo._call("put_object", what, Key=self._name, Body=self._buf, ContentMD5=_content_md5(self._buf), **self._repo.sse_write)
            return
        if self._buf:
            self._upload_part()
        self._wait_pending()
        self._uploader.shutdown()
        self._repo._call("complete_multipart_upload", what, Key=self._name, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})

    def abort(self):
        self._buf = bytearray()
        if self._uploader is not None:
            with contextlib.suppress(Exception):  # the original failure is the one to report
                self._wait_pending()
            self._uploader.shutdown()
        if self._upload_id is not None:
            # if even this fails, the parts stay invisible until a bucket lifecycle rule removes them
            quietly(self._repo.client.abort_multipart_upload, Bucket=self._repo.bucket, Key=self._name, UploadId=self._upload_id)


_RAISE = object()


class S3Repository(Repository):
    """A bucket prefix on AWS S3 or an S3-compatible store (MinIO, SeaweedFS, Ceph RGW, Alibaba OSS, Tencent COS)."""

    kind = "s3"

    def __init__(
        self,
        bucket,
        prefix="",
        endpoint_url=None,
        region=None,
        access_key=None,
        secret_key=None,
        addressing_style="path",
        part_size_mb=DEFAULT_PART_SIZE_MB,
        sse=None,
    ):
        if not HAS_BOTO3:
            raise PgdrError("repository type s3 needs the Python library boto3 on the managed host: install python3-boto3 (or pip install boto3)")
        if not S3_MIN_PART_MB <= int(part_size_mb) <= S3_MAX_PART_MB:
            raise PgdrError("repository.part_size_mb must be between %d and %d (S3 limits), not %s" % (S3_MIN_PART_MB, S3_MAX_PART_MB, part_size_mb))
        if addressing_style not in ADDRESSING_STYLES:
            raise PgdrError("repository.addressing_style must be one of %s, not %r" % (", ".join(ADDRESSING_STYLES), addressing_style))
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")  # None or "": the bucket's root
        self.endpoint_url = endpoint_url
        self.region = region
        self.addressing_style = addressing_style
        self.part_size = int(part_size_mb) * MIB
        self._access_key = access_key
        self._secret_key = secret_key
        self._client = None
        self._bucket_seen = False
        # server-side encryption (storage.repository.sse_request): with every object written, and (SSE-C) every read
        self.sse_write = dict((sse or {}).get("write") or {})
        self.sse_read = dict((sse or {}).get("read") or {})
        key = self.sse_write.get("SSECustomerKey")
        self._customer_key_b64 = base64.b64encode(key).decode() if key else None

    def describe(self):
        where = "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://%s" % self.bucket
        if self.endpoint_url:
            return "%s (endpoint %s)" % (where, self.endpoint_url)
        return "%s (region %s)" % (where, self.region) if self.region else where

    def location(self, key):
        parts = [part for part in (self.prefix, clean_key(key, allow_root=True)) if part]
        return "s3://%s/%s" % (self.bucket, "/".join(parts))

    @property
    def client(self):
        """The boto3 S3 client, made on first use."""
        if self._client is None:
            options = dict(
                s3={"addressing_style": self.addressing_style},
                signature_version="s3v4",
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
            )
            if "request_checksum_calculation" in botocore.config.Config.OPTION_DEFAULTS:
                # botocore >= 1.36 adds CRC trailers to every upload, which many S3-compatible stores reject
                options.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
            try:
                session = boto3.session.Session(aws_access_key_id=self._access_key, aws_secret_access_key=self._secret_key, region_name=self.region)
                self._client = session.client("s3", endpoint_url=self.endpoint_url, config=botocore.config.Config(**options))
            except (ValueError, botocore.exceptions.BotoCoreError) as exc:
                raise self._scrub(
                    PgdrError("cannot set up an S3 client for %s: %s; check repository.endpoint_url and repository.region" % (self.describe(), exc))
                ) from exc
        return self._client

    def close(self):
        if self._client is not None:
            with contextlib.suppress(AttributeError):  # client.close() is new in botocore 1.33
                self._client.close()
        self._client = None

    def _object(self, key, allow_root=False):
        key = clean_key(key, allow_root)
        return "/".join(part for part in (self.prefix, key) if part)

    def _folder(self, key):
        name = self._object(key, allow_root=True)
        return name + "/" if name else ""

    def _scrub(self, error):
        # no store should echo a secret, but a message is no place to find out
        for secret in (self._secret_key, self._customer_key_b64):
            if secret and secret in error.msg:
                error.msg = error.msg.replace(secret, "********")
                error.args = (error.msg,)
        return error

    def _error(self, what, exc):
        where = self.describe()
        errors = botocore.exceptions
        if isinstance(exc, (errors.NoCredentialsError, errors.PartialCredentialsError)):
            hint = "set repository.access_key and repository.secret_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            return self._scrub(PgdrError("no S3 credentials for %s while %s: %s" % (where, what, hint)))
        if isinstance(exc, (errors.EndpointConnectionError, errors.ConnectTimeoutError)):
            return self._scrub(PgdrError("cannot reach %s while %s: %s; check repository.endpoint_url (or region) and the network" % (where, what, exc)))
        if not isinstance(exc, errors.ClientError):
            return self._scrub(PgdrError("S3 request for %s failed while %s: %s" % (where, what, exc)))
        info = exc.response.get("Error", {})
        code = str(info.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown"))
        detail = "%s %s" % (code, info.get("Message") or "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            hint = "check repository.access_key and repository.secret_key"
        elif code in ("AccessDenied", "403", "AllAccessDisabled"):
            hint = "check that the credentials may use this bucket and prefix (bucket policy, IAM)"
            if self.sse_read:  # an SSE-C object read with another key is refused the same way
                hint += ", and that repository.sse gives the customer key the object was written with"
        elif self._sse_problem(code, detail):
            hint = self._sse_hint()
            if code in ("400", "BadRequest"):  # a bare 400 (HEAD has no body) can also be a request signed for another region
                hint += " (or check repository.region)"
        elif code == "NoSuchBucket":
            hint = "create the bucket or fix repository.bucket"
        elif code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "301"):
            hint = "check repository.region (and repository.endpoint_url)"
        elif self.sse_write and code in ("InternalError", "NotImplemented", "500", "501", "InvalidArgument", "InvalidRequest"):
            hint = self._sse_hint()
        else:
            hint = "check repository.endpoint_url, repository.bucket and the store's logs"
        return self._scrub(PgdrError("S3 refused %s on %s (%s): %s" % (what, where, detail.strip(), hint), error_code=code))

    def _sse_problem(self, code, detail):
        """An answer about server-side encryption: a customer key missing or wrong, or a mode or KMS key the store refuses."""
        text = detail.lower()
        if "encryption" in text or "customer" in text or "kms" in text:
            return True
        # HEAD has no body: an SSE-C object read without (or with another) key is a bare 400 or 403
        return code in ("400", "BadRequest")

    def _sse_hint(self):
        if self.sse_read:
            return "check repository.sse: the object must be read with the SSE-C key it was written with"
        if self.sse_write:
            return "check that the store supports repository.sse.mode (and the KMS key id); drop repository.sse if it does not"
        return "the object is encrypted with a customer key (SSE-C): give repository.sse with mode sse-c and that key"

    @staticmethod
    def _is_missing(exc):
        info = exc.response.get("Error", {})
        return str(info.get("Code")) in ("404", "NoSuchKey", "NotFound")

    def _call(self, operation, what, missing=_RAISE, **kwargs):
        """One S3 API call on this bucket, errors as PgdrError; ``missing`` is returned instead of failing on 404."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if missing is not _RAISE and self._is_missing(exc):
                return missing
            raise self._error(what, exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(what, exc) from exc

    def _pages(self, what, **kwargs):
        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(what, exc) from exc

    @contextlib.contextmanager
    def open_writer(self, key):
        writer = _S3Writer(self, key)
        done = False
        try:
            yield writer
            writer.finish()
            done = True
        finally:
            if not done:
                writer.abort()

    def put_bytes_atomic(self, key, data):
        data = bytes(data)
        self._call("put_object", "uploading %s" % key, Key=self._object(key), Body=data, ContentMD5=_content_md5(data), **self.sse_write)

    @contextlib.contextmanager
    def open_reader(self, key):
        reply = self._call("get_object", "reading %s" % key, missing=None, Key=self._object(key), **self.sse_read)
        if reply is None:
            raise self._not_found(key)
        body = reply["Body"]
        try:
            hint = "check the network and retry"
            yield Stream(body, (botocore.exceptions.BotoCoreError, OSError), "%s in %s" % (key, self.describe()), hint)
        finally:
            quietly(body.close)

    def _head(self, key):
        reply = self._call("head_object", "checking %s" % key, missing=None, Key=self._object(key), **self.sse_read)
        if reply is None and not self._bucket_seen:
            # HEAD answers a missing bucket with the same bare 404 as a missing key: tell them apart once
            try:
                found = self._call("head_bucket", "checking the bucket", missing=False)
            except PgdrError:
                found = None  # not allowed to ask (403): the key is just missing
            if found is False:
                msg = "bucket %s does not exist at %s: create the bucket or fix repository.bucket" % (self.bucket, self.describe())
                raise PgdrError(msg, error_code="NoSuchBucket")
            self._bucket_seen = True
        return reply

    def exists(self, key):
        return self._head(key) is not None

    def size(self, key):
        reply = self._head(key)
        if reply is None:
            raise self._not_found(key)
        return reply["ContentLength"]

    def list_dirs(self, key):
        folder = self._folder(key)
        names = []
        for page in self._pages("listing %s" % (key or "/"), Prefix=folder, Delimiter="/"):
            names.extend(entry["Prefix"][len(folder):].rstrip("/") for entry in page.get("CommonPrefixes", []))
        return sorted(name for name in names if name)

    def _names_below(self, folder, what):
        for page in self._pages(what, Prefix=folder):
            for entry in page.get("Contents", []):
                yield entry["Key"]

    def list_files(self, key):
        root = self._folder("")
        names = self._names_below(self._folder(key), "listing %s" % (key or "/"))
        # keys ending in '/' are folder markers (made by consoles, or SeaweedFS's empty folders), not objects
        return sorted(name[len(root):] for name in names if not name.endswith("/"))

    def list_entries(self, key):
        folder = self._folder(key)
        found = []
        for page in self._pages("listing %s" % (key or "/"), Prefix=folder, Delimiter="/"):
            for item in page.get("Contents", []):
                name = item["Key"][len(folder):]
                # "" is the folder's own marker object (consoles, SeaweedFS's empty folders)
                if name and TEMP_MARK not in name:
                    found.append(Entry(name, item["Size"], item["LastModified"].astimezone(datetime.timezone.utc)))
        return sorted(found)

    def _walk(self, folder, what, objects, folders):
        """Every object and every folder below ``folder`` (itself included), folder by folder."""
        folders.append(folder)
        for page in self._pages(what, Prefix=folder, Delimiter="/"):
            objects.extend(entry["Key"] for entry in page.get("Contents", []) if entry["Key"] != folder)
            for entry in page.get("CommonPrefixes", []):
                self._walk(entry["Prefix"], what, objects, folders)

    def _abort_uploads(self, key, what):
        """Abort the unfinished multipart uploads of ``key`` and below it: parts nobody can list as objects, but
        that the store keeps (and bills) until aborted, e.g. those of a writer that died with the store unreachable."""
        name, folder = self._object(key), self._folder(key)
        try:
            pages = list(self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=name))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(what, exc) from exc
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Key"] == name or upload["Key"].startswith(folder):
                    self._call("abort_multipart_upload", what, missing=None, Key=upload["Key"], UploadId=upload["UploadId"])

    def delete_tree(self, key):
        key = self._tree_key(key)
        what = "deleting %s" % key
        self._abort_uploads(key, what)
        objects, folders = [], []
        self._walk(self._folder(key), what, objects, folders)
        # Stores with real folders (SeaweedFS) keep them, empty, once their objects are gone, and show them only
        # to listings with a delimiter; deleting the key "<folder>/" removes one (elsewhere it is a no-op or removes
        # a console's marker object). Objects first, then folders deepest first.
        names = [self._object(key)] + objects + folders[::-1]
        self._delete_names(names, what, "under %s" % key)

    def _delete_names(self, names, what, where):
        """DeleteObjects in batches of S3_DELETE_BATCH (full object names); a refused key is a PgdrError."""
        for start in range(0, len(names), S3_DELETE_BATCH):
            batch = [{"Key": name} for name in names[start:start + S3_DELETE_BATCH]]
            reply = self._call("delete_objects", what, Delete={"Objects": batch, "Quiet": True})
            failed = reply.get("Errors") or []
            if failed:
                first = failed[0]
                raise PgdrError(
                    "S3 refused to delete %d objects %s in %s (first: %s %s): check that the credentials may delete there"
                    % (len(failed), where, self.describe(), first.get("Key"), first.get("Code")),
                    error_code=first.get("Code"),
                )

    def delete(self, key):
        key = clean_key(key)
        # DeleteObject answers a missing key with success, as the interface wants
        self._call("delete_object", "deleting %s" % key, missing=None, Key=self._object(key))

    def delete_many(self, keys):
        keys = [clean_key(key) for key in keys]
        if keys:
            self._delete_names([self._object(key) for key in keys], "deleting %d objects" % len(keys), "(of %d)" % len(keys))
        return len(keys)
