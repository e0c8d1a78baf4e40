# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog of a repository: every set of a cluster read through its manifest, pins, prune and verify.

Reads only through the Repository interface and ``sets/backup_set`` (the way restores read), so the catalog
and a restore always agree on what is complete. What it writes:

- ``<cluster>/<backup_id>/pin.json`` (PIN_NAME), beside the manifest and never inside it: the manifest is
  written once and its files are hashed; a pin is a later decision about the set. Written atomically
  (``put_bytes_atomic``), removed by unpin, and removed with the set.
- a prune removes sets with ``backup_set.delete_set`` (manifest first, then the files), so a set whose
  deletion is interrupted is incomplete, never a complete set with files missing.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import List, Optional

from ansible_collections.pgdr.backup.plugins.module_utils.catalog import retention, walrange
from ansible_collections.pgdr.backup.plugins.module_utils.catalog.timespec import backup_id_time, iso, parse_moment, show_duration
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set

PIN_NAME = backup_set.PIN_NAME
PIN_FORMAT = 1


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _relative(keys, prefix):
    start = len(prefix) + 1
    return [key[start:] for key in keys if key.startswith(prefix + "/")]


def _walk(repo, folder):
    """(size, newest mtime or None) of every object below ``folder``, folder by folder (list_entries has the mtimes)."""
    total, newest = 0, None
    pending = [folder]
    while pending:
        current = pending.pop()
        for entry in repo.list_entries(current):
            total += entry.size
            newest = entry.mtime if newest is None or entry.mtime > newest else newest
        pending.extend("%s/%s" % (current, name) for name in repo.list_dirs(current))
    return total, newest


# --- pins -------------------------------------------------------------------------------


def read_pin(repo, cluster, backup_id):
    """The pin of a set ({pinned_at, expires, requested}) or None; a pin file that cannot be read counts as a pin forever."""
    key = backup_set.set_key(cluster, backup_id, PIN_NAME)
    if not repo.exists(key):
        return None
    try:
        pin = json.loads(repo.get_bytes(key).decode("utf-8"))
        expires = pin.get("expires")
        if expires is not None:
            backup_set.parse_iso_utc(expires)
        return {"pinned_at": pin.get("pinned_at"), "expires": expires, "requested": pin.get("requested")}
    except (ValueError, UnicodeDecodeError, AttributeError, PgdrError):
        # keeping a set nobody meant to keep costs space; deleting one somebody pinned costs the backup
        return {"pinned_at": None, "expires": None, "requested": None, "unreadable": True}


def pin_active(pin, now):
    if pin is None:
        return False
    return pin.get("expires") is None or backup_set.parse_iso_utc(pin["expires"]) > now


def pin_bytes(pin):
    return (json.dumps(dict(format_version=PIN_FORMAT, **pin), indent=2, sort_keys=True) + "\n").encode("utf-8")


def _require_complete(repo, cluster, backup_id, action):
    status = backup_set.set_status(repo, cluster, backup_id)
    if status == "absent":
        raise PgdrError("backup set %s/%s does not exist in %s; check cluster and backup_id (action list shows the sets)"
                        % (cluster, backup_id, repo.describe()))
    if status != "complete":
        raise PgdrError("backup set %s/%s is incomplete (no manifest.json): it cannot be %s; it is never restored, prune removes it"
                        % (cluster, backup_id, action))
    backup_set.load_manifest(repo, cluster, backup_id)  # a set restores would refuse is not worth pinning: say so now


def pin(repo, cluster, backup_id, pin_expires, now, check_mode):
    """Pin a complete set (until ``pin_expires``: a time or a duration from now; None: until unpinned).

    Running it again with the same ``pin_expires`` text changes nothing while the pin holds: a duration counts
    from when the pin was made, so a daily playbook does not push the expiry out day after day.
    """
    _require_complete(repo, cluster, backup_id, "pinned")
    before = read_pin(repo, cluster, backup_id)
    expires = parse_moment(pin_expires, "pin_expires", now, future=True) if pin_expires is not None else None
    if expires is not None and expires <= now:
        raise PgdrError("pin_expires %r is in the past (%s): give a later time or a duration such as 30d" % (pin_expires, iso(expires)))
    requested = None if pin_expires is None else str(pin_expires)
    unchanged = (before is not None and not before.get("unreadable") and pin_active(before, now) and before.get("requested") == requested)
    after = before if unchanged else {"pinned_at": iso(now), "expires": iso(expires), "requested": requested}
    if not unchanged and not check_mode:
        repo.put_bytes_atomic(backup_set.set_key(cluster, backup_id, PIN_NAME), pin_bytes(after))
    return dict(changed=not unchanged, pin=after, before=before)


