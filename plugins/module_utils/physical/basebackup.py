# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical base backups with pg_basebackup into a backup set (kind "base").

pg_basebackup runs on the host that holds the repository and connects to the
server over the replication protocol. A local repository gets the backup
written in place (plain: ``<set>/data/``; tar: the archives in ``<set>/``);
SFTP and S3 get tar archives staged under ``work_dir`` and uploaded while
hashed. ``pg_verifybackup`` checks the backup before ``manifest.json`` is
written, so a set that failed verification is never complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core import compression, encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import DEBIAN_BIN_DIR, find_binary, tool_version
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import check_result, run, run_pipeline, start, stop, telling_line
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set

FORMATS = ("plain", "tar")
WAL_METHODS = ("stream", "fetch", "none")
CHECKPOINTS = ("fast", "spread")
LOCATIONS = ("client", "server")
MANIFEST_CHECKSUMS = ("CRC32C", "SHA224", "SHA256", "SHA384", "SHA512", "NONE")
DATA_DIR = "data"
FAILED_NAME = "verify-failed.json"  # kept in a set whose verification failed: what was checked and why it failed
CHUNK = 4 * 1024 * 1024
TAR_VERIFY_MAJOR = 18  # the first pg_verifybackup that reads tar archives
_MAX_RATE_RE = re.compile(r"^[0-9]+[kM]?$")
_PROGRESS_RE = re.compile(r"(\d+)/(\d+) kB \((\d+)%\), (\d+)/(\d+) tablespaces?")
# archives pg_basebackup writes front to back (pg_wal.tar is not: its headers are rewritten on close)
_SEQUENTIAL_RE = re.compile(r"^(base|[0-9]+)\.tar(\.gz|\.lz4|\.zst)?$")
_ARCHIVE_RE = re.compile(r"^(base|pg_wal|[0-9]+)\.tar(\.gz|\.lz4|\.zst)?$")
_SUFFIX_METHOD = {"": "none", ".gz": "gzip", ".lz4": "lz4", ".zst": "zstd"}


# --- options ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CompressionOptions:
    """The ``compression`` option of pg_basebackup, typed."""

    method: str
    level: Optional[int]
    location: str


@dataclasses.dataclass(frozen=True)
class EncryptionOptions:
    """The ``encryption`` option of pg_basebackup, typed: gpg (OpenPGP symmetric AES-256) with a passphrase."""

    method: str
    passphrase: Optional[str]


@dataclasses.dataclass(frozen=True)
class TablespaceMapping:
    old_dir: str
    new_dir: str


@dataclasses.dataclass(frozen=True)
class BaseBackupOptions:
    """The options of module pg_basebackup (besides connection and repository), typed.

    ``cluster``, ``backup_id`` and ``label`` may be None here; Plan is given the resolved ones.
    """

    action: str
    cluster: Optional[str]
    backup_id: Optional[str]
    format: str
    wal_method: str
    compression: CompressionOptions
    checkpoint: str
    max_rate: Optional[str]
    slot: Optional[str]
    temporary_slot: bool
    label: Optional[str]
    tablespace_mapping: Optional[List[TablespaceMapping]]
    manifest_checksums: str
    incremental_from: Optional[str]
    verify: bool
    work_dir: str
    if_running: str
    pg_bin_dir: Optional[str]
    encryption: Optional[EncryptionOptions]

    @property
    def encryption_method(self):
        return self.encryption.method if self.encryption and self.encryption.method else "none"

    @property
    def passphrase(self):
        return self.encryption.passphrase if self.encryption else None


def recorded_options(options, compression_spec):
    """The options a base set's manifest records (``options``), as pg_basebackup ran with them."""
    return dict(
        format=options.format,
        wal_method=options.wal_method,
        checkpoint=options.checkpoint,
        max_rate=options.max_rate,
        slot=options.slot,
        temporary_slot=options.temporary_slot,
        label=options.label,
        tablespace_mapping=[dataclasses.asdict(mapping) for mapping in options.tablespace_mapping or []],
        manifest_checksums=options.manifest_checksums,
        incremental_from=options.incremental_from,
        verify=options.verify,
        compression=dict(compression_spec),
    )


# --- argv (pure) ---------------------------------------------------------------------


def normalize_compression(requested, fmt, tool_major):
    """{method, level, location} of the ``requested`` CompressionOptions, checked against the format and pg_basebackup's version."""
    location = requested.location
    if location not in LOCATIONS:
        raise PgdrError("compression.location %r is not one of client, server" % location)
    checked = compression.normalize({"method": requested.method, "level": requested.level})
    method, level = checked["method"], checked["level"]
    if method == "none":
        return {"method": "none", "level": None, "location": location}
    if tool_major < 15:
        if location == "server":
            raise PgdrError(
                "pg_basebackup %d cannot compress on the server; use compression.location client (PostgreSQL 15+ compresses on the server)" % tool_major
            )
        if method != "gzip":
            raise PgdrError("pg_basebackup %d compresses only with gzip; use compression.method gzip or PostgreSQL 15+ client binaries and server" % tool_major)
    if fmt == "plain" and location == "client":
        raise PgdrError(
            "format plain writes an uncompressed data directory; compress with format tar, or use "
            "compression.location server (the server compresses the transfer, PostgreSQL 15+)"
        )
    if fmt == "plain" and tool_major < 15:
        raise PgdrError("pg_basebackup %d cannot compress a plain backup; use format tar" % tool_major)
    return {"method": method, "level": level, "location": location}


