# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets: the folder every backup writes and every restore reads.

A set lives at ``<repository>/<cluster>/<backup_id>/`` and holds data files
plus ``manifest.json``, which is written last and atomically. A set whose
manifest exists is complete; a set with data but no manifest was interrupted
and is never offered for restore. The manifest format is described by
``docs/manifest.schema.json`` (JSON Schema, used by tests and docs) and checked
on managed hosts by ``validate_manifest_shape`` (no jsonschema needed there).

Everything here talks to storage only through the Repository interface of
``storage/base.py``, so it is unit-tested with an in-memory repository.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PIN_NAME = "pin.json"  # backup_catalog's pin, written beside a finished set (no writer names a file so)

LOGICAL_KINDS = ("logical-db", "logical-cluster", "logical-table")
PHYSICAL_KINDS = ("base", "probackup")
KINDS = LOGICAL_KINDS + PHYSICAL_KINDS

COMPRESSION_METHODS = ("none", "gzip", "lz4", "zstd")
FINGERPRINT_METHODS = ("hash64-sum-v2", "hash64-sum-v1", "md5-sum64-v1")  # fingerprint.METHODS (no psycopg needed here)
ENCRYPTION_METHODS = ("none", "gpg-symmetric-aes256")
# Short names other module_utils use for the same methods.
_ENCRYPTION_ALIASES = {"gpg": "gpg-symmetric-aes256"}

FILE_FIELDS = ("database", "schema", "table")  # optional per-file fields; None when not given
READ_CHUNK = 1024 * 1024
NAME_MAX = 100
PATH_MAX = 1024

_TIMESTAMP_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_WORD_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_DIGITS_RE = re.compile(r"^[0-9]+$")
_FINGERPRINT_RE = re.compile(r"^-?[0-9]+$")
_SECRET_ARG_RE = re.compile(r"password\s*=", re.IGNORECASE)


# --- names, ids, keys ----------------------------------------------------------------


def _utc(moment):
    """``moment`` in UTC (now if None; a naive one is taken as UTC already)."""
    if moment is None:
        return datetime.datetime.now(datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc) if moment.tzinfo is not None else moment


def new_backup_id(now=None):
    """A sortable UTC id such as ``20261121T140051Z``; ``now`` may be given (naive means UTC)."""
    return _utc(now).strftime("%Y%m%dT%H%M%SZ")


def iso_utc(moment=None):
    """ISO 8601 UTC text with microseconds (``2026-11-21T14:00:51.250731Z``) for started_at / finished_at.

    A moment without a fraction (a tool's whole-second time) stays whole (``2026-11-21T14:00:51Z``), as older
    sets wrote every time: compare these texts as times (parse_iso_utc), never as text.
    """
    moment = _utc(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text):
    """The aware datetime of an ISO 8601 UTC text written by iso_utc (fractions allowed)."""
    if not isinstance(text, str) or not _TIMESTAMP_RE.match(text):
        raise PgdrError("%r is not an ISO 8601 UTC time such as 2026-11-21T14:00:51Z" % (text,))
    return datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=datetime.timezone.utc)


def _name_problem(text):
    """Why ``text`` cannot be one folder name of the repository layout, or None."""
    if not isinstance(text, str) or not text:
        return "is empty"
    if len(text) > NAME_MAX:
        return "is longer than %d characters" % NAME_MAX
    if "/" in text or "\\" in text:
        return "contains a slash"
    if ".." in text:
        return "contains '..'"
    if text.startswith("."):
        return "starts with '.'"
    if text.startswith("-"):
        return "starts with '-'"
    if any(ch.isspace() for ch in text):
        return "contains whitespace"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return "contains control characters"
    return None


def _validate_name(text, what):
    problem = _name_problem(text)
    if problem:
        raise PgdrError(
            "%s %r cannot be used: it %s; use letters, digits, '-', '_' and '.' (at most %d characters, "
            "not starting with '.' or '-')" % (what, text, problem, NAME_MAX)
        )
    return text


