# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``pgbackrest info --output=json`` read as the collection's catalog reads its own sets.

Pure. ``entries`` gives each backup of a stanza in the shape of catalog.list_catalog's entries (backup_id, kind,
status, complete, started_at, finished_at, duration_seconds, start_lsn, stop_lsn, timeline, size, chain, wal,
location, ...), so backup_catalog and restore_drill can list, select and drill a stanza's backups beside the
collection's own. ``kind`` is ``pgbackrest``; ``type`` is pgBackRest's full, diff or incr.
"""

from __future__ import annotations

import datetime
import json

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets.backup_set import iso_utc

KIND = "pgbackrest"
# info's status codes (pgBackRest's INFO_STANZA_STATUS_CODE_*): the stanza is not there, or not whole
MISSING_STANZA_PATH = 1
MISSING_STANZA_DATA = 3
SEGMENT_SIZE = 16 * 1024 * 1024  # pgBackRest 2.45's info does not report it; the default of every lab cluster


def parse(text, stanza):
    """The stanza's object of info's JSON (a list of stanzas); a one-line PgdrError when it is not JSON or lacks it."""
    try:
        stanzas = json.loads(text)
    except ValueError as exc:
        raise PgdrError("pgbackrest info printed no JSON (%s); run it by hand with --output=json to see why" % exc) from None
    for item in stanzas if isinstance(stanzas, list) else []:
        if isinstance(item, dict) and item.get("name") == stanza:
            return require_readable(item)
    raise PgdrError("pgbackrest info does not list stanza %s; check --stanza and the configuration file" % stanza)


def status(item):
    """(code, message) of the stanza's status."""
    found = item.get("status") or {}
    return found.get("code"), found.get("message")


def require_readable(item):
    """A PgdrError with the repository's own message when info could not read the stanza (status other than ok, no valid
    backups, or missing): a repository it cannot reach, another cipher, a mismatch."""
    code, message = status(item)
    if code in (0, 2, MISSING_STANZA_PATH, MISSING_STANZA_DATA):
        return item
    repos = [repo.get("status") or {} for repo in item.get("repo") or []]
    detail = "; ".join(str(repo.get("message")).splitlines()[0] for repo in repos if repo.get("code") not in (None, 0)) or message
    raise PgdrError("pgbackrest info cannot read stanza %s (status %s: %s): %s; check the repository settings and that the "
                    "repository is reachable" % (item.get("name"), code, message, detail))


def missing(item):
    """Whether stanza-create has still to run (no stanza path, or no info files in it)."""
    return status(item)[0] in (MISSING_STANZA_PATH, MISSING_STANZA_DATA)


def current_db(item):
    """{version, system_id} of the cluster the stanza backs up now (its newest db entry), None before stanza-create."""
    dbs = [db for db in item.get("db") or [] if isinstance(db, dict)]
    if not dbs:
        return None
    db = max(dbs, key=lambda db: db.get("id", 0))
    return dict(version=str(db.get("version")), system_id=str(db.get("system-id")))


def _time(seconds):
    return None if seconds is None else iso_utc(datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))


def _wal(archive):
    """The WAL range a backup needs, as catalog.walrange.needed_range gives it for a base set."""
    first, last = (archive or {}).get("start"), (archive or {}).get("stop")
    if not first:
        return None
    timeline = int(first[:8], 16)
    return dict(first=first, last=last or first, timeline=timeline, history="%08X.history" % timeline if timeline > 1 else None,
                segment_size=SEGMENT_SIZE)


def entry(backup, item, location, dbs):
    """One backup as a catalog entry."""
    times = backup.get("timestamp") or {}
    lsn = backup.get("lsn") or {}
    sizes = backup.get("info") or {}
    repository = sizes.get("repository") or {}
    wal = _wal(backup.get("archive"))
    db = dbs.get((backup.get("database") or {}).get("id")) or {}
    error = bool(backup.get("error"))
    start, stop = times.get("start"), times.get("stop")
    return dict(
        backup_id=backup["label"], kind=KIND, type=backup.get("type"), status="complete", complete=True,
        started_at=_time(start), finished_at=_time(stop),
        duration_seconds=(stop - start) if start is not None and stop is not None else None,
        start_lsn=lsn.get("start"), stop_lsn=lsn.get("stop"), timeline=wal["timeline"] if wal else None,
        size=repository.get("delta"), repository_size=repository.get("size"), database_size=sizes.get("size"),
        files=None, tool="pgBackRest %s" % (backup.get("backrest") or {}).get("version"), database=None, format=None,
        chain=list(backup.get("reference") or []) or None, prior=backup.get("prior"), pinned=False, pin_expires=None,
        last_activity=None, problem="pgBackRest found page checksum errors in this backup (error: true)" if error else None,
        wal=wal, location="%s/backup/%s/%s" % (location, item["name"], backup["label"]), stanza=item["name"],
        pg_version=db.get("version"), system_id=db.get("system-id"),
    )


def entries(item, location):
    """The stanza's backups, oldest first (info's order), as catalog entries; ``location`` is the repository
    (``/var/backups/pgbackrest`` or ``s3://bucket/path``)."""
    dbs = {db.get("id"): {"version": str(db.get("version")), "system-id": str(db.get("system-id"))} for db in item.get("db") or []}
    return [entry(backup, item, location.rstrip("/"), dbs) for backup in item.get("backup") or []]


def archive_ranges(item):
    """The archived WAL per database: [{id (e.g. 15-1), min, max}] (min None when nothing is archived yet)."""
    return [dict(id=a.get("id"), min=a.get("min"), max=a.get("max")) for a in item.get("archive") or []]


def summary(item, location):
    """The stanza as the module returns it."""
    code, message = status(item)
    db = current_db(item)
    return dict(name=item["name"], status_code=code, status=message, cipher=item.get("cipher"), pg_version=db and db["version"],
                system_id=db and db["system_id"], archive=archive_ranges(item), location=location)