def compress_args(spec, tool_major):
    """pg_basebackup's compression option: ``--compress=[client-|server-]method[:level]`` (15+), ``-Z level`` (14)."""
    if spec["method"] == "none":
        return []
    if tool_major < 15:
        return ["--gzip"] if spec["level"] is None else ["--compress=%d" % spec["level"]]
    text = "%s-%s" % (spec["location"], spec["method"])
    if spec["level"] is not None:
        text += ":%d" % spec["level"]
    return ["--compress=%s" % text]


def escape_mapping(path):
    """pg_basebackup's --tablespace-mapping separates old and new with '='; one inside a path is written '\\='."""
    return path.replace("=", "\\=")


def check_options(options, tool_major):
    """Refuse combinations pg_basebackup would refuse (with a clearer message) or that cannot make a usable set."""
    if options.slot and options.wal_method != "stream":
        raise PgdrError("a replication slot is used only while WAL is streamed; set wal_method: stream or drop slot")
    if options.slot and not options.temporary_slot:
        raise PgdrError("slot names a permanent slot; temporary_slot: false goes without slot")
    if options.max_rate and not _MAX_RATE_RE.match(str(options.max_rate)):
        raise PgdrError("max_rate %r must be kilobytes per second, optionally with k or M (e.g. 32M)" % options.max_rate)
    if options.tablespace_mapping and options.format != "plain":
        raise PgdrError("tablespace_mapping applies to format plain; format tar writes one archive per tablespace")
    if options.encryption_method not in encryption.METHODS:
        raise PgdrError("encryption.method must be one of %s, not %r" % (", ".join(encryption.METHODS), options.encryption_method))
    if options.encryption_method == "gpg":
        if not options.passphrase:
            raise PgdrError("encryption.method gpg needs encryption.passphrase")
        if options.format != "tar":
            raise PgdrError("format plain writes a data directory, which cannot be encrypted; use format: tar with encryption")
    if options.incremental_from and tool_major < 17:
        raise PgdrError(
            "incremental backups need PostgreSQL 17 or later (server and pg_basebackup); this is %d: take a full backup (no incremental_from)" % tool_major
        )


def build_argv(binary, tool_major, options, target, compression_spec, create_slot=False, incremental_manifest=None, tablespace_map=None):
    """pg_basebackup's argv (pure: unit-tested). Connection settings reach it through the environment."""
    argv = [
        binary,
        "--pgdata=%s" % target,
        "--format=%s" % options.format,
        "--wal-method=%s" % options.wal_method,
        "--checkpoint=%s" % options.checkpoint,
        "--label=%s" % options.label,
        "--no-password",
        "--progress",
        "--verbose",
    ]
    argv += compress_args(compression_spec, tool_major)
    if options.max_rate:
        argv.append("--max-rate=%s" % options.max_rate)
    if options.slot:
        argv.append("--slot=%s" % options.slot)
        if create_slot:
            argv.append("--create-slot")
    elif not options.temporary_slot and options.wal_method == "stream":
        argv.append("--no-slot")
    for old, new in sorted((tablespace_map or {}).items()):
        argv.append("--tablespace-mapping=%s=%s" % (escape_mapping(old), escape_mapping(new)))
    if options.manifest_checksums:
        argv.append("--manifest-checksums=%s" % options.manifest_checksums)
    if incremental_manifest:
        argv.append("--incremental=%s" % incremental_manifest)
    return argv


def parse_progress(stderr):
    """The last progress figures ``--progress`` printed: {done_bytes, total_bytes, percent, tablespaces_done, tablespaces}."""
    found = _PROGRESS_RE.findall(stderr or "")
    if not found:
        return None
    done, total, percent, ts_done, ts_total = (int(x) for x in found[-1])
    return dict(done_bytes=done * 1024, total_bytes=total * 1024, percent=percent, tablespaces_done=ts_done, tablespaces=ts_total)


# --- backup_label and backup_manifest facts (pure) ------------------------------------

_LABEL_KEYS = {
    "START WAL LOCATION": "start_wal_location",
    "CHECKPOINT LOCATION": "checkpoint_location",
    "BACKUP METHOD": "backup_method",
    "BACKUP FROM": "backup_from",
    "START TIME": "start_time",
    "LABEL": "label",
    "START TIMELINE": "start_timeline",
    "INCREMENTAL FROM LSN": "incremental_from_lsn",
    "INCREMENTAL FROM TLI": "incremental_from_tli",
}


def parse_backup_label(text):
    """The facts of a backup_label file; ``START WAL LOCATION: 0/2000028 (file 00..02)`` gives the LSN and start_wal_file."""
    facts = {value: None for value in _LABEL_KEYS.values()}
    facts["start_wal_file"] = None
    for line in (text or "").splitlines():
        key, sep, value = line.partition(": ")
        if not sep or key not in _LABEL_KEYS:
            continue
        name = _LABEL_KEYS[key]
        value = value.strip()
        if name == "start_wal_location":
            match = re.match(r"^([0-9A-Fa-f]+/[0-9A-Fa-f]+)(?: \(file ([0-9A-F]{24})\))?$", value)
            if match:
                value, facts["start_wal_file"] = match.group(1), match.group(2)
        elif name in ("start_timeline", "incremental_from_tli"):
            value = int(value) if value.isdigit() else None
        facts[name] = value
    if not facts["start_wal_location"]:
        raise PgdrError("backup_label has no START WAL LOCATION line; the backup is not usable")
    return facts


def label_time_utc(text):
    """backup_label's START TIME as ISO UTC, or None when it is in another zone (the server's log_timezone)."""
    match = re.match(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) (UTC|GMT|Etc/UTC|UCT)$", text or "")
    return "%sT%sZ" % (match.group(1), match.group(2)) if match else None