def unpin(repo, cluster, backup_id, check_mode):
    status = backup_set.set_status(repo, cluster, backup_id)
    before = read_pin(repo, cluster, backup_id) if status != "absent" else None
    if status == "absent":
        raise PgdrError("backup set %s/%s does not exist in %s; check cluster and backup_id (action list shows the sets)"
                        % (cluster, backup_id, repo.describe()))
    if before is not None and not check_mode:
        repo.delete_tree(backup_set.set_key(cluster, backup_id, PIN_NAME))
    return dict(changed=before is not None, pin=None, before=before)


# --- listing ----------------------------------------------------------------------------


def describe_set(repo, cluster, backup_id, complete, now):
    """One set as the catalog shows it (a dict, see the module's RETURN ``sets``)."""
    prefix = backup_set.set_key(cluster, backup_id)
    entry = dict(
        backup_id=backup_id, kind=None, status=retention.INCOMPLETE, complete=False, started_at=None, finished_at=None,
        duration_seconds=None, start_lsn=None, stop_lsn=None, timeline=None, size=None, files=None, tool=None,
        database=None, format=None, chain=None, pinned=False, pin_expires=None, last_activity=None, problem=None,
        wal=None, location=repo.location(prefix),
    )
    pin_found = read_pin(repo, cluster, backup_id)
    entry["pinned"] = pin_active(pin_found, now)
    entry["pin_expires"] = pin_found.get("expires") if pin_found else None
    if not complete:
        size, newest = _walk(repo, prefix)
        known = [moment for moment in (newest, backup_id_time(backup_id)) if moment is not None]
        entry.update(size=size, last_activity=iso(max(known)) if known else None)
        return entry
    entry["complete"] = True
    try:
        manifest = backup_set.load_manifest(repo, cluster, backup_id)
    except PgdrError as exc:
        entry.update(status=retention.UNREADABLE, problem=exc.msg)
        return entry
    physical = manifest.get("physical") if isinstance(manifest.get("physical"), dict) else {}
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    size = sum(item["size"] for item in manifest["files"])
    if physical.get("format") == "plain" and physical.get("data_dir"):
        # a plain set's data directory is listed in PostgreSQL's backup_manifest, not in ours: count what is stored
        size = _walk(repo, prefix)[0] - (repo.size(prefix + "/" + PIN_NAME) if pin_found else 0) - repo.size(prefix + "/" + backup_set.MANIFEST_NAME)
    entry.update(
        kind=manifest["kind"], status=retention.COMPLETE, started_at=manifest["started_at"], finished_at=manifest["finished_at"],
        duration_seconds=manifest["duration_seconds"], start_lsn=manifest.get("start_lsn"), stop_lsn=manifest.get("stop_lsn"),
        timeline=manifest.get("timeline"), size=size, files=len(manifest["files"]),
        tool="%s %s" % (manifest["tool"]["name"], manifest["tool"]["version"]),
        database=manifest["source"].get("database"), format=physical.get("format") or options.get("format"),
        chain=physical.get("chain") if physical.get("chain") else None,
    )
    entry["wal"] = wal_needed(entry, physical)
    return entry


def wal_needed(entry, physical):
    """The WAL range a base set needs (walrange.needed_range), None for other kinds or a set without LSNs."""
    if entry["kind"] != "base" or not entry["start_lsn"] or not isinstance(entry["timeline"], int):
        return None
    try:
        return walrange.needed_range(entry["start_lsn"], entry["stop_lsn"], entry["timeline"], walrange.set_segment_size(physical))
    except PgdrError:
        return None  # LSNs a restore would refuse too: verify says so through the manifest checks


def list_catalog(repo, cluster, now):
    """Every set of ``cluster``, oldest first (by backup_id, as stored)."""
    return [describe_set(repo, cluster, item["backup_id"], item["complete"], now) for item in backup_set.list_sets(repo, cluster)]


def entry_time(entry):
    """When a set happened: finished_at of a complete set, the last activity of an incomplete one (None if unknown)."""
    text = entry["finished_at"] or entry["last_activity"]
    return backup_set.parse_iso_utc(text) if text else None