def validate_backup_id(text):
    """Return ``text`` if it is usable as a backup id (one folder name), else raise PgdrError."""
    return _validate_name(text, "backup_id")


def validate_cluster_name(text):
    """Return ``text`` if it is usable as a cluster name (one folder name), else raise PgdrError."""
    return _validate_name(text, "cluster name")


def _path_problem(path):
    if not isinstance(path, str) or not path:
        return "is empty"
    if len(path) > PATH_MAX:
        return "is longer than %d characters" % PATH_MAX
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path:
        return "contains a backslash"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "contains control characters"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' component"
    if path == MANIFEST_NAME:
        return "is the manifest's own name"
    return None


def validate_file_path(path):
    """Return ``path`` if it is a usable file path relative to a set, else raise PgdrError."""
    problem = _path_problem(path)
    if problem:
        raise PgdrError("file path %r inside a backup set cannot be used: it %s; use a relative path such as db_sales.dump" % (path, problem))
    return path


def set_key(cluster, backup_id, name=""):
    """Repository key ``cluster/backup_id[/name]`` (the set's prefix when ``name`` is empty)."""
    key = "%s/%s" % (validate_cluster_name(cluster), validate_backup_id(backup_id))
    if name:
        if name != MANIFEST_NAME:
            validate_file_path(name)
        key += "/" + name
    return key


# --- normalising file metadata --------------------------------------------------------


def normalize_compression(spec):
    """{method, level} from a dict, a method name or None (= none)."""
    if spec is None:
        spec = {"method": "none"}
    elif isinstance(spec, str):
        spec = {"method": spec}
    method = spec.get("method") or "none"
    level = spec.get("level")
    if method not in COMPRESSION_METHODS:
        raise PgdrError("compression method %r is not one of %s" % (method, ", ".join(COMPRESSION_METHODS)))
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise PgdrError("compression level %r is not an integer" % (level,))
    return {"method": method, "level": None if method == "none" else level}


def normalize_encryption(spec):
    """{method} from a dict, a method name ('gpg' is accepted for gpg-symmetric-aes256) or None (= none)."""
    if spec is None:
        spec = {"method": "none"}
    elif isinstance(spec, str):
        spec = {"method": spec}
    method = spec.get("method") or "none"
    method = _ENCRYPTION_ALIASES.get(method, method)
    if method not in ENCRYPTION_METHODS:
        raise PgdrError("encryption method %r is not one of %s" % (method, ", ".join(ENCRYPTION_METHODS)))
    return {"method": method}


def _check_word(value, what):
    if not isinstance(value, str) or not _WORD_RE.match(value):
        raise PgdrError("file %s %r must be a lower-case word such as 'database' or 'custom'" % (what, value))
    return value


class HashingWriter:
    """Wraps a repository writer: every ``write`` also feeds sha256 and the byte count."""

    def __init__(self, inner):
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data):
        view = memoryview(data)
        self._hash.update(view)
        self._inner.write(data)
        self.size += view.nbytes
        return view.nbytes

    def flush(self):
        flush = getattr(self._inner, "flush", None)
        if flush is not None:
            flush()

    @property
    def sha256(self):
        return self._hash.hexdigest()


def hash_object(repo, key):
    """(size, sha256 hex) of one repository object, streamed in 1 MiB reads."""
    with repo.open_reader(key) as reader:
        return hash_stream(reader)