def wal_ranges(backup_manifest):
    """[{timeline, start_lsn, end_lsn}] from PostgreSQL's backup_manifest (parsed JSON)."""
    ranges = [dict(timeline=int(r["Timeline"]), start_lsn=r["Start-LSN"], end_lsn=r["End-LSN"]) for r in backup_manifest.get("WAL-Ranges") or []]
    if not ranges:
        raise PgdrError("backup_manifest has no WAL-Ranges; the backup is not usable")
    return ranges


def file_compression(name):
    """(format, {method, level: None}) of one file pg_basebackup wrote, from its name."""
    if name == "backup_manifest":
        return "json", {"method": "none", "level": None}
    match = _ARCHIVE_RE.match(name)
    if not match:
        raise PgdrError("pg_basebackup wrote an unexpected file %s; this pgdr.backup does not know it" % name)
    return "tar", {"method": _SUFFIX_METHOD[match.group(2) or ""], "level": None}


def file_role(name):
    if name == "backup_manifest":
        return "backup-manifest"
    stem = name.split(".", 1)[0]
    return {"base": "base", "pg_wal": "wal"}.get(stem, "tablespace")


def physical_facts(options, compression_spec, label, ranges, tablespaces, chain, verified, verify_seconds, start_time, stop_time,
                   wal_segment_size=None):
    """The manifest's ``physical`` object (pure: unit-tested).

    ``wal_segment_size`` (bytes) names the WAL files the set needs: backup_catalog derives them from the LSNs.
    """
    return dict(
        format=options.format,
        wal_method=options.wal_method,
        wal_included=options.wal_method != "none",
        compression=dict(algorithm=compression_spec["method"], level=compression_spec["level"], location=compression_spec["location"]),
        label=options.label,
        checkpoint=options.checkpoint,
        start_time=start_time,
        stop_time=stop_time,
        backup_label=label,
        wal_ranges=ranges,
        tablespaces=tablespaces,
        incremental_from=options.incremental_from,
        chain=chain,
        verified=verified,
        verify_seconds=verify_seconds,
        manifest_checksums=options.manifest_checksums,
        data_dir=DATA_DIR if options.format == "plain" else None,
        wal_segment_size=wal_segment_size,
    )


def manifest_fields(
    options, compression_spec, source, tool, label, ranges, tablespaces, chain, verified, verify_seconds, started_at, finished_at, duration, stop_time=None,
    wal_segment_size=None,
):
    """Everything of manifest.json but format_version/backup_id/cluster/files, which SetWriter adds.

    ``stop_time`` is when pg_basebackup exited (the backup's end, which bounds recovery_target_time);
    ``finished_at`` is when the set was finished, after pg_verifybackup.
    """
    return dict(
        kind="base",
        source=source,
        started_at=started_at,
        finished_at=finished_at,
        duration_seconds=round(duration, 3),
        tool=tool,
        start_lsn=ranges[0]["start_lsn"],
        stop_lsn=ranges[-1]["end_lsn"],
        timeline=label["start_timeline"] or ranges[0]["timeline"],
        compression={"method": compression_spec["method"], "level": compression_spec["level"]},
        encryption={"method": encryption.MANIFEST_NAME[options.encryption_method]},
        consistency=dict(snapshot=None, isolation="wal"),
        options=recorded_options(options, compression_spec),
        physical=physical_facts(
            options,
            compression_spec,
            label,
            ranges,
            tablespaces,
            chain,
            verified,
            verify_seconds,
            label_time_utc(label.get("start_time")) or started_at,
            stop_time or finished_at,
            wal_segment_size=wal_segment_size,
        ),
    )


# --- reading what pg_basebackup wrote -----------------------------------------------


def _decompress_stage(path):
    match = _ARCHIVE_RE.match(os.path.basename(path))
    method = _SUFFIX_METHOD[(match.group(2) if match else "") or ""]
    argv = compression.decompress_argv(method)
    return argv + [path] if argv else None


def read_label_from_tar(path):
    """backup_label out of base.tar[.gz|.lz4|.zst]: the server sends it first, so only the start is read."""
    stage = _decompress_stage(path)
    proc = None
    try:
        if stage:
            proc = start(stage, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            archive = tarfile.open(fileobj=proc.stdout, mode="r|")
        else:
            archive = tarfile.open(path, mode="r|")
        with archive:
            for member in archive:
                if member.name in ("backup_label", "./backup_label"):
                    return archive.extractfile(member).read().decode("utf-8", "replace")
    except (tarfile.TarError, OSError) as exc:
        raise PgdrError("cannot read backup_label from %s: %s" % (os.path.basename(path), exc)) from None
    finally:
        if proc is not None:  # only the start was read: the decompressor is stopped, with anything it started
            stop(proc)
            proc.stdout.close()
    raise PgdrError("%s holds no backup_label; the backup is not usable" % os.path.basename(path))


def read_label(folder, fmt):
    if fmt == "plain":
        with open(os.path.join(folder, "backup_label"), encoding="utf-8", errors="replace") as handle:
            return handle.read()
    names = [n for n in os.listdir(folder) if n.startswith("base.tar")]
    if not names:
        raise PgdrError("pg_basebackup wrote no base.tar into %s" % folder)
    return read_label_from_tar(os.path.join(folder, names[0]))


def read_backup_manifest(path):
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise PgdrError("cannot read PostgreSQL's backup_manifest %s: %s" % (path, exc)) from None


def hash_file(path):
    with open(path, "rb", buffering=0) as handle:
        return backup_set.hash_stream(handle, CHUNK)


class _HashSink:
    """A followed archive's size and sha256, for a set written in place."""

    def __init__(self, _name):
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk):
        self.digest.update(chunk)
        self.size += len(chunk)

    def commit(self):
        return self.size, self.digest.hexdigest()

    def abort(self):
        pass