def select(entries, kinds=None, since=None, until=None, backup_id=None):
    """The entries that pass the filters (kind: complete sets of those kinds only; since/until: by entry_time, inclusive)."""
    chosen = []
    for entry in entries:
        if kinds and entry["kind"] not in kinds:
            continue
        if backup_id is not None and entry["backup_id"] != backup_id:
            continue
        moment = entry_time(entry)
        if (since is not None or until is not None) and moment is None:
            continue
        if since is not None and moment < since:
            continue
        if until is not None and moment > until:
            continue
        chosen.append(entry)
    return chosen


def newest_before(entries, moment, kinds=None):
    """The newest complete set (of ``kinds``) that finished before ``moment``: what a restore to that time starts from."""
    best = None
    for entry in entries:
        if entry["status"] != retention.COMPLETE or (kinds and entry["kind"] not in kinds):
            continue
        finished = entry_time(entry)
        if finished < moment and (best is None or (finished, entry["backup_id"]) > best[0]):
            best = ((finished, entry["backup_id"]), entry)
    return best[1] if best else None


# --- prune ------------------------------------------------------------------------------


def facts_of(entry, now):
    expires = entry["pin_expires"]
    return retention.SetFacts(
        backup_id=entry["backup_id"], kind=entry["kind"], status=entry["status"], time=entry_time(entry), pinned=entry["pinned"],
        pin_expires=backup_set.parse_iso_utc(expires) if entry["pinned"] and expires else None,
        chain=tuple(entry["chain"] or ()),
        database=entry["database"],
    )


def plan_prune(entries, rules, now, kinds=None):
    """(decisions, to_delete): to_delete are the entries to remove, oldest first. With ``kinds``, only sets of those kinds
    are candidates (incomplete sets have no kind: they are removed only when no kind is given)."""
    decisions = retention.decide([facts_of(entry, now) for entry in entries], rules, now)
    by_id = {entry["backup_id"]: entry for entry in entries}
    doomed = [d for d in decisions if not d.keep and (not kinds or d.kind in kinds)]
    doomed.sort(key=lambda d: (entry_time(by_id[d.backup_id]) or now, d.backup_id))
    return decisions, [by_id[d.backup_id] for d in doomed]


def delete_sets(repo, cluster, doomed, now):
    """Remove the sets ``doomed`` (manifest first); each is looked at again just before, so a set pinned or completed
    since the listing is left alone. Returns (deleted ids, skipped [{backup_id, reason}])."""
    deleted, skipped = [], []
    for entry in doomed:
        backup_id = entry["backup_id"]
        status = backup_set.set_status(repo, cluster, backup_id)
        if status == "absent":
            skipped.append(dict(backup_id=backup_id, reason="already gone"))
            continue
        if status != ("complete" if entry["complete"] else "incomplete"):
            skipped.append(dict(backup_id=backup_id, reason="became %s since it was listed" % status))
            continue
        if pin_active(read_pin(repo, cluster, backup_id), now):
            skipped.append(dict(backup_id=backup_id, reason="pinned since it was listed"))
            continue
        try:
            if entry["complete"]:
                backup_set.delete_set(repo, cluster, backup_id)
            else:
                repo.delete_tree(backup_set.set_key(cluster, backup_id))
        except PgdrError as exc:
            raise PgdrError("prune stopped at set %s/%s after deleting %d sets: %s; run it again once that is fixed"
                            % (cluster, backup_id, len(deleted), exc.msg), deleted=deleted) from None
        deleted.append(backup_id)
    return deleted, skipped


# --- verify -----------------------------------------------------------------------------


def _expected_extra(manifest):
    """Folders of a set whose files our manifest does not list (a plain base set's data directory and tablespaces)."""
    physical = manifest.get("physical") if isinstance(manifest.get("physical"), dict) else {}
    if physical.get("format") == "plain" and physical.get("data_dir"):
        return (physical["data_dir"] + "/", "tablespaces/")
    return ()


