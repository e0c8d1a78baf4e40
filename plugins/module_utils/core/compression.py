# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stream compressors as pipeline stages: standard formats anyone can decompress by hand."""

from __future__ import annotations

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

METHODS = ("none", "gzip", "lz4", "zstd")
SUFFIX = {"none": "", "gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}
LEVELS = {"gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 19)}


def normalize(spec):
    """{method, level} with the level checked; None/absent means no compression."""
    spec = dict(spec or {})
    method = spec.get("method") or "none"
    if method not in METHODS:
        raise PgdrError("compression.method %r is not one of %s" % (method, ", ".join(METHODS)))
    level = spec.get("level")
    if method == "none":
        return {"method": "none", "level": None}
    low, high = LEVELS[method]
    if level is not None and not low <= int(level) <= high:
        raise PgdrError("compression.level %s is out of range for %s (%d to %d)" % (level, method, low, high))
    return {"method": method, "level": None if level is None else int(level)}


def compress_argv(spec):
    """The stage that compresses stdin to stdout, or None for no compression."""
    method, level = spec["method"], spec["level"]
    if method == "none":
        return None
    argv = {"gzip": ["gzip", "-c"], "lz4": ["lz4", "-c", "-q"], "zstd": ["zstd", "-c", "-q", "-T0"]}[method]
    return argv + (["-%d" % level] if level is not None else [])


def decompress_argv(method):
    if method == "none":
        return None
    return {"gzip": ["gzip", "-dc"], "lz4": ["lz4", "-dc", "-q"], "zstd": ["zstd", "-dc", "-q"]}[method]


def pg_dump_option(spec, pg_dump_major):
    """pg_dump's own -Z for custom and directory formats (compressed inside the archive).

    pg_dump 16 and later take ``method:level``; pg_dump 14/15 only gzip levels.
    """
    method, level = spec["method"], spec["level"]
    if method == "none":
        return ["--compress=0"]
    if pg_dump_major >= 16:
        return ["--compress=%s" % (method if level is None else "%s:%d" % (method, level))]
    if method != "gzip":
        raise PgdrError(
            "pg_dump %d compresses custom and directory dumps only with gzip; use compression.method gzip, "
            "format plain or tar (compressed by %s outside pg_dump), or PostgreSQL 16+ client binaries" % (pg_dump_major, method)
        )
    return ["--compress=%d" % (6 if level is None else level)]