class _UploadSink:
    """A followed archive streamed into the set through SetWriter.open_file (hashed on the way, stored only when committed)."""

    def __init__(self, writer, name):
        fmt, comp = file_compression(name)
        self._stack = contextlib.ExitStack()
        self._out = self._stack.enter_context(writer.open_file(name, file_role(name), fmt, compression=comp))

    def write(self, chunk):
        self._out.write(chunk)

    def commit(self):
        self._stack.close()  # the repository writer commits: rename (SFTP) or multipart completion (S3)
        return self._out.size, self._out.sha256

    def abort(self):
        # the repository writer removes its temporary file (SFTP) or aborts the multipart upload (S3)
        with contextlib.suppress(Exception):
            self._stack.__exit__(PgdrError, PgdrError("stream aborted"), None)


class Follower:
    """Reads the archives pg_basebackup writes front to back while they grow, and hands each chunk to a sink:
    sha256 for a set written in place, the repository for a streamed one. No file is read twice, and a
    streamed archive is in the store moments after pg_basebackup closes it.

    Files it does not follow (pg_wal.tar, whose headers are rewritten on close; backup_manifest) are the caller's.
    A size that differs from the file's final size means something rewrote it: that sink is aborted and the
    file left out of ``finish()``'s answer. ``error`` is what stopped the follower (a store that failed), if anything.
    """

    def __init__(self, folder, open_sink):
        self.folder = folder
        self.error = None
        self._open_sink = open_sink
        self._files = {}  # name: [handle, sink, bytes read]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                finished = self._done.is_set()
                progressed = self._pass()
                if finished and not progressed:
                    return
                if not progressed:
                    time.sleep(0.05)
        except PgdrError as exc:  # handed to the caller through finish() and error
            self.error = exc
        except Exception as exc:  # a local read that failed: said in one line, never a traceback
            self.error = PgdrError("following %s failed: %s" % (self.folder, exc))

    def _pass(self):
        progressed = False
        try:
            names = [n for n in os.listdir(self.folder) if _SEQUENTIAL_RE.match(n)]
        except FileNotFoundError:
            return False
        for name in names:
            state = self._files.get(name)
            if state is None:
                handle = open(os.path.join(self.folder, name), "rb", buffering=0)
                try:
                    state = self._files[name] = [handle, self._open_sink(name), 0]
                except BaseException:
                    handle.close()
                    raise
            chunk = state[0].read(CHUNK)
            if chunk:
                state[1].write(chunk)
                state[2] += len(chunk)
                progressed = True
        return progressed

    def failure(self):
        """What stopped the follower (a PgdrError of the store), or None: run_pipeline's ``cancel``."""
        return self.error

    def _stop(self):
        self._done.set()
        self._thread.join()

    def finish(self):
        """Once pg_basebackup has exited: {name: (size, sha256)} of the files followed to their end, each committed."""
        self._stop()
        result = {}
        try:
            while self._files:
                name, (handle, sink, size) = self._files.popitem()
                handle.close()
                if self.error is None and os.path.getsize(os.path.join(self.folder, name)) == size:
                    result[name] = sink.commit()
                else:
                    sink.abort()
        finally:
            self.abort()  # whatever a failed commit left open
        return result

    def abort(self):
        """pg_basebackup failed (or a commit did): nothing followed is stored."""
        self._stop()
        while self._files:
            _name, (handle, sink, _size) = self._files.popitem()
            handle.close()
            sink.abort()


# --- verification --------------------------------------------------------------------


def tar_verifier(major, pg_bin_dir):
    """pg_verifybackup that reads tar archives (18+), or None: the server's own when new enough, else a newer one installed."""
    if major >= TAR_VERIFY_MAJOR:
        return find_binary("pg_verifybackup", major, pg_bin_dir)[0]
    for newer in range(30, TAR_VERIFY_MAJOR - 1, -1):
        path = os.path.join(DEBIAN_BIN_DIR % newer, "pg_verifybackup")
        if os.access(path, os.X_OK):
            version = tool_version(path)
            if version and version[0] >= TAR_VERIFY_MAJOR:
                return path
    return None


def extract(archive, target, members=None):
    """Unpack one archive (any compression) into ``target`` with tar; argv only."""
    os.makedirs(target, mode=0o700, exist_ok=True)
    stage = _decompress_stage(archive)
    tar = ["tar", "-x", "-C", target]
    if stage:
        run_pipeline([stage, tar + ["-f", "-"] + (members or [])])
    else:
        run(tar + ["-f", archive] + (members or []))


def _archive(folder, stem):
    names = [n for n in sorted(os.listdir(folder)) if _ARCHIVE_RE.match(n) and n.split(".", 1)[0] == stem]
    return os.path.join(folder, names[0]) if names else None


