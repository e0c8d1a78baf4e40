# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL a base set needs, the gaps of an archive, and the boundary below which WAL can be pruned: pure functions.

A segment is named ``TTTTTTTTLLLLLLLLSSSSSSSS`` (timeline, then the segment number split in "log" and "seg" parts
of ``0x100000000 / segment_size`` segments each). Positions compare across timelines: an LSN is never reused.

Choices where the issue is silent:
- the segment size is the manifest's ``physical.wal_segment_size`` when a set records one, else PostgreSQL's default
  16 MiB (pg_basebackup does not record it today);
- a set needs its timeline's segments from its start LSN on; ``verify`` checks them up to the newest segment archived
  on that timeline (at least up to the set's stop LSN), and, for a timeline above 1, its ``.history`` file. Later
  timelines (after a promotion) are not followed;
- ``.gz`` copies (pg_receivewal's compression) count as the segment; ``.partial`` files never fill a gap.
"""

from __future__ import annotations

import re

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
BACKUP_LABEL_RE = re.compile(r"^([0-9A-F]{24})\.[0-9A-F]{8}\.backup$")


def valid_segment_size(size):
    """PostgreSQL's wal_segment_size rule: a power of two from 1 MiB to 1 GiB."""
    return isinstance(size, int) and not isinstance(size, bool) and 1 << 20 <= size <= 1 << 30 and size & (size - 1) == 0


def _check_size(segment_size):
    if not valid_segment_size(segment_size):
        raise PgdrError("WAL segment size %r is not a power of two from 1 MiB to 1 GiB" % (segment_size,))
    return 0x100000000 // segment_size


def parse_lsn(text):
    """``'0/3000028'`` -> 50331688."""
    found = LSN_RE.match(text or "") if isinstance(text, str) else None
    if not found:
        raise PgdrError("%r is not an LSN such as 0/3000028" % (text,))
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def segment_number(lsn, segment_size=DEFAULT_SEGMENT_SIZE):
    """The number of the segment that holds ``lsn`` (text or int)."""
    _check_size(segment_size)
    return (parse_lsn(lsn) if isinstance(lsn, str) else lsn) // segment_size


def segment_name(timeline, number, segment_size=DEFAULT_SEGMENT_SIZE):
    """The file name of segment ``number`` on ``timeline``."""
    per_log = _check_size(segment_size)
    if not isinstance(timeline, int) or not 1 <= timeline <= 0xFFFFFFFF:
        raise PgdrError("timeline %r is not a timeline number" % (timeline,))
    return "%08X%08X%08X" % (timeline, number // per_log, number % per_log)


def lsn_segment(lsn, timeline, segment_size=DEFAULT_SEGMENT_SIZE):
    """The name of the segment that holds ``lsn`` on ``timeline`` (as pg_walfile_name)."""
    return segment_name(timeline, segment_number(lsn, segment_size), segment_size)


def parse_segment(name, segment_size=DEFAULT_SEGMENT_SIZE):
    """(timeline, segment number) of a 24-hex-digit segment name."""
    per_log = _check_size(segment_size)
    if not SEGMENT_RE.match(name or ""):
        raise PgdrError("%r is not a WAL segment name" % (name,))
    seg = int(name[16:], 16)
    if seg >= per_log:
        raise PgdrError("%s is not a segment name for a segment size of %d" % (name, segment_size))
    return int(name[:8], 16), int(name[8:16], 16) * per_log + seg


def classify(name):
    """What an archived file is: ('segment', segment), ('partial', segment), ('backup', segment), ('history', name)
    or (None, name) for anything else. ``.gz`` is stripped first."""
    base = name[:-3] if name.endswith(".gz") else name
    if SEGMENT_RE.match(base):
        return "segment", base
    if base.endswith(".partial") and SEGMENT_RE.match(base[:-8]):
        return "partial", base[:-8]
    label = BACKUP_LABEL_RE.match(base)
    if label:
        return "backup", label.group(1)
    if HISTORY_RE.match(base):
        return "history", base
    return None, name


def set_segment_size(manifest_physical):
    """The segment size a set records (``physical.wal_segment_size``), else the default."""
    size = (manifest_physical or {}).get("wal_segment_size")
    return size if valid_segment_size(size) else DEFAULT_SEGMENT_SIZE


def needed_range(start_lsn, stop_lsn, timeline, segment_size=DEFAULT_SEGMENT_SIZE):
    """What a base set needs: dict first (segment of start_lsn), last (segment of stop_lsn: the least a restore
    replays to be consistent), timeline, history (the timeline's history file, or None on timeline 1)."""
    first = lsn_segment(start_lsn, timeline, segment_size)
    last = lsn_segment(stop_lsn, timeline, segment_size) if stop_lsn else first
    return dict(first=first, last=last, timeline=timeline, history="%08X.history" % timeline if timeline > 1 else None,
                segment_size=segment_size)


def _runs(numbers):
    """Consecutive runs of sorted ints as (first, last) pairs."""
    runs = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return [tuple(run) for run in runs]


def check_coverage(needed, names):
    """Whether the archived file ``names`` cover ``needed`` (from needed_range): dict ok, first, newest (newest segment
    archived on the timeline, None if none), checked (segments looked for), gaps [{first, last, count}], history_missing,
    problem (one line or None)."""
    size = needed["segment_size"]
    timeline, first = parse_segment(needed["first"], size)
    stop = parse_segment(needed["last"], size)[1]
    have = set()
    histories = set()
    for name in names:
        what, base = classify(name)
        if what == "segment":
            tli, number = parse_segment(base, size)
            if tli == timeline:
                have.add(number)
        elif what == "history":
            histories.add(base)
    newest = max(have) if have else None
    end = max(stop, newest) if newest is not None else stop
    missing = [number for number in range(first, end + 1) if number not in have]
    gaps = [dict(first=segment_name(timeline, low, size), last=segment_name(timeline, high, size), count=high - low + 1)
            for low, high in _runs(missing)]
    history_missing = bool(needed["history"]) and needed["history"] not in histories
    problem = None
    if gaps:
        gap = gaps[0]
        problem = "WAL archive misses %d segments in %d gaps (first gap: %s to %s, %d segments)" % (
            len(missing), len(gaps), gap["first"], gap["last"], gap["count"])
    elif history_missing:
        problem = "WAL archive misses %s, the history of the set's timeline %d" % (needed["history"], timeline)
    return dict(ok=problem is None, first=needed["first"], newest=segment_name(timeline, newest, size) if newest is not None else None,
                checked=end - first + 1, gaps=gaps, history_missing=history_missing, problem=problem)


def prune_boundary(kept_base):
    """The lowest first needed segment number over the kept base sets ``kept_base`` (dicts with start_lsn, timeline,
    segment_size), as (segment number, segment name, segment size); None when there is no kept base set. A kept set
    without start_lsn or timeline raises: its needs are unknown, so no WAL may go."""
    best = None
    for item in kept_base:
        if not item.get("start_lsn") or not item.get("timeline"):
            raise PgdrError("kept base set %s records no start_lsn/timeline: the WAL it needs is unknown, so no WAL is pruned"
                            % item.get("backup_id"))
        size = item.get("segment_size") or DEFAULT_SEGMENT_SIZE
        number = segment_number(item["start_lsn"], size)
        # compare by byte position: sets of different segment sizes in one archive would be odd, but stay safe
        position = number * size
        if best is None or position < best[0]:
            best = (position, number, lsn_segment(item["start_lsn"], item["timeline"], size), size)
    return None if best is None else best[1:]


def prunable(names, boundary):
    """The archived ``names`` below ``boundary`` (from prune_boundary): segments, partial segments and backup label
    files whose segment lies wholly before the boundary segment, on any timeline. History files always stay."""
    number, _name, size = boundary
    doomed = []
    for name in names:
        what, base = classify(name)
        if what not in ("segment", "partial", "backup"):
            continue
        try:
            segment = parse_segment(base, size)[1]
        except PgdrError:
            continue  # not a name for this segment size: leave what we do not understand
        if segment < number:
            doomed.append(name)
    return sorted(doomed)