def verify_set(repo, cluster, entry):
    """Re-hash every file of one set against its manifest (streamed); missing, damaged and extra files."""
    started = time.monotonic()
    result = dict(backup_id=entry["backup_id"], kind=entry["kind"], finished_at=entry["finished_at"], ok=False,
                  files_checked=0, bytes_checked=0, missing=[], damaged=[], extra=[], problem=None, seconds=None)
    try:
        manifest = backup_set.load_manifest(repo, cluster, entry["backup_id"])
    except PgdrError as exc:
        result.update(problem=exc.msg, seconds=round(time.monotonic() - started, 3))
        return result
    checked = backup_set.verify_files(repo, manifest, cluster)
    prefix = backup_set.set_key(cluster, entry["backup_id"])
    listed = {item["path"] for item in manifest["files"]} | {backup_set.MANIFEST_NAME, PIN_NAME}
    skip = _expected_extra(manifest)
    stored = _relative(repo.list_files(prefix), prefix)
    result.update(
        files_checked=len(checked),
        bytes_checked=sum(item["actual"]["size"] for item in checked if item["actual"]),
        missing=[item["path"] for item in checked if item["problem"] == "missing"],
        damaged=[dict(path=item["path"], problem=item["problem"]) for item in checked if item["problem"] not in (None, "missing")],
        extra=[path for path in stored if path not in listed and not path.startswith(skip)],
    )
    bad = result["missing"] + [item["path"] for item in result["damaged"]]
    if bad:
        result["problem"] = "%d of %d files missing or damaged (first: %s)" % (len(bad), len(checked), bad[0])
    elif result["extra"]:
        result["problem"] = "%d files not in the manifest (first: %s)" % (len(result["extra"]), result["extra"][0])
    result["ok"] = result["problem"] is None
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def verify_wal(result, entry, archive_names):
    """Add the WAL coverage of a base set to its verify ``result`` (a gap makes the set bad)."""
    if entry["kind"] != "base":
        return
    if entry["wal"] is None:
        result.update(ok=False, problem=result["problem"] or "the manifest records no start_lsn/timeline: the WAL it needs is unknown")
        return
    coverage = walrange.check_coverage(entry["wal"], archive_names)
    result["wal"] = coverage
    if not coverage["ok"]:
        result.update(ok=False, problem="%s; %s" % (result["problem"], coverage["problem"]) if result["problem"] else coverage["problem"])


def verify(repo, cluster, entries, now, max_age=None, archive_names=None):
    """Verify ``entries`` (complete ones; incomplete ones are never restored and are not checked).

    Returns (results, newest_good entry or None, failure message or None): a failure names the first bad set,
    or a newest good set older than ``max_age`` (a timedelta), or no good set at all when ``max_age`` is given.
    """
    results: List[dict] = []
    newest: Optional[dict] = None
    for entry in entries:
        if not entry["complete"]:
            continue
        outcome = verify_set(repo, cluster, entry)
        if archive_names is not None:
            verify_wal(outcome, entry, archive_names)
        results.append(outcome)
        if outcome["ok"] and (newest is None or entry_time(entry) > entry_time(newest)):
            newest = entry
    bad = [item for item in results if not item["ok"]]
    message = None
    if bad:
        message = "backup set %s/%s failed verification: %s; %d of %d sets checked are bad, take a new backup and look at them" % (
            cluster, bad[0]["backup_id"], bad[0]["problem"], len(bad), len(results))
    elif max_age is not None:
        if newest is None:
            message = "no verified backup set of cluster %s in %s (max_age %s): take a backup" % (cluster, repo.describe(), show_duration(max_age))
        elif now - entry_time(newest) > max_age:
            message = "the newest verified backup set %s/%s finished %s, %s ago, older than max_age %s: backups are not running, look at the schedule" % (
                cluster, newest["backup_id"], newest["finished_at"], show_duration(now - entry_time(newest)), show_duration(max_age))
    return results, newest, message


# --- WAL pruning ------------------------------------------------------------------------


def plan_wal_prune(kept_entries, archive_names):
    """What a prune removes from the WAL archive, given the sets that stay: dict boundary (the first segment the oldest
    kept base set needs, or None), files (names to delete, sorted), reason (why nothing goes, or None)."""
    if any(entry["status"] == retention.UNREADABLE for entry in kept_entries):
        return dict(boundary=None, files=[], reason="a kept set has an unreadable manifest: it may be a base set, so no WAL is pruned")
    kept_base = [dict(backup_id=entry["backup_id"], start_lsn=entry["start_lsn"], timeline=entry["timeline"],
                      segment_size=(entry["wal"] or {}).get("segment_size"))
                 for entry in kept_entries if entry["status"] == retention.COMPLETE and entry["kind"] == "base"]
    if not kept_base:
        return dict(boundary=None, files=[], reason="no base set is kept: no WAL is pruned (a WAL archive without a base set is kept whole)")
    try:
        boundary = walrange.prune_boundary(kept_base)
    except PgdrError as exc:
        return dict(boundary=None, files=[], reason=exc.msg)
    return dict(boundary=boundary[1], files=walrange.prunable(archive_names, boundary), reason=None)