def verify_backup(folder, fmt, wal_method, major, pg_bin_dir, scratch):
    """pg_verifybackup over what pg_basebackup wrote into ``folder``; returns seconds and how it was checked.

    plain: pg_verifybackup of the server's major (WAL parsed unless wal_method none).
    tar: pg_verifybackup 18+ reads the archives (-n: it cannot parse WAL inside tar), then the WAL in the
    backup is unpacked and read with pg_waldump of the server's major over the backup's WAL range, which is
    the check pg_verifybackup does on a plain backup. Without a pg_verifybackup 18+, everything is unpacked
    and checked as a plain backup.
    """
    started = time.monotonic()
    parse_wal = wal_method != "none"
    if fmt == "plain":
        argv = [find_binary("pg_verifybackup", major, pg_bin_dir)[0]] + ([] if parse_wal else ["--no-parse-wal"]) + [folder]
        _checked(argv)
        return time.monotonic() - started, "pg_verifybackup"
    verifier = tar_verifier(major, pg_bin_dir)
    work = tempfile.mkdtemp(prefix="pgdr-verify-", dir=scratch)
    try:
        if verifier:
            try:
                _checked([verifier, "--format=tar", "--no-parse-wal", folder])
            except PgdrError as exc:
                # a build without lz4/zstd cannot read such archives: check them unpacked instead
                if "does not support" not in (exc.details.get("stderr") or ""):
                    raise
                verifier = None
        if verifier:
            if parse_wal:
                waldir = os.path.join(work, "pg_wal")
                if wal_method == "stream":
                    extract(_archive(folder, "pg_wal"), waldir)
                else:  # fetch: the WAL is inside base.tar
                    extract(_archive(folder, "base"), work, members=["pg_wal"])
                manifest = read_backup_manifest(os.path.join(folder, "backup_manifest"))
                waldump = find_binary("pg_waldump", major, pg_bin_dir)[0]
                for item in wal_ranges(manifest):
                    _checked(
                        [
                            waldump,
                            "--quiet",
                            "--path=%s" % waldir,
                            "--timeline=%d" % item["timeline"],
                            "--start=%s" % item["start_lsn"],
                            "--end=%s" % item["end_lsn"],
                        ]
                    )
            return time.monotonic() - started, "pg_verifybackup --format=tar" + (" + pg_waldump" if parse_wal else "")
        data = os.path.join(work, "data")
        extract(_archive(folder, "base"), data)
        for name in sorted(os.listdir(folder)):
            match = _ARCHIVE_RE.match(name)
            if match and match.group(1).isdigit():
                extract(os.path.join(folder, name), os.path.join(data, "pg_tblspc", match.group(1)))
        if wal_method == "stream":
            extract(_archive(folder, "pg_wal"), os.path.join(data, "pg_wal"))
        shutil.copyfile(os.path.join(folder, "backup_manifest"), os.path.join(data, "backup_manifest"))
        _checked([find_binary("pg_verifybackup", major, pg_bin_dir)[0]] + ([] if parse_wal else ["--no-parse-wal"]) + [data])
        return time.monotonic() - started, "pg_verifybackup (unpacked)"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _checked(argv):
    result = run(argv, check=False)
    if any(code != 0 for code in result.returncodes):
        check_result(result)


# --- the run -------------------------------------------------------------------------


def identify_system(conn_params):
    """(system_identifier, timeline) through IDENTIFY_SYSTEM on a replication connection, as pg_basebackup sees it."""
    import psycopg

    kwargs = dict(conn_params.settings, application_name="pgdr.backup", replication="true")
    if conn_params.password:
        kwargs["password"] = conn_params.password
    try:
        conn = psycopg.connect(autocommit=True, **kwargs)
    except psycopg.OperationalError as exc:
        text = (str(exc).strip().splitlines() or ["connection failed"])[0]
        raise PgdrError(
            "cannot open a replication connection to %s: %s; the role needs the REPLICATION attribute and "
            "pg_hba.conf a 'replication' line for this host" % (conn_params.describe("replication"), text)
        ) from None
    try:
        res = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
        if res.ntuples != 1:
            raise PgdrError(
                "IDENTIFY_SYSTEM on %s failed: %s" % (conn_params.describe("replication"), (res.error_message or b"").decode("utf-8", "replace").strip())
            )
        return res.get_value(0, 0).decode(), int(res.get_value(0, 1))
    finally:
        conn.close()


def server_facts(conn):
    """Tablespaces, summarize_wal and slots: what shapes the backup, read over a normal connection."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT oid::text, spcname, pg_catalog.pg_tablespace_location(oid) FROM pg_catalog.pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
        )
        tablespaces = [dict(oid=r[0], name=r[1], location=r[2]) for r in cur.fetchall()]
        cur.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'summarize_wal'")
        row = cur.fetchone()
        cur.execute("SELECT slot_name, slot_type, active FROM pg_catalog.pg_replication_slots")
        slots = {r[0]: dict(type=r[1], active=r[2]) for r in cur.fetchall()}
        cur.execute("SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'")  # bytes (unit B)
        segment = cur.fetchone()
    return dict(tablespaces=tablespaces, summarize_wal=row[0] if row else None, slots=slots, wal_segment_size=segment[0] if segment else None)


def display_argv(argv):
    """argv for results and the manifest: the binary's name, no secrets (there are none in it: libpq reads a passfile)."""
    return [os.path.basename(argv[0])] + list(argv[1:])