def hash_stream(reader, chunk_size=READ_CHUNK):
    """(size, sha256 hex) of everything ``reader.read()`` yields."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = reader.read(chunk_size)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


# --- writing a set --------------------------------------------------------------------


class SetWriter:
    """Writes one backup set: data files first, ``manifest.json`` last.

    ``compression`` / ``encryption`` are the set-level defaults: used for files
    that do not say otherwise and recorded at the top of the manifest. Use it
    as a context manager so that any failure removes the half-written set::

        with SetWriter(repo, "pg1", new_backup_id()) as writer:
            with writer.open_file("db_sales.dump", "database", "custom", database="sales") as out:
                run_pipeline(argvs, sink=out.write)
            writer.finish({...})
    """

    def __init__(self, repo, cluster, backup_id, compression=None, encryption=None):
        self.repo = repo
        self.cluster = validate_cluster_name(cluster)
        self.backup_id = validate_backup_id(backup_id)
        self.name = "%s/%s" % (self.cluster, self.backup_id)
        self.prefix = set_key(self.cluster, self.backup_id)
        self.compression = normalize_compression(compression)
        self.encryption = normalize_encryption(encryption)
        self.finished = False
        self.aborted = False
        self.manifest = None
        self._entries = {}
        self._open = set()
        status = set_status(repo, self.cluster, self.backup_id)
        if status != "absent":
            raise PgdrError(
                "backup set %s already exists (%s) in %s; choose another backup_id or delete that set first"
                % (self.name, status, _describe(repo))
            )

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            if not self.finished:
                with contextlib.suppress(Exception):  # the original failure is the one to report
                    self.abort()
            return False
        if not self.finished and not self.aborted:
            self.abort()
            raise PgdrError("backup set %s was left without a manifest and has been removed; this is a bug in pgdr.backup" % self.name)
        return False

    def _key(self, path):
        return self.prefix + "/" + path

    def _check_writable(self):
        if self.finished:
            raise PgdrError("backup set %s is already finished; it cannot be changed" % self.name)
        if self.aborted:
            raise PgdrError("backup set %s was aborted; start a new set" % self.name)

    def _entry(self, path, role, format, compression, encryption, fields):
        validate_file_path(path)
        unknown = sorted(set(fields) - set(FILE_FIELDS))
        if unknown:
            raise PgdrError("unknown file fields %s for %s in set %s (allowed: %s)" % (", ".join(unknown), path, self.name, ", ".join(FILE_FIELDS)))
        if path in self._entries or path in self._open:
            raise PgdrError("file %s is written twice in backup set %s" % (path, self.name))
        entry = {
            "path": path,
            "size": None,
            "sha256": None,
            "role": _check_word(role, "role"),
            "format": _check_word(format, "format"),
            "compression": normalize_compression(self.compression if compression is None else compression),
            "encryption": normalize_encryption(self.encryption if encryption is None else encryption),
        }
        for field in FILE_FIELDS:
            value = fields.get(field)
            if value is not None and not isinstance(value, str):
                raise PgdrError("file field %s of %s must be a string or None, not %r" % (field, path, value))
            entry[field] = value
        return entry

    @contextlib.contextmanager
    def open_file(self, relpath, role, format, compression=None, encryption=None, **fields):
        """Yield a writer whose ``write(bytes)`` streams to the repository while hashing.

        The file's entry (size, sha256, role, format, ...) is recorded only if
        the block ends without an exception and the repository writer commits.
        """
        self._check_writable()
        entry = self._entry(relpath, role, format, compression, encryption, fields)
        self._open.add(relpath)
        try:
            with self.repo.open_writer(self._key(relpath)) as inner:
                hashing = HashingWriter(inner)
                yield hashing
        finally:
            self._open.discard(relpath)
        entry["size"] = hashing.size
        entry["sha256"] = hashing.sha256
        self._entries[relpath] = entry

    def add_file_entry(self, relpath, role, format, compression=None, encryption=None, size=None, sha256=None, **fields):
        """Record a file that was written into the set by other means (a tool writing its own files).

        Without ``size`` and ``sha256`` the file is read back from the
        repository and hashed; with them, its size in the repository is checked.
        """
        self._check_writable()
        entry = self._entry(relpath, role, format, compression, encryption, fields)
        key = self._key(relpath)
        if not self.repo.exists(key):
            raise PgdrError("file %s was not found in backup set %s; it must be written before it is added to the manifest" % (relpath, self.name))
        if size is None or sha256 is None:
            size, sha256 = hash_object(self.repo, key)
        else:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise PgdrError("size %r of file %s is not a byte count" % (size, relpath))
            if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
                raise PgdrError("sha256 %r of file %s is not 64 lower-case hex digits" % (sha256, relpath))
            stored = self.repo.size(key)
            if stored != size:
                raise PgdrError(
                    "file %s in set %s is %s bytes in the repository but %s bytes were reported; it was not written completely"
                    % (relpath, self.name, stored, size)
                )
        entry["size"] = size
        entry["sha256"] = sha256
        self._entries[relpath] = entry
        return dict(entry)

    @property
    def files(self):
        """The file entries recorded so far, sorted by path."""
        return [dict(self._entries[path]) for path in sorted(self._entries)]

    def build_manifest(self, manifest_fields):
        """The manifest dict of this set: ``manifest_fields`` plus format_version, backup_id, cluster and files."""
        reserved = sorted({"format_version", "backup_id", "cluster", "files"} & set(manifest_fields))
        if reserved:
            raise PgdrError("manifest fields %s are set by SetWriter itself; do not pass them" % ", ".join(reserved))
        manifest = {"format_version": FORMAT_VERSION, "kind": None, "backup_id": self.backup_id, "cluster": self.cluster}
        manifest.update(manifest_fields)
        manifest.setdefault("compression", dict(self.compression))
        manifest.setdefault("encryption", dict(self.encryption))
        if "duration_seconds" not in manifest and "started_at" in manifest and "finished_at" in manifest:
            started = parse_iso_utc(manifest["started_at"])
            finished = parse_iso_utc(manifest["finished_at"])
            manifest["duration_seconds"] = round((finished - started).total_seconds(), 3)
        manifest["files"] = self.files
        return manifest

    def finish(self, manifest_fields):
        """Check and write ``manifest.json`` (atomically, after every data file); returns the manifest."""
        self._check_writable()
        if self._open:
            raise PgdrError("backup set %s cannot be finished while %s is still being written" % (self.name, ", ".join(sorted(self._open))))
        manifest = self.build_manifest(manifest_fields)
        problems = validate_manifest_shape(manifest)
        if problems:
            raise PgdrError(
                "the manifest of backup set %s is malformed (%s); the set was not finished, this is a bug in pgdr.backup"
                % (self.name, "; ".join(problems[:5])),
                problems=problems,
            )
        self.repo.put_bytes_atomic(self._key(MANIFEST_NAME), manifest_bytes(manifest))
        self.finished = True
        self.manifest = manifest
        return manifest

    def abort(self):
        """Remove the whole set (manifest first, so a partly removed set never looks complete)."""
        delete_set(self.repo, self.cluster, self.backup_id)
        self.aborted = True


def manifest_bytes(manifest):
    """The stored form of a manifest: UTF-8 JSON, indented, newline-terminated."""
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def delete_set(repo, cluster, backup_id):
    """Remove a set; its manifest goes first, so an interrupted delete leaves an incomplete set, not a broken complete one."""
    repo.delete_tree(set_key(cluster, backup_id, MANIFEST_NAME))
    repo.delete_tree(set_key(cluster, backup_id))


# --- reading sets ---------------------------------------------------------------------


def _describe(repo):
    try:
        return repo.describe()
    except Exception:  # pylint: disable=broad-exception-caught  # only for a message
        return "the repository"


def set_status(repo, cluster, backup_id):
    """'complete' (manifest present), 'incomplete' (data but no manifest) or 'absent'."""
    if repo.exists(set_key(cluster, backup_id, MANIFEST_NAME)):
        return "complete"
    if repo.list_files(set_key(cluster, backup_id)) or backup_id in (repo.list_dirs(validate_cluster_name(cluster)) or []):
        return "incomplete"
    return "absent"


def list_sets(repo, cluster):
    """[{backup_id, complete}] of one cluster, sorted by backup_id; folders that are not valid ids are skipped."""
    names = sorted(name for name in (repo.list_dirs(validate_cluster_name(cluster)) or []) if _name_problem(name) is None)
    return [{"backup_id": name, "complete": repo.exists(set_key(cluster, name, MANIFEST_NAME))} for name in names]


def _incomplete_message(cluster, backup_id):
    return (
        "backup set %s/%s is incomplete (no manifest.json): it was interrupted; it is never restored, delete it or run the backup again"
        % (cluster, backup_id)
    )


def parse_manifest(data, cluster, backup_id):
    """Decode and check stored manifest bytes of set ``cluster/backup_id``."""
    where = "%s/%s" % (cluster, backup_id)
    try:
        manifest = json.loads(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PgdrError("manifest.json of backup set %s is not valid JSON (%s); the set is corrupt, restore another backup" % (where, exc)) from None
    if not isinstance(manifest, dict):
        raise PgdrError("manifest.json of backup set %s is not a JSON object; the set is corrupt, restore another backup" % where)
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise PgdrError(
            "manifest.json of backup set %s has format_version %d, newer than this pgdr.backup understands (%d); upgrade the collection"
            % (where, version, FORMAT_VERSION)
        )
    problems = validate_manifest_shape(manifest)
    if problems:
        raise PgdrError(
            "manifest.json of backup set %s is malformed (%s); the set is corrupt, restore another backup" % (where, "; ".join(problems[:5])),
            problems=problems,
        )
    if manifest["cluster"] != cluster or manifest["backup_id"] != backup_id:
        raise PgdrError(
            "manifest.json found at %s describes set %s/%s; sets must stay at <cluster>/<backup_id>/, move it back or back up again"
            % (where, manifest["cluster"], manifest["backup_id"])
        )
    return manifest


def load_manifest(repo, cluster, backup_id):
    """The checked manifest of a complete set; PgdrError for a missing, incomplete or malformed one."""
    key = set_key(cluster, backup_id, MANIFEST_NAME)
    if not repo.exists(key):
        if set_status(repo, cluster, backup_id) == "absent":
            raise PgdrError("backup set %s/%s does not exist in %s; check cluster and backup_id" % (cluster, backup_id, _describe(repo)))
        raise PgdrError(_incomplete_message(cluster, backup_id))
    return parse_manifest(repo.get_bytes(key), cluster, backup_id)


def latest_complete(repo, cluster, kind=None):
    """The manifest of the newest complete set (by finished_at, then backup_id), optionally of one kind; None if there is none.

    Sets whose manifest cannot be read or checked are not candidates.
    """
    best = None
    for item in list_sets(repo, cluster):
        if not item["complete"]:
            continue
        try:
            manifest = load_manifest(repo, cluster, item["backup_id"])
        except PgdrError:
            continue
        if kind is not None and manifest["kind"] != kind:
            continue
        # as times: "…:51Z" (an older set) sorts after "…:51.4Z" as text
        rank = (parse_iso_utc(manifest["finished_at"]), manifest["backup_id"])
        if best is None or rank > best[0]:
            best = (rank, manifest)
    return best[1] if best else None


# --- verifying a set ------------------------------------------------------------------


def verify_files(repo, manifest, cluster):
    """Stream every file of a set through sha256 and compare size and digest with the manifest.

    Returns [{path, ok, expected: {size, sha256}, actual: {size, sha256} | None, problem}]
    where problem is None, 'missing', 'size differs' or 'sha256 differs'.
    """
    results = []
    for entry in manifest["files"]:
        key = set_key(cluster, manifest["backup_id"], entry["path"])
        expected = {"size": entry["size"], "sha256": entry["sha256"]}
        if not repo.exists(key):
            results.append({"path": entry["path"], "ok": False, "expected": expected, "actual": None, "problem": "missing"})
            continue
        size, digest = hash_object(repo, key)
        actual = {"size": size, "sha256": digest}
        if size != entry["size"]:
            problem = "size differs"
        elif digest != entry["sha256"]:
            problem = "sha256 differs"
        else:
            problem = None
        results.append({"path": entry["path"], "ok": problem is None, "expected": expected, "actual": actual, "problem": problem})
    return results


def check_files(repo, manifest, cluster):
    """verify_files, raising PgdrError that names the first bad file; returns the results when all are good."""
    results = verify_files(repo, manifest, cluster)
    where = "%s/%s" % (cluster, manifest["backup_id"])
    for item in results:
        if item["ok"]:
            continue
        bad = [r["path"] for r in results if not r["ok"]]
        if item["problem"] == "missing":
            msg = "file %s in set %s is missing; the set is damaged, restore another backup" % (item["path"], where)
        elif item["problem"] == "size differs":
            msg = "file %s in set %s is %d bytes but the manifest says %d; the set is corrupt, restore another backup" % (
                item["path"], where, item["actual"]["size"], item["expected"]["size"])
        else:
            msg = "file %s in set %s has sha256 %s but the manifest says %s; the set is corrupt, restore another backup" % (
                item["path"], where, item["actual"]["sha256"], item["expected"]["sha256"])
        raise PgdrError(msg, bad_files=bad, files=results)
    return results


# --- manifest shape (the built-in check; docs/manifest.schema.json is the full description) ---


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str(value, nullable=False):
    return isinstance(value, str) or (nullable and value is None)


class _Shape:
    def __init__(self):
        self.problems = []

    def add(self, where, text):
        self.problems.append("%s %s" % (where, text))

    def object(self, value, where, required, allowed=None):
        """True if ``value`` is a dict with ``required`` keys (and only ``allowed`` ones if given)."""
        if not isinstance(value, dict):
            self.add(where, "must be an object")
            return False
        for key in required:
            if key not in value:
                self.add(where, "lacks %s" % key)
        if allowed is not None:
            for key in sorted(set(value) - set(allowed)):
                self.add(where, "has unknown field %s" % key)
        return True

    def check(self, ok, where, text):
        if not ok:
            self.add(where, text)


_TOP_REQUIRED = (
    "format_version", "kind", "backup_id", "cluster", "source", "started_at", "finished_at", "duration_seconds",
    "tool", "files", "compression", "encryption", "consistency", "options",
)
_FILE_KEYS = ("path", "size", "sha256", "role", "database", "schema", "table", "format", "compression", "encryption")
_TABLE_KEYS = ("database", "schema", "table", "rows", "fingerprint", "fingerprint_method")


def _check_compression(shape, value, where):
    if shape.object(value, where, ("method",), ("method", "level")):
        shape.check(value.get("method") in COMPRESSION_METHODS, where + ".method", "must be one of %s" % ", ".join(COMPRESSION_METHODS))
        level = value.get("level")
        shape.check(level is None or (_is_int(level) and level >= 0), where + ".level", "must be a non-negative integer or null")


def _check_encryption(shape, value, where):
    if shape.object(value, where, ("method",), ("method",)):
        shape.check(value.get("method") in ENCRYPTION_METHODS, where + ".method", "must be one of %s" % ", ".join(ENCRYPTION_METHODS))


def _check_source(shape, source):
    if not shape.object(source, "source", ("host", "port", "database", "system_identifier", "server_version", "server_version_num", "major")):
        return
    shape.check(_is_str(source.get("host")) and source.get("host") != "", "source.host", "must be a non-empty string")
    port = source.get("port")
    shape.check(_is_int(port) and 1 <= port <= 65535, "source.port", "must be an integer port")
    shape.check(_is_str(source.get("database"), nullable=True), "source.database", "must be a string or null")
    shape.check(_is_str(source.get("system_identifier")) and bool(_DIGITS_RE.match(source.get("system_identifier"))),
                "source.system_identifier", "must be a string of digits")
    shape.check(_is_str(source.get("server_version")) and source.get("server_version") != "", "source.server_version", "must be a non-empty string")
    shape.check(_is_int(source.get("server_version_num")) and source.get("server_version_num") >= 90000,
                "source.server_version_num", "must be an integer such as 150004")
    shape.check(_is_int(source.get("major")) and source.get("major") >= 9, "source.major", "must be an integer such as 15")


def _check_files(shape, files):
    if not isinstance(files, list):
        shape.add("files", "must be a list")
        return
    seen = set()
    for index, entry in enumerate(files):
        where = "files[%d]" % index
        if not shape.object(entry, where, _FILE_KEYS, _FILE_KEYS):
            continue
        path = entry.get("path")
        problem = _path_problem(path)
        shape.check(problem is None, where + ".path", "is not a relative file path (it %s)" % problem)
        shape.check(path not in seen, where + ".path", "repeats %r" % (path,))
        seen.add(path)
        shape.check(_is_int(entry.get("size")) and entry.get("size") >= 0, where + ".size", "must be a non-negative integer")
        shape.check(_is_str(entry.get("sha256")) and bool(_SHA256_RE.match(entry.get("sha256"))), where + ".sha256", "must be 64 lower-case hex digits")
        for word in ("role", "format"):
            shape.check(_is_str(entry.get(word)) and bool(_WORD_RE.match(entry.get(word))), where + "." + word, "must be a lower-case word")
        for field in FILE_FIELDS:
            shape.check(_is_str(entry.get(field), nullable=True), where + "." + field, "must be a string or null")
        _check_compression(shape, entry.get("compression"), where + ".compression")
        _check_encryption(shape, entry.get("encryption"), where + ".encryption")


def _check_tables(shape, tables, options):
    if not isinstance(tables, list):
        shape.add("tables", "must be a list")
        return
    for index, entry in enumerate(tables):
        where = "tables[%d]" % index
        if not shape.object(entry, where, _TABLE_KEYS):
            continue
        for field in ("database", "schema", "table"):
            shape.check(_is_str(entry.get(field)) and entry.get(field) != "", where + "." + field, "must be a non-empty string")
        shape.check(_is_int(entry.get("rows")) and entry.get("rows") >= 0, where + ".rows", "must be a non-negative integer")
        shape.check(_is_str(entry.get("fingerprint")) and bool(_FINGERPRINT_RE.match(entry.get("fingerprint"))),
                    where + ".fingerprint", "must be a decimal integer as text")
        shape.check(entry.get("fingerprint_method") in FINGERPRINT_METHODS, where + ".fingerprint_method",
                    "must be one of %s" % ", ".join(FINGERPRINT_METHODS))
    if isinstance(options, dict) and options.get("fingerprint") is False:
        shape.check(not tables, "tables", "must be empty when options.fingerprint is false")


def validate_manifest_shape(manifest):
    """Problems (a list of short texts; empty when fine) with the structure of a manifest.

    A built-in subset of docs/manifest.schema.json: required keys, types,
    enumerations and the id/path/digest formats, for hosts without jsonschema.
    Also checks what JSON Schema cannot say: file paths are unique.
    """
    shape = _Shape()
    if not shape.object(manifest, "manifest", _TOP_REQUIRED):
        return shape.problems
    shape.check(manifest.get("format_version") == FORMAT_VERSION and _is_int(manifest.get("format_version")),
                "format_version", "must be %d" % FORMAT_VERSION)
    kind = manifest.get("kind")
    shape.check(kind in KINDS, "kind", "must be one of %s" % ", ".join(KINDS))
    for field in ("backup_id", "cluster"):
        if field in manifest:
            problem = _name_problem(manifest[field])
            shape.check(problem is None, field, "is not a usable folder name (it %s)" % problem)
    for field in ("started_at", "finished_at"):
        if field in manifest:
            shape.check(_is_str(manifest[field]) and bool(_TIMESTAMP_RE.match(manifest[field])), field,
                        "must be ISO 8601 UTC such as 2026-11-21T14:00:51.250731Z")
    if "duration_seconds" in manifest:
        shape.check(_is_number(manifest["duration_seconds"]) and manifest["duration_seconds"] >= 0, "duration_seconds", "must be a non-negative number")
    if "source" in manifest:
        _check_source(shape, manifest["source"])
    tool = manifest.get("tool")
    if "tool" in manifest and shape.object(tool, "tool", ("name", "version", "argv")):
        shape.check(_is_str(tool.get("name")) and tool.get("name") != "", "tool.name", "must be a non-empty string")
        shape.check(_is_str(tool.get("version")), "tool.version", "must be a string")
        argv = tool.get("argv")
        shape.check(isinstance(argv, list) and all(_is_str(arg) for arg in argv), "tool.argv", "must be a list of strings")
        if isinstance(argv, list):
            shape.check(not any(_is_str(arg) and _SECRET_ARG_RE.search(arg) for arg in argv), "tool.argv", "must not contain a password")
        for index, command in enumerate(tool.get("commands") or []):
            where = "tool.commands[%d]" % index
            if shape.object(command, where, ("database", "argv")):
                argv = command.get("argv")
                shape.check(isinstance(argv, list) and all(_is_str(arg) and not _SECRET_ARG_RE.search(arg) for arg in argv),
                            where + ".argv", "must be a list of strings without a password")
    if "files" in manifest:
        _check_files(shape, manifest["files"])
    if "compression" in manifest:
        _check_compression(shape, manifest["compression"], "compression")
    if "encryption" in manifest:
        _check_encryption(shape, manifest["encryption"], "encryption")
    consistency = manifest.get("consistency")
    if "consistency" in manifest and shape.object(consistency, "consistency", ("snapshot", "isolation")):
        shape.check(_is_str(consistency.get("snapshot"), nullable=True), "consistency.snapshot", "must be a string or null")
        shape.check(_is_str(consistency.get("isolation")) and consistency.get("isolation") != "", "consistency.isolation", "must be a non-empty string")
        if "snapshots" in consistency:
            snapshots = consistency["snapshots"]
            shape.check(isinstance(snapshots, dict) and all(_is_str(v) and v for v in snapshots.values()), "consistency.snapshots",
                        "must map database names to snapshot ids")
    options = manifest.get("options")
    if "options" in manifest:
        shape.check(isinstance(options, dict), "options", "must be an object")
    if kind in LOGICAL_KINDS:
        if "tables" not in manifest:
            shape.add("manifest", "lacks tables (required for %s sets)" % kind)
        else:
            _check_tables(shape, manifest["tables"], options)
        if isinstance(options, dict):
            shape.check(isinstance(options.get("fingerprint"), bool), "options.fingerprint", "must be true or false for %s sets" % kind)
    elif "tables" in manifest:
        _check_tables(shape, manifest["tables"], options)
    for field in ("start_lsn", "stop_lsn"):
        if manifest.get(field) is not None:
            shape.check(_is_str(manifest[field]) and bool(_LSN_RE.match(manifest[field])), field, "must be an LSN such as 0/3000028")
    if manifest.get("timeline") is not None:
        shape.check(_is_int(manifest["timeline"]) and manifest["timeline"] >= 1, "timeline", "must be a positive integer")
    return shape.problems


def select_set(repo, cluster_name, backup_id, kind=None):
    """The manifest of set ``backup_id`` of ``cluster_name``, or of its newest complete set (of ``kind``) for latest."""
    if backup_id == "latest":
        found = latest_complete(repo, cluster_name, kind)
        if found is None:
            raise PgdrError(
                "no complete %sbackup set for cluster %s in %s; check cluster and repository"
                % ("%s " % kind if kind else "", cluster_name, repo.describe())
            )
        return found
    return load_manifest(repo, cluster_name, backup_id)