class Plan:
    """What one backup will do: binaries, options, chain; built before anything is written (check mode shows it).

    ``options``: BaseBackupOptions; ``conn_params``: the ConnectionParams pg_basebackup connects with; ``conn``: an
    open connection to the server; ``cluster`` and ``backup_id``: the set's, resolved (the options may leave them None).
    """

    def __init__(self, options, conn_params, conn, version, repo, cluster, backup_id):
        # the label names the set unless one was given
        self.options = dataclasses.replace(options, label=options.label or "pgdr.backup %s/%s" % (cluster, backup_id))
        self.conn_params = conn_params
        self.version = version
        self.major = version["major"]
        self.repo = repo
        self.cluster = cluster
        self.backup_id = backup_id
        self.binary, tool = find_binary("pg_basebackup", self.major, options.pg_bin_dir)
        self.tool_major = tool[0] if tool else self.major
        self.tool_version = "%d.%d" % tool if tool else "unknown"
        self.encrypted = options.encryption_method == "gpg"
        # an encrypted set is staged under work_dir like a remote one and written to the set through gpg
        self.in_place = repo.kind == "local" and not self.encrypted
        # SFTP/S3: the archives pg_basebackup writes front to back are uploaded while written (Follower); pg_wal.tar
        # and backup_manifest, complete only when it exits, after. An encrypted set is staged, then sent through gpg.
        self.streamed = repo.kind != "local" and not self.encrypted and options.format == "tar"
        if options.format == "plain" and repo.kind != "local":
            raise PgdrError("format plain writes a data directory; use format: tar for sftp/s3")
        check_options(self.options, min(self.tool_major, self.major))
        self.compression = normalize_compression(options.compression, options.format, self.tool_major)
        self.facts = server_facts(conn)
        slot = options.slot
        self.create_slot = bool(slot) and slot not in self.facts["slots"]
        if slot and not self.create_slot and self.facts["slots"][slot]["type"] != "physical":
            raise PgdrError("replication slot %s is a logical slot; pg_basebackup needs a physical one" % slot)
        self.parent = None
        self.chain = [backup_id]
        if options.incremental_from:
            self._check_incremental()

    def _check_incremental(self):
        if self.facts["summarize_wal"] != "on":
            raise PgdrError(
                "incremental backups need summarize_wal = on on the server (it is %s); set it with ALTER SYSTEM "
                "SET summarize_wal = on and reload, then take a full backup before the first incremental one" % (self.facts["summarize_wal"] or "missing")
            )
        parent_id = self.options.incremental_from
        self.parent = backup_set.load_manifest(self.repo, self.cluster, parent_id)
        if self.parent["kind"] != "base" or not isinstance(self.parent.get("physical"), dict):
            raise PgdrError("incremental_from %s is a %s set, not a base backup" % (parent_id, self.parent["kind"]))
        if self.parent["source"]["major"] != self.major:
            raise PgdrError(
                "incremental_from %s was taken from PostgreSQL %s, the server is %d; take a full backup"
                % (parent_id, self.parent["source"]["major"], self.major)
            )
        self.chain = list(self.parent["physical"].get("chain") or [parent_id]) + [self.backup_id]

    def parent_manifest_entry(self):
        """The file entry of the parent set's backup_manifest (``backup_manifest``, ``data/backup_manifest`` or ``backup_manifest.gpg``)."""
        entries = [entry for entry in self.parent["files"] if entry["role"] == "backup-manifest"]
        if not entries:
            raise PgdrError("incremental_from %s records no backup_manifest; take a full backup" % self.parent["backup_id"])
        return entries[0]

    def parent_manifest_key(self):
        return backup_set.set_key(self.cluster, self.parent["backup_id"], self.parent_manifest_entry()["path"])

    def tablespace_map(self, set_dir):
        """plain: every tablespace lands inside the set unless tablespace_mapping says otherwise."""
        if self.options.format != "plain":
            return {}
        mapping = {m.old_dir: m.new_dir for m in self.options.tablespace_mapping or []}
        for ts in self.facts["tablespaces"]:
            mapping.setdefault(ts["location"], os.path.join(set_dir, "tablespaces", ts["oid"]))
        return mapping

    def argv(self, target, incremental_manifest=None, set_dir=None):
        return build_argv(
            self.binary, self.tool_major, self.options, target, self.compression, self.create_slot, incremental_manifest, self.tablespace_map(set_dir or target)
        )

    def check_mode_argv(self):
        set_dir = self.repo.location(backup_set.set_key(self.cluster, self.backup_id)) if self.in_place else None
        target = (
            os.path.join(set_dir, DATA_DIR)
            if self.options.format == "plain"
            else (set_dir or os.path.join(self.options.work_dir, "pgdr-basebackup-XXXX", "backup"))
        )
        incremental = "<backup_manifest of %s>" % self.options.incremental_from if self.parent else None
        return display_argv(self.argv(target, incremental, set_dir))


def run_backup(plan, writer, system_identifier):
    """Run pg_basebackup into the set (local) or a staging folder (remote), verify, and write manifest.json.

    Returns (manifest, details). A failed verification leaves the set without manifest.json (incomplete),
    with verify-failed.json saying why; any other failure removes the set.
    """
    sealed = encryption.gpg_session(plan.options.passphrase) if plan.encrypted else contextlib.nullcontext()
    with sealed as gpg:
        return _run_backup(plan, writer, system_identifier, gpg)


def _run_backup(plan, writer, system_identifier, gpg):
    options, repo = plan.options, plan.repo
    local = plan.in_place
    os.makedirs(options.work_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="pgdr-basebackup-", dir=options.work_dir)
    os.chmod(scratch, 0o700)
    try:
        if local:
            set_dir = repo.location(writer.prefix)
            os.makedirs(set_dir, mode=0o700, exist_ok=True)
            os.chmod(set_dir, 0o700)
            folder = set_dir
        else:
            set_dir = folder = os.path.join(scratch, "backup")
        target = os.path.join(folder, DATA_DIR) if options.format == "plain" else folder
        incremental = None
        if plan.parent:
            incremental = os.path.join(scratch, "parent_backup_manifest")
            copy_out(repo, plan.parent_manifest_key(), plan.parent_manifest_entry(), incremental, gpg, "incremental_from %s" % plan.parent["backup_id"])
        argv = plan.argv(target, incremental, set_dir)
        started_at = backup_set.iso_utc()
        started = time.monotonic()
        follower = None
        if plan.streamed:
            follower = Follower(folder, functools.partial(_UploadSink, writer))
        elif local and options.format == "tar":
            follower = Follower(folder, _HashSink)
        try:
            with plan.conn_params.child_env() as env:
                # a store that fails mid-stream stops pg_basebackup at once rather than after the whole backup
                result = run_pipeline([argv], env=env, check=False, cancel=follower.failure if plan.streamed else None)
            stopped_at = backup_set.iso_utc()  # the backup's end: before verification, which can take long
            progress = parse_progress(result.stderr)
            if result.returncodes[0] != 0:
                try:
                    check_result(result)
                except PgdrError as exc:
                    exc.details["progress"] = progress
                    raise
            followed = follower.finish() if follower else {}
        except BaseException:
            if follower:
                follower.abort()  # before the set is removed: no upload may outlive it
            raise
        if plan.streamed and follower.error is not None:
            raise follower.error
        backup_seconds = time.monotonic() - started
        label = parse_backup_label(read_label(target, options.format))
        bm_path = os.path.join(target, "backup_manifest")
        ranges = wal_ranges(read_backup_manifest(bm_path))
        verified, verify_seconds, how = False, None, None
        verify_error = None
        if options.verify:
            try:
                verify_seconds, how = verify_backup(target, options.format, options.wal_method, plan.major, options.pg_bin_dir, scratch)
                verify_seconds = round(verify_seconds, 3)
                verified = True
            except PgdrError as exc:
                verify_error = exc
        finished_at = backup_set.iso_utc()
        source = dict(
            host=plan.conn_params.settings.get("host") or plan.conn_params.reached_host or socket.gethostname(),
            port=int(plan.conn_params.settings.get("port") or 5432),
            database=None,
            system_identifier=system_identifier,
            server_version=plan.version["text"],
            server_version_num=plan.version["num"],
            major=plan.major,
        )
        tablespaces = [dict(ts, file=_tablespace_file(plan, folder, ts, set_dir)) for ts in plan.facts["tablespaces"]]
        if gpg:
            tablespaces = [dict(ts, file=ts["file"] + encryption.SUFFIX["gpg"] if ts["file"] else None) for ts in tablespaces]
        fields = manifest_fields(
            options,
            plan.compression,
            source,
            dict(name="pg_basebackup", version=plan.tool_version, argv=display_argv(argv)),
            label,
            ranges,
            tablespaces,
            plan.chain,
            verified,
            verify_seconds,
            started_at,
            finished_at,
            time.monotonic() - started,
            stop_time=stopped_at,
            wal_segment_size=plan.facts.get("wal_segment_size"),
        )
        if verify_error is not None:
            _mark_failed(writer, fields, verify_error)
            raise PgdrError(
                "pg_verifybackup found the new backup %s bad: %s; the set is left incomplete (no manifest.json)"
                % (writer.name, telling_line(verify_error.details.get("stderr") or verify_error.msg)),
                stderr=verify_error.details.get("stderr"),
                verify_failed=True,
            )
        upload_seconds = _record_files(plan, writer, folder, target, followed, gpg)
        manifest = writer.finish(fields)
        details = dict(
            progress=progress,
            backup_seconds=round(backup_seconds, 3),
            verify_seconds=verify_seconds,
            verified_with=how,
            upload_seconds=upload_seconds,
            streamed_files=sorted(followed) if plan.streamed else [],
            cmd=display_argv(argv),
        )
        return manifest, details
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tablespace_file(plan, folder, ts, set_dir):
    if plan.options.format == "tar":
        names = [n for n in os.listdir(folder) if n.split(".", 1)[0] == ts["oid"] and _ARCHIVE_RE.match(n)]
        return names[0] if names else None
    mapped = plan.tablespace_map(set_dir)[ts["location"]]
    inside = os.path.join(set_dir, "tablespaces", ts["oid"])
    return "tablespaces/%s" % ts["oid"] if mapped == inside else mapped


def _record_files(plan, writer, folder, target, followed, gpg=None):
    """Enter every file into the set: hashed in place (local), or uploaded (remote) or encrypted (``gpg``) while hashed;
    returns the seconds of uploads after pg_basebackup. ``followed``: {name: (size, sha256)} of the archives the
    Follower hashed (local) or streamed into the set (remote) while pg_basebackup wrote them.
    The sha256 recorded is that of the stored bytes: what a restore checks before it decrypts."""
    if plan.options.format == "plain":
        writer.add_file_entry("%s/backup_manifest" % DATA_DIR, "backup-manifest", "json", compression="none")
        return None
    started = time.monotonic()
    for name in sorted(os.listdir(folder)):
        fmt, comp = file_compression(name)
        path = os.path.join(folder, name)
        if gpg:
            # gpg reads the staged file and its output streams into the set: no second copy on disk
            with writer.open_file(name + encryption.SUFFIX["gpg"], file_role(name), fmt, compression=comp, encryption="gpg") as out:
                run_pipeline([gpg.encrypt_argv() + [path]], sink=out.write)
        elif plan.in_place:
            size, digest = followed.get(name) or hash_file(path)
            writer.add_file_entry(name, file_role(name), fmt, compression=comp, size=size, sha256=digest)
        elif name in followed:
            continue  # already in the set, streamed while pg_basebackup wrote it
        else:
            with writer.open_file(name, file_role(name), fmt, compression=comp) as out, open(path, "rb") as src:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
    return None if plan.in_place else round(time.monotonic() - started, 3)


def failure_record(fields, error):
    return dict(fields, verify_error=error.msg, verify_stderr=(error.details.get("stderr") or "")[-4000:], failed_at=backup_set.iso_utc())


def _mark_failed(writer, fields, error):
    """Keep the data (local) for inspection, never a manifest: a set without one is incomplete and never restored."""
    writer.repo.put_bytes_atomic(writer.prefix + "/" + FAILED_NAME, backup_set.manifest_bytes(failure_record(fields, error)))
    writer.aborted = True  # the writer must neither finish nor delete this set


# --- re-verifying a stored set ----------------------------------------------------------


def copy_out(repo, key, entry, path, gpg, what):
    """One stored file to ``path``, decrypted with ``gpg`` when the entry says it is encrypted (one line for a wrong passphrase)."""
    if encryption.method_of(entry) == "none":
        with repo.open_reader(key) as reader, open(path, "wb") as out:
            shutil.copyfileobj(reader, out, CHUNK)
        return
    if gpg is None:
        raise PgdrError("%s is encrypted (gpg): give encryption.passphrase, the one it was encrypted with" % what)
    with repo.open_reader(key) as reader:
        try:
            run_pipeline([gpg.decrypt_argv()], stdin_reader=reader, stdout_path=path)
        except PgdrError as exc:
            raise encryption.wrong_passphrase(exc, "encryption.passphrase") from None


def plain_name(entry):
    """The name pg_basebackup gave a stored file (``base.tar.gpg`` was ``base.tar``)."""
    path = entry["path"]
    suffix = encryption.SUFFIX[encryption.method_of(entry)]
    return path[: -len(suffix)] if suffix and path.endswith(suffix) else path


def reverify(repo, cluster, backup_id, pg_bin_dir, work_dir, passphrase=None):
    """pg_verifybackup (and the set's sha256 sums) over a complete base set; on a verdict manifest.json is removed.

    Returns {verify_seconds, verified_with}. A remote tar set is downloaded to ``work_dir`` first. Only a verdict
    about the set's content (a file missing or different from the manifest, pg_verifybackup failing) marks it
    failed: a repository that cannot be read just now fails the task and leaves the set as it was.
    """
    manifest = backup_set.load_manifest(repo, cluster, backup_id)
    if manifest["kind"] != "base":
        raise PgdrError("set %s/%s is a %s set; action verify checks base backups" % (cluster, backup_id, manifest["kind"]))
    physical = manifest["physical"]
    encrypted = any(encryption.method_of(entry) != "none" for entry in manifest["files"])
    if encrypted and not passphrase:
        raise PgdrError("backup set %s/%s is encrypted (gpg): give encryption.passphrase to verify it" % (cluster, backup_id))
    os.makedirs(work_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="pgdr-basebackup-", dir=work_dir)
    os.chmod(scratch, 0o700)
    sealed = encryption.gpg_session(passphrase) if encrypted else contextlib.nullcontext()
    try:
        try:
            backup_set.check_files(repo, manifest, cluster)
        except PgdrError as exc:
            if not exc.details.get("bad_files"):
                raise
            _reject(repo, manifest, cluster, backup_id, exc)
        if repo.kind == "local" and not encrypted:
            folder = repo.location(backup_set.set_key(cluster, backup_id))
        else:
            folder = os.path.join(scratch, "backup")
            os.makedirs(folder)
            with sealed as gpg:
                for entry in manifest["files"]:
                    # a file that does not decrypt is a wrong passphrase (its sha256 was checked above), not a bad set
                    where = "backup set %s/%s" % (cluster, backup_id)
                    copy_out(repo, backup_set.set_key(cluster, backup_id, entry["path"]), entry, os.path.join(folder, plain_name(entry)), gpg, where)
        target = os.path.join(folder, physical["data_dir"]) if physical["format"] == "plain" else folder
        try:
            seconds, how = verify_backup(target, physical["format"], physical["wal_method"], manifest["source"]["major"], pg_bin_dir, scratch)
        except PgdrError as exc:
            _reject(repo, manifest, cluster, backup_id, exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(verify_seconds=round(seconds, 3), verified_with=how, manifest=manifest)


def _reject(repo, manifest, cluster, backup_id, exc):
    """Record why a stored set failed verification and take its manifest away, so it is never restored."""
    repo.put_bytes_atomic(backup_set.set_key(cluster, backup_id, FAILED_NAME), backup_set.manifest_bytes(failure_record(manifest, exc)))
    repo.delete_tree(backup_set.set_key(cluster, backup_id, backup_set.MANIFEST_NAME))
    raise PgdrError(
        "backup set %s/%s failed verification: %s; manifest.json was removed, so the set is incomplete "
        "and never restored (its record is in %s)" % (cluster, backup_id, telling_line(exc.details.get("stderr") or exc.msg), FAILED_NAME),
        stderr=exc.details.get("stderr"),
        verify_failed=True,
    ) from None


def summary(manifest):
    physical = manifest.get("physical") or {}
    return dict(
        start_lsn=manifest.get("start_lsn"),
        stop_lsn=manifest.get("stop_lsn"),
        timeline=manifest.get("timeline"),
        bytes=sum(f["size"] for f in manifest["files"]),
        files=len(manifest["files"]),
        format=physical.get("format"),
        wal_method=physical.get("wal_method"),
        chain=physical.get("chain"),
        verified=physical.get("verified"),
    )
