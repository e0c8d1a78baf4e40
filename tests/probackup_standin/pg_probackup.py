"""A stand-in for the pg_probackup 2.5 command line (and its openGauss fork gs_probackup), for tests.

Runs with Debian's /usr/bin/python3 and the standard library only. It does real work: a backup is a
pg_basebackup copy of the instance's cluster, stored file by file (zlib-compressed when the instance is
configured so) under $BACKUP_PATH/backups/<instance>/<ID>/ with backup.control and backup_content.control;
incremental backups store only the files whose content changed; validate recomputes the CRCs; restore
writes a data directory with the recovery settings in postgresql.auto.conf and recovery.signal, so a real
PostgreSQL starts from it. Messages, JSON shapes and exit codes follow the real outputs in ./samples
(see README.md for what is taken from them and what is only modelled).

Personality: gs_probackup when this file is called through a name starting with "gs_probackup" or when
PROBACKUP_STANDIN_PERSONALITY=gs_probackup; pg_probackup otherwise.
"""

import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

PG_VERSION = "2.5.15"
GS_VERSION = "2.4.2"
SEG_SIZE = 16 * 1024 * 1024
OK_STATUSES = ("OK", "DONE")
GS = os.path.basename(sys.argv[0]).startswith("gs_probackup") or os.environ.get("PROBACKUP_STANDIN_PERSONALITY") == "gs_probackup"
PROG = "gs_probackup" if GS else "pg_probackup"

COMMANDS = (
    "version",
    "help",
    "init",
    "add-instance",
    "del-instance",
    "set-config",
    "show-config",
    "set-backup",
    "show",
    "backup",
    "restore",
    "validate",
    "merge",
    "delete",
    "archive-push",
    "archive-get",
    "checkdb",
)
GS_MISSING_COMMANDS = ("archive-push", "archive-get", "checkdb")
FLAGS = {
    "stream",
    "temp-slot",
    "delete-expired",
    "merge-expired",
    "delete-wal",
    "no-validate",
    "dry-run",
    "progress",
    "archive",
    "no-scale-units",
    "force",
    "no-sync",
    "smooth-checkpoint",
    "skip-block-validation",
    "compress",
    "overwrite",
    "help",
    "version",
    "skip-external-dirs",
    "no-color",
}
GS_MISSING_FLAGS = {"stream", "no-color"}
VALUED = {
    "backup-path",
    "pgdata",
    "instance",
    "backup-id",
    "backup-mode",
    "threads",
    "slot",
    "note",
    "ttl",
    "expire-time",
    "format",
    "status",
    "incremental-mode",
    "recovery-target",
    "recovery-target-time",
    "recovery-target-xid",
    "recovery-target-lsn",
    "recovery-target-name",
    "recovery-target-action",
    "recovery-target-inclusive",
    "recovery-target-timeline",
    "db-include",
    "db-exclude",
    "retention-redundancy",
    "retention-window",
    "wal-depth",
    "compress-algorithm",
    "compress-level",
    "pgdatabase",
    "pghost",
    "pgport",
    "pguser",
    "archive-timeout",
    "replica-timeout",
    "remote-proto",
    "remote-host",
    "remote-port",
    "remote-user",
    "remote-path",
    "ssh-options",
    "ssh-config",
    "remote-libpath",
    "log-level-console",
    "log-level-file",
    "log-format-console",
    "log-format-file",
    "log-filename",
    "log-directory",
    "log-rotation-size",
    "log-rotation-age",
    "external-dirs",
    "wal-file-name",
    "wal-file-path",
    "rw-timeout",
    "restore-command",
    "primary-conninfo",
    "tablespace-mapping",
    "external-mapping",
}
GS_MISSING_VALUED = {
    "recovery-target",
    "recovery-target-action",
    "recovery-target-timeline",
    "db-include",
    "db-exclude",
    "log-format-console",
    "log-format-file",
    "ssh-config",
    "restore-command",
    "primary-conninfo",
}
GS_ONLY = {"rw-timeout", "remote-libpath"}
SHORT = {
    "B": "backup-path",
    "D": "pgdata",
    "i": "backup-id",
    "b": "backup-mode",
    "j": "threads",
    "S": "slot",
    "I": "incremental-mode",
    "d": "pgdatabase",
    "h": "pghost",
    "p": "pgport",
    "U": "pguser",
    "E": "external-dirs",
    "t": "rw-timeout",
    "T": "tablespace-mapping",
}
SHORT_FLAGS = {"C": "smooth-checkpoint", "V": "version"}
MULTI = {"db-include", "db-exclude", "tablespace-mapping", "external-mapping"}

# show-config: (section, key, default or None = omitted when unset, kind)
CONFIG_LAYOUT = [
    ("Backup instance information", "pgdata", None, "str"),
    ("Backup instance information", "system-identifier", None, "int"),
    ("Backup instance information", "xlog-seg-size", str(SEG_SIZE), "int"),
    ("Backup instance information", "external-dirs", None, "str"),
    ("Connection parameters", "pgdatabase", None, "str"),
    ("Connection parameters", "pghost", None, "str"),
    ("Connection parameters", "pgport", None, "str"),
    ("Connection parameters", "pguser", None, "str"),
    ("Replica parameters", "replica-timeout", "300", "seconds"),
    ("Archive parameters", "archive-timeout", "300", "seconds"),
    ("Logging parameters", "log-level-console", "INFO", "str"),
    ("Logging parameters", "log-level-file", "OFF", "str"),
    ("Logging parameters", "log-format-console", "PLAIN", "str"),
    ("Logging parameters", "log-format-file", "PLAIN", "str"),
    ("Logging parameters", "log-filename", "pg_probackup.log", "str"),
    ("Logging parameters", "log-directory", None, "str"),
    ("Logging parameters", "log-rotation-size", "0", "kb"),
    ("Logging parameters", "log-rotation-age", "0", "minutes"),
    ("Retention parameters", "retention-redundancy", "0", "int"),
    ("Retention parameters", "retention-window", "0", "int"),
    ("Retention parameters", "wal-depth", "0", "int"),
    ("Compression parameters", "compress-algorithm", "none", "str"),
    ("Compression parameters", "compress-level", "1", "int"),
    ("Remote access parameters", "remote-proto", "ssh", "str"),
    ("Remote access parameters", "remote-host", None, "str"),
    ("Remote access parameters", "remote-port", None, "str"),
    ("Remote access parameters", "remote-path", None, "str"),
    ("Remote access parameters", "remote-user", None, "str"),
    ("Remote access parameters", "ssh-options", None, "str"),
    ("Remote access parameters", "ssh-config", None, "str"),
    ("Remote access parameters", "remote-libpath", None, "str"),
]
CONFIG_KEYS = [row[1] for row in CONFIG_LAYOUT]
SETTABLE = [k for k in CONFIG_KEYS if k not in ("system-identifier", "xlog-seg-size")]
COMPRESS_ALGS = ("zlib", "pglz", "none", "lz4") if GS else ("zlib", "pglz", "none")
LOG_LEVELS = ("VERBOSE", "LOG", "INFO", "WARNING", "ERROR", "OFF")


class Fail(Exception):
    """An ERROR line and exit code 1 (messages carry the tool's own wording)."""


# ---------------------------------------------------------------- output


def log(level, msg):
    sys.stderr.write("%s: %s\n" % (level, msg))
    sys.stderr.flush()


def info(msg):
    log("INFO", msg)


def warning(msg):
    log("WARNING", msg)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def fmt_time(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%S+00")


def parse_time(text):
    text = text.strip().strip("'")
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.\d+)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$", text)
    if not m:
        raise Fail('Invalid time value "%s"' % text)
    dt = datetime.datetime.strptime(m.group(1) + " " + m.group(2), "%Y-%m-%d %H:%M:%S")
    offset = m.group(3) or "+00"
    if offset == "Z":
        offset = "+00"
    sign = 1 if offset[0] == "+" else -1
    digits = offset[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
    return (dt - datetime.timedelta(minutes=sign * minutes)).replace(tzinfo=datetime.timezone.utc)


def _strtol(text, start):
    """C strtol from ``start``: (value, end); end is ``start`` when there are no digits."""
    i = start
    while i < len(text) and text[i] in " \t\n\r\f\v":
        i += 1
    sign = 1
    if i < len(text) and text[i] in "+-":
        sign = -1 if text[i] == "-" else 1
        i += 1
    digits = i
    while i < len(text) and text[i].isdigit():
        i += 1
    if i == digits:
        return 0, start
    return sign * int(text[digits:i]), i


def _scan_fields(text):
    """sscanf(text, "%04d %02d %02d %02d %02d %02d%1s"): (count, fields), count -1 for EOF before the first."""
    fields, i = [], 0
    for width in (4, 2, 2, 2, 2, 2):
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return (len(fields) or -1), fields
        start = i
        if text[i] in "+-":
            i += 1
        while i < len(text) and i - start < width and text[i].isdigit():
            i += 1
        if not text[start:i].lstrip("+-"):
            return len(fields), fields
        fields.append(int(text[start:i]))
    rest = text[i:].strip()
    return (7 if rest else 6), fields


def tool_parse_time(value, utc_default=False):
    """pg_probackup's parse_time (src/utils/configuration.c, 2.5.15), ported: epoch seconds, or None where it fails.

    As the real one: the first five non-alphanumeric characters separate fields; then only a +/- offset
    (hh, hhmm, hh:mm[:ss]) or spaces may follow, so a fraction of a second, 'Z' or ' UTC' fail; the fields are
    read by sscanf, which stops at a 'T' after the date (the time becomes midnight); no offset: the local TZ.
    """
    tmp, fields_num, tz, tz_set, i = [], 1, 0, False, 0
    while i < len(value):
        c = value[i]
        if c.isascii() and c.isalnum():
            tmp.append(c)
            i += 1
        elif fields_num < 6:
            fields_num += 1
            tmp.append(" ")
            i += 1
        elif c in "+-" and fields_num == 6:  # the time zone is the 7th field
            hr, cp = _strtol(value, i + 1)
            if cp == i + 1:
                return None
            minutes, sec = 0, 0
            if cp < len(value) and value[cp] == ":":
                minutes, cp = _strtol(value, cp + 1)
                if cp < len(value) and value[cp] == ":":
                    sec, cp = _strtol(value, cp + 1)
            elif cp == len(value) and len(value) - i > 3:
                minutes, hr = hr % 100, hr // 100
            if not (0 <= hr <= 15 and 0 <= minutes < 60 and 0 <= sec < 60):
                return None
            tz = ((hr * 60 + minutes) * 60 + sec) * (-1 if c == "-" else 1)
            tz_set = True
            fields_num += 1
            i = cp
        elif not c.isspace():
            return None
        else:
            i += 1
    count, scanned = _scan_fields("".join(tmp))
    if count < 3 or count > 6:
        return None
    year, month, day, hour, minute, second = (scanned + [0, 0, 0])[:6]
    if year < 100:
        year += 2000
    utc = tz_set or utc_default
    saved = os.environ.get("TZ")
    if utc:
        os.environ["TZ"] = "UTC"
        time.tzset()
    try:
        result = time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
    return int(result) - (tz if utc else 0)


def base36(n):
    chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = chars[r] + out
    return out or "0"


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(n):
    return "%X/%X" % (n >> 32, n & 0xFFFFFFFF)


def seg_name(tli, lsn):
    segno = lsn // SEG_SIZE
    per = 0x100000000 // SEG_SIZE
    return "%08X%08X%08X" % (tli, segno // per, segno % per)


def seg_number(name):
    per = 0x100000000 // SEG_SIZE
    return int(name[8:16], 16) * per + int(name[16:24], 16)


def pretty_size(n):
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size * 10 or (unit == "kB" and n >= size):
            return "%d%s" % (n // size if unit != "kB" else round(n / size), unit)
    return "%dB" % n if n else "0"


# ---------------------------------------------------------------- argv


def parse_args(argv):
    if not argv:
        raise Fail('No subcommand specified. Please run with "help" argument to see possible subcommands.')
    first = argv[0]
    if first in ("--version", "-V"):
        return "version", {}
    if first in ("--help", "-?"):
        return "help", {}
    if first not in COMMANDS or (GS and first in GS_MISSING_COMMANDS):
        raise Fail('Unknown subcommand "%s"' % first)
    opts = {}
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            known_flag = name in FLAGS and not (GS and name in GS_MISSING_FLAGS)
            known_valued = name in VALUED and not (GS and name in GS_MISSING_VALUED) and not (not GS and name in GS_ONLY)
            if known_flag:
                opts[name] = True
            elif known_valued:
                if not eq:
                    if i + 1 >= len(args):
                        raise Fail("Option '%s' requires an argument. Try \"%s --help\" for more information." % (arg, PROG))
                    i += 1
                    value = args[i]
                if name in MULTI:
                    opts.setdefault(name, []).append(value)
                else:
                    opts[name] = value
            else:  # getopt's message for an unknown long option, as the real tool prints it (sample 52)
                raise Fail("Option '--%s' requires an argument. Try \"%s --help\" for more information." % (name, PROG))
        elif arg.startswith("-") and len(arg) >= 2:
            letter = arg[1]
            if letter in SHORT_FLAGS:
                opts[SHORT_FLAGS[letter]] = True
            elif letter in SHORT and not (letter == "t" and not GS):
                value = arg[2:]
                if not value:
                    if i + 1 >= len(args):
                        raise Fail("option requires an argument -- '%s'" % letter)
                    i += 1
                    value = args[i]
                name = SHORT[letter]
                if name in MULTI:
                    opts.setdefault(name, []).append(value)
                else:
                    opts[name] = value
            else:
                raise Fail("invalid option -- '%s'. Try \"%s --help\" for more information." % (letter, PROG))
        else:
            raise Fail('Invalid argument "%s"' % arg)
        i += 1
    return first, opts


# ---------------------------------------------------------------- catalog


class Catalog:
    def __init__(self, path):
        self.path = os.path.abspath(path)

    def instance_dir(self, instance):
        return os.path.join(self.path, "backups", instance)

    def wal_dir(self, instance):
        return os.path.join(self.path, "wal", instance)

    def instances(self):
        root = os.path.join(self.path, "backups")
        if not os.path.isdir(root):
            return []
        return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "pg_probackup.conf")))

    def require_instance(self, instance):
        if not os.path.isdir(os.path.join(self.path, "backups")) or not os.path.isdir(os.path.join(self.path, "wal")):
            raise Fail("Backup catalog '%s' does not exist" % self.path)
        folder = self.instance_dir(instance)
        if not os.path.isdir(folder):
            warning('Failed to access directory "%s": No such file or directory' % folder)
            raise Fail("Instance '%s' does not exist in this backup catalog" % instance)

    def read_config(self, instance):
        values = {}
        with open(os.path.join(self.instance_dir(instance), "pg_probackup.conf")) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _sep, value = line.partition("=")
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == "'":
                    value = value[1:-1]
                values[key.strip()] = value
        return values

    def write_config(self, instance, values):
        lines, section = [], None
        for sec, key, _default, _kind in CONFIG_LAYOUT:
            if key not in values:
                continue
            if sec != section:
                lines.append("# %s" % sec)
                section = sec
            lines.append("%s = %s" % (key, quote_value(values[key])))
        write_atomic(os.path.join(self.instance_dir(instance), "pg_probackup.conf"), "\n".join(lines) + "\n")

    def backups(self, instance):
        """Backups of an instance, newest first (IDs are base36 of the start time)."""
        folder = self.instance_dir(instance)
        found = []
        for name in os.listdir(folder):
            control = os.path.join(folder, name, "backup.control")
            if os.path.isfile(control):
                found.append(Backup(self, instance, name))
        found.sort(key=lambda b: int(b.id, 36), reverse=True)
        return found


def quote_value(value):
    text = str(value)
    return "'%s'" % text if (" " in text or text == "") else text


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Backup:
    CONTROL_ORDER = [
        ("#Configuration", ["backup-mode", "stream", "compress-alg", "compress-level", "from-replica"]),
        ("#Compatibility", ["block-size", "xlog-block-size", "checksum-version", "program-version", "server-version"]),
        (
            "#Result backup info",
            [
                "timelineid",
                "start-lsn",
                "stop-lsn",
                "start-time",
                "merge-time",
                "end-time",
                "recovery-xid",
                "recovery-time",
                "expire-time",
                "data-bytes",
                "wal-bytes",
                "uncompressed-bytes",
                "pgdata-bytes",
                "status",
                "parent-backup-id",
                "primary_conninfo",
                "external-dirs",
                "note",
                "content-crc",
            ],
        ),
    ]
    QUOTED = {"start-time", "merge-time", "end-time", "recovery-time", "expire-time", "parent-backup-id", "primary_conninfo", "note", "external-dirs"}

    def __init__(self, catalog, instance, backup_id, control=None):
        self.catalog, self.instance, self.id = catalog, instance, backup_id
        self.control = control if control is not None else self._read()

    @property
    def dir(self):
        return os.path.join(self.catalog.instance_dir(self.instance), self.id)

    def _read(self):
        values = {}
        with open(os.path.join(self.dir, "backup.control")) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line.startswith("#") or " = " not in line:
                    continue
                key, _sep, value = line.partition(" = ")
                if len(value) >= 2 and value[0] == value[-1] == "'":
                    value = value[1:-1]
                values[key] = value
        return values

    def control_text(self):
        out = []
        for header, keys in self.CONTROL_ORDER:
            if out:
                out.append("")
            out.append(header)
            for key in keys:
                if key in self.control:
                    value = self.control[key]
                    out.append("%s = %s" % (key, ("'%s'" % value) if key in self.QUOTED else value))
        return "\n".join(out) + "\n"

    def save(self):
        write_atomic(os.path.join(self.dir, "backup.control"), self.control_text())

    def get(self, key, default=None):
        return self.control.get(key, default)

    @property
    def status(self):
        return self.control.get("status")

    @property
    def mode(self):
        return self.control.get("backup-mode")

    @property
    def parent_id(self):
        return self.control.get("parent-backup-id")

    def set_status(self, status):
        self.control["status"] = status
        self.save()

    def time_label(self):
        return self.control.get("recovery-time") or self.control.get("start-time")

    def content(self):
        path = os.path.join(self.dir, "backup_content.control")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def json(self, listing=True):
        c = self.control
        failed = c.get("status") == "ERROR" and c.get("start-lsn", "0/0") == "0/0"
        out = {"id": self.id}
        if c.get("parent-backup-id"):
            out["parent-backup-id"] = c["parent-backup-id"]
        out["backup-mode"] = c.get("backup-mode")
        out["wal"] = "STREAM" if c.get("stream") == "true" else "ARCHIVE"
        out["compress-alg"] = c.get("compress-alg", "none")
        out["compress-level"] = int(c.get("compress-level", "1"))
        out["from-replica"] = c.get("from-replica", "false")
        out["block-size"] = int(c.get("block-size", "8192"))
        out["xlog-block-size"] = int(c.get("xlog-block-size", "8192"))
        out["checksum-version"] = int(c.get("checksum-version", "0"))
        out["program-version"] = c.get("program-version", PG_VERSION)
        out["server-version"] = c.get("server-version", "")
        out["current-tli"] = int(c.get("timelineid", "0"))
        parent = self.catalog_parent()
        # show -i reports parent-tli 0 (sample 24), the listing the parent's timeline (sample 17)
        out["parent-tli"] = int(parent.get("timelineid", "0")) if (parent is not None and listing) else 0
        out["start-lsn"] = c.get("start-lsn", "0/0")
        out["stop-lsn"] = c.get("stop-lsn", "0/0")
        out["start-time"] = c.get("start-time")
        if c.get("merge-time"):
            out["merge-time"] = c["merge-time"]
        out["end-time"] = c.get("end-time", c.get("start-time"))
        out["recovery-xid"] = int(c.get("recovery-xid", "0"))
        if not failed and c.get("recovery-time"):
            out["recovery-time"] = c["recovery-time"]
        if c.get("expire-time"):
            out["expire-time"] = c["expire-time"]
        if not failed:
            out["data-bytes"] = int(c.get("data-bytes", "0"))
            out["wal-bytes"] = int(c.get("wal-bytes", "0"))
        out["uncompressed-bytes"] = int(c.get("uncompressed-bytes", "0"))
        out["pgdata-bytes"] = int(c.get("pgdata-bytes", "0"))
        if c.get("external-dirs"):
            out["external-dirs"] = c["external-dirs"]
        if not failed and c.get("primary_conninfo"):
            out["primary_conninfo"] = c["primary_conninfo"]
        out["status"] = c.get("status")
        if c.get("note"):
            out["note"] = c["note"]
        if c.get("content-crc"):
            out["content-crc"] = int(c["content-crc"])
        return out

    def catalog_parent(self):
        pid = self.parent_id
        if not pid:
            return None
        path = os.path.join(self.catalog.instance_dir(self.instance), pid, "backup.control")
        return Backup(self.catalog, self.instance, pid).control if os.path.exists(path) else None


def chain_of(backup, by_id):
    """[FULL, ..., backup]; raises Fail when a parent is missing."""
    chain = [backup]
    while chain[-1].parent_id:
        parent = by_id.get(chain[-1].parent_id)
        if parent is None:
            raise Fail("Failed to find parent backup %s for %s" % (chain[-1].parent_id, chain[-1].id))
        chain.append(parent)
    return list(reversed(chain))


def descendants(backup, backups):
    out, frontier = [], {backup.id}
    changed = True
    while changed:
        changed = False
        for b in backups:
            if b.parent_id in frontier and b.id not in frontier:
                frontier.add(b.id)
                out.append(b)
                changed = True
    return out


# ---------------------------------------------------------------- file helpers


def read_stored(backup, entry):
    with open(os.path.join(backup.dir, "database", entry["path"]), "rb") as f:
        data = f.read()
    return data


def decode(entry, stored):
    alg = entry.get("compress_alg", "none")
    if alg in ("zlib", "pglz", "lz4"):  # the stand-in compresses every algorithm with zlib (modelled)
        return zlib.decompress(stored)
    return stored


def materialize(chain):
    """path -> (entry of the newest backup, backup that stores its bytes) for the last backup of ``chain``."""
    target = chain[-1]
    stored_in = {}
    for b in chain:
        for entry in b.content():
            if entry.get("kind") == "file" and entry.get("exists_in_prev") != "1":
                stored_in[entry["path"]] = (entry, b)
    result = {}
    for entry in target.content():
        if entry.get("kind") == "dir":
            result[entry["path"]] = (entry, None)
        else:
            stored_entry, owner = stored_in[entry["path"]]
            result[entry["path"]] = (stored_entry, owner)
    return result


def check_files(backup, quiet=False):
    """Recompute the CRC of every file this backup stores; returns the first problem or None."""
    for entry in backup.content():
        if entry.get("kind") != "file" or entry.get("exists_in_prev") == "1":
            continue
        path = os.path.join(backup.dir, "database", entry["path"])
        try:
            with open(path, "rb") as f:
                stored = f.read()
        except OSError:
            return 'Backup file "%s" is not found' % path
        if entry.get("compress_alg", "none") != "none":
            try:
                zlib.decompress(stored)
            except zlib.error:
                return 'An error occured during decompressing block 1 of file "%s": data error' % path
        crc = zlib.crc32(stored)
        if crc != int(entry["crc"]):
            return 'Invalid CRC of backup file "%s" : %X. Expected %X' % (path, crc, int(entry["crc"]))
    return None


def content_crc(backup):
    path = os.path.join(backup.dir, "backup_content.control")
    with open(path, "rb") as f:
        return zlib.crc32(f.read())


# ---------------------------------------------------------------- server helpers


def bin_dir_for(pgdata):
    try:
        with open(os.path.join(pgdata, "PG_VERSION")) as f:
            major = f.read().strip()
    except OSError:
        major = None
    if major:
        folder = "/usr/lib/postgresql/%s/bin" % major
        if os.path.isdir(folder):
            return folder
    found = shutil.which("pg_basebackup")
    return os.path.dirname(found) if found else "/usr/bin"


def controldata(pgdata):
    done = subprocess.run(
        [os.path.join(bin_dir_for(pgdata), "pg_controldata"), "-D", pgdata], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"), check=False
    )
    if done.returncode != 0:
        raise Fail("Could not read pg_control of %s: %s" % (pgdata, done.stderr.strip()))
    out = {}
    for line in done.stdout.splitlines():
        key, _sep, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def conn_env(config, opts):
    env = dict(os.environ)
    for opt, var in (("pghost", "PGHOST"), ("pgport", "PGPORT"), ("pguser", "PGUSER"), ("pgdatabase", "PGDATABASE")):
        value = opts.get(opt) or config.get(opt)
        if value:
            env[var] = value
    return env


def psql(bin_dir, env, sql):
    return subprocess.run(
        [os.path.join(bin_dir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# ---------------------------------------------------------------- commands


def cmd_version(_cat, _opts):
    if GS:
        print("gs_probackup (openGauss 5.0.0 stand-in) %s" % GS_VERSION)
    else:
        print("pg_probackup %s (PostgreSQL stand-in)" % PG_VERSION)
    return 0


def cmd_init(cat, _opts):
    if os.path.isdir(cat.path) and os.listdir(cat.path):
        raise Fail("The backup catalog already exists and is not empty")
    os.makedirs(os.path.join(cat.path, "backups"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(cat.path, "wal"), mode=0o700, exist_ok=True)
    os.chmod(cat.path, 0o700)
    info("Backup catalog '%s' successfully initialized" % cat.path)
    return 0


def check_config_values(opts):
    if "compress-algorithm" in opts and opts["compress-algorithm"].lower() not in COMPRESS_ALGS:
        raise Fail('Invalid compress algorithm value "%s"' % opts["compress-algorithm"])
    for key in ("retention-redundancy", "retention-window", "wal-depth", "compress-level"):
        if key in opts and not re.match(r"^\d+$", opts[key]):
            raise Fail('Option %s: invalid value "%s"' % (key, opts[key]))
    if "compress-level" in opts and not 0 <= int(opts["compress-level"]) <= 9:
        raise Fail("--compress-level value must be in the range from 0 to 9")
    for key in ("log-level-console", "log-level-file"):
        if key in opts and opts[key].upper() not in LOG_LEVELS:
            raise Fail('Invalid %s value "%s"' % (key, opts[key]))
    for key in ("archive-timeout", "replica-timeout"):
        if key in opts:
            opts[key] = str(parse_interval(opts[key], "s"))


def parse_interval(text, default_unit):
    m = re.match(r"^\s*(\d+)\s*(d|h|min|s|ms)?\s*$", str(text))
    if not m:
        raise Fail('Invalid interval value "%s"' % text)
    factor = {"d": 86400, "h": 3600, "min": 60, "s": 1, "ms": 0.001}[m.group(2) or default_unit]
    return int(int(m.group(1)) * factor)


def cmd_add_instance(cat, opts):
    instance = require(opts, "instance", "--instance")
    pgdata = require(opts, "pgdata", "-D, --pgdata")
    if not os.path.isdir(os.path.join(cat.path, "backups")):
        raise Fail("Backup catalog '%s' does not exist" % cat.path)
    folder = cat.instance_dir(instance)
    if os.path.exists(folder):
        raise Fail("Instance '%s' backup directory already exists: '%s'" % (instance, folder))
    if os.path.exists(cat.wal_dir(instance)):
        raise Fail("Instance '%s' WAL archive directory already exists: '%s'" % (instance, cat.wal_dir(instance)))
    check_config_values(opts)
    control = controldata(pgdata)
    values = {
        "pgdata": os.path.abspath(pgdata),
        "system-identifier": control.get("Database system identifier", "0"),
        "xlog-seg-size": control.get("Bytes per WAL segment", str(SEG_SIZE)),
    }
    for key in SETTABLE:
        if key in opts and key != "pgdata":
            values[key] = opts[key]
    os.makedirs(folder, mode=0o700)
    os.makedirs(cat.wal_dir(instance), mode=0o700)
    cat.write_config(instance, values)
    info("Instance '%s' successfully initialized" % instance)
    return 0


def cmd_del_instance(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    shutil.rmtree(cat.instance_dir(instance))
    shutil.rmtree(cat.wal_dir(instance), ignore_errors=True)
    info("Instance '%s' successfully deleted" % instance)
    return 0


def cmd_set_config(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    check_config_values(opts)
    values = cat.read_config(instance)
    for key in SETTABLE:
        if key in opts:
            values[key] = os.path.abspath(opts[key]) if key == "pgdata" else opts[key]
    cat.write_config(instance, values)
    return 0


def scale(value, kind):
    n = int(value)
    units = {
        "seconds": [("d", 86400), ("h", 3600), ("min", 60), ("s", 1)],
        "minutes": [("d", 1440), ("h", 60), ("min", 1)],
        "kb": [("TB", 1 << 30), ("GB", 1 << 20), ("MB", 1 << 10), ("kB", 1)],
    }[kind]
    for unit, size in units:
        if n % size == 0:
            return "%d%s" % (n // size, unit)
    return str(n)


def cmd_show_config(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    values = cat.read_config(instance)
    fmt = opts.get("format", "plain")
    no_scale = opts.get("no-scale-units")
    rows = []
    for section, key, default, kind in CONFIG_LAYOUT:
        value = values.get(key, default)
        if value is None:
            continue
        rows.append((section, key, value, kind))
    if fmt == "json":
        obj = {}
        for _section, key, value, kind in rows:
            if no_scale and kind != "str" and re.match(r"^-?\d+$", str(value)):
                obj[key] = int(value)
            elif kind in ("seconds", "minutes", "kb"):
                obj[key] = scale(value, kind)
            else:
                obj[key] = str(value)
        sys.stdout.write(json.dumps(obj, indent=4) + "\n")
    else:
        section = None
        for sec, key, value, kind in rows:
            if sec != section:
                sys.stdout.write("# %s\n" % sec)
                section = sec
            shown = value if (no_scale or kind not in ("seconds", "minutes", "kb")) else scale(value, kind)
            sys.stdout.write("%s = %s\n" % (key, shown))
    return 0


def new_backup_id(cat, instance):
    while True:
        backup_id = base36(int(time.time()))
        if not os.path.exists(os.path.join(cat.instance_dir(instance), backup_id)):
            return backup_id
        time.sleep(0.2)


def find_parent(backups, tli=None):
    """The newest valid backup whose whole chain is valid (what an incremental builds on)."""
    by_id = {b.id: b for b in backups}
    for b in backups:
        if b.status not in OK_STATUSES:
            continue
        try:
            chain = chain_of(b, by_id)
        except Fail:
            continue
        if all(x.status in OK_STATUSES for x in chain):
            return b
    return None


def archived_segments(cat, instance):
    folder = cat.wal_dir(instance)
    segs = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            base = name[:-3] if name.endswith(".gz") else name
            if re.match(r"^[0-9A-F]{24}$", base):
                segs[base] = os.path.join(folder, name)
    return segs


def cmd_backup(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    mode = require(opts, "backup-mode", "-b, --backup-mode").upper()
    modes = ("FULL", "PTRACK") if GS else ("FULL", "PAGE", "DELTA", "PTRACK")
    if mode not in modes:
        raise Fail('Invalid backup-mode "%s"' % opts["backup-mode"])
    config = cat.read_config(instance)
    if config.get("remote-host") or opts.get("remote-host"):
        raise Fail("remote backups are not modelled by the pg_probackup stand-in")
    for key in ("compress-algorithm", "compress-level"):
        if key in opts:
            check_config_values({key: opts[key]})
    if opts.get("compress"):
        opts.setdefault("compress-algorithm", "zlib")
    alg = (opts.get("compress-algorithm") or config.get("compress-algorithm") or "none").lower()
    level = int(opts.get("compress-level") or config.get("compress-level") or 1)
    stream = bool(opts.get("stream")) or GS  # gs_probackup always streams the WAL it needs
    pgdata = opts.get("pgdata") or config["pgdata"]
    backups = cat.backups(instance)
    parent = None
    if mode != "FULL":
        parent = find_parent(backups)
        if parent is None:
            raise Fail("Valid full backup on current timeline 1 is not found. Create new FULL backup before an incremental one.")
    backup_id = new_backup_id(cat, instance)
    started = now_utc()
    info(
        "Backup start, %s version: %s, instance: %s, backup ID: %s, backup mode: %s, wal mode: %s, remote: false, "
        "compress-algorithm: %s, compress-level: %d"
        % (PROG, GS_VERSION if GS else PG_VERSION, instance, backup_id, mode, "STREAM" if stream else "ARCHIVE", alg, level)
    )
    backup = Backup(
        cat,
        instance,
        backup_id,
        control={
            "backup-mode": mode,
            "stream": "true" if stream else "false",
            "compress-alg": alg,
            "compress-level": str(level),
            "from-replica": "false",
            "block-size": "8192",
            "xlog-block-size": "8192",
            "checksum-version": "0",
            "program-version": GS_VERSION if GS else PG_VERSION,
            "server-version": "",
            "timelineid": "0",
            "start-lsn": "0/0",
            "stop-lsn": "0/0",
            "start-time": fmt_time(started),
            "end-time": fmt_time(started),
            "recovery-xid": "0",
            "data-bytes": "0",
            "wal-bytes": "0",
            "uncompressed-bytes": "0",
            "pgdata-bytes": "0",
            "status": "RUNNING",
        },
    )
    if parent is not None:
        backup.control["parent-backup-id"] = parent.id
    if opts.get("note"):
        backup.control["note"] = opts["note"]
    os.makedirs(os.path.join(backup.dir, "database"), mode=0o700)
    backup.save()
    try:
        take_backup(cat, instance, backup, backups, parent, opts, config, pgdata, stream, alg, level, mode)
    except Fail as exc:  # after "Backup start" a failure leaves the backup in the catalog with status ERROR (sample 53)
        log("ERROR", str(exc))
        if backup.status == "RUNNING":
            warning("Backup %s is running, setting its status to ERROR" % backup_id)
            backup.control["end-time"] = fmt_time(now_utc())
            backup.control["status"] = "ERROR"
            backup.save()
        shutil.rmtree(os.path.join(backup.dir, "database.tmp"), ignore_errors=True)
        return 1
    info("Backup %s completed" % backup_id)
    if opts.get("delete-expired") or opts.get("merge-expired") or opts.get("delete-wal"):
        retention(cat, instance, opts, config)
    return 0


def take_backup(cat, instance, backup, backups, parent, opts, config, pgdata, stream, alg, level, mode):
    env = conn_env(config, opts)
    bin_dir = bin_dir_for(pgdata)
    control = controldata(pgdata)
    if control.get("Data page checksum version", "0") != "0":
        info("This PostgreSQL instance was initialized with data block checksums. Data block corruption will be detected")
    if control.get("Database system identifier") != config.get("system-identifier"):
        raise Fail(
            "Backup data directory was initialized for system id %s, but connected instance system id is %s"
            % (config.get("system-identifier"), control.get("Database system identifier"))
        )
    if backup.get("note"):
        info("Adding note to backup %s: '%s'" % (backup.id, backup.get("note")))
    if mode == "PTRACK":
        probe = psql(bin_dir, env, "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'ptrack'")
        if probe.returncode == 0 and probe.stdout.strip() == "0":
            raise Fail("This PostgreSQL instance does not support ptrack")
    info("Database backup start")
    info("wait for pg_backup_start()")
    if parent is not None:
        info("Parent backup: %s" % parent.id)
    tmp = os.path.join(backup.dir, "database.tmp")
    argv = [
        os.path.join(bin_dir, "pg_basebackup"),
        "-D",
        tmp,
        "-Fp",
        "-c",
        "fast",
        "-N",
        "-v",
        "-l",
        "%s with %s" % (backup.get("start-time"), PROG),
        "-X",
        "stream" if stream else "none",
    ]
    if stream and opts.get("slot"):
        argv += ["-S", opts["slot"]]
        if opts.get("temp-slot"):
            argv = argv[:-2] + ["-C", "-S", opts["slot"]]  # created for this backup and dropped after it
    done = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        line = next((x for x in done.stderr.splitlines() if "error:" in x), done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
        msg = line.split("error:", 1)[-1].strip()
        if "connection to server" in msg:
            msg = "could not connect to database %s: %s" % (env.get("PGDATABASE", "postgres"), msg)
        log("ERROR", msg)
        warning("Backup %s is running, setting its status to ERROR" % backup.id)
        backup.control["end-time"] = fmt_time(now_utc())
        backup.control["status"] = "ERROR"
        backup.save()
        shutil.rmtree(tmp, ignore_errors=True)
        if opts.get("temp-slot") and opts.get("slot"):
            psql(bin_dir, env, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s'" % opts["slot"].replace("'", "''"))
        sys.exit(1)
    if opts.get("temp-slot") and opts.get("slot"):
        psql(bin_dir, env, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '%s'" % opts["slot"].replace("'", "''"))
    with open(os.path.join(tmp, "backup_label")) as f:
        label = f.read()
    start_lsn = re.search(r"START WAL LOCATION: (\S+)", label).group(1)
    tli = int(re.search(r"START TIMELINE: (\d+)", label).group(1))
    end = re.search(r"write-ahead log end point: (\S+)", done.stderr)
    stop_lsn = end.group(1) if end else start_lsn
    wal_where = (
        "%s/database/pg_wal/%s to be streamed" % (backup.dir, seg_name(tli, lsn_int(start_lsn)))
        if stream
        else "%s/%s to be archived" % (cat.wal_dir(instance), seg_name(tli, lsn_int(start_lsn)))
    )
    info("Wait for WAL segment %s" % wal_where)
    total = 0
    for root, _dirs, files in os.walk(tmp):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    info("PGDATA size: %s" % pretty_size(total))
    info("Current Start LSN: %s, TLI: %d" % (start_lsn, tli))
    if parent is not None:
        info("Parent Start LSN: %s, TLI: %s" % (parent.get("start-lsn"), parent.get("timelineid")))
    if mode == "PAGE":
        info("Extracting pagemap of changed blocks")
        need_archive(cat, instance, tli, lsn_int(parent.get("start-lsn")), lsn_int(start_lsn), int(config.get("archive-timeout", "300")))
        info("Pagemap successfully extracted, time elapsed: 0 sec")
    if not stream:  # ARCHIVE mode: every segment of the backup must be in the archive
        need_archive(cat, instance, tli, lsn_int(start_lsn), max(lsn_int(stop_lsn) - 1, lsn_int(start_lsn)), int(config.get("archive-timeout", "300")))
    info("Start transferring data files")
    previous = {}
    if parent is not None:
        by_id = {b.id: b for b in backups}
        for path, (entry, _owner) in materialize(chain_of(parent, by_id)).items():
            if entry.get("kind") == "file":
                previous[path] = entry
    dbmap = psql(bin_dir, env, "SELECT oid, datname FROM pg_catalog.pg_database")
    entries, data_bytes, uncompressed, wal_bytes = [], 0, 0, 0
    for root, dirs, files in os.walk(tmp):
        dirs.sort()
        rel_root = os.path.relpath(root, tmp)
        if rel_root != ".":
            entries.append({"path": rel_root, "kind": "dir", "mode": str(os.stat(root).st_mode)})
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.normpath(os.path.join(rel_root, name))
            with open(full, "rb") as f:
                data = f.read()
            full_crc = zlib.crc32(data)
            entry = {
                "path": rel,
                "kind": "file",
                "size": str(len(data)),
                "mode": str(os.stat(full).st_mode),
                "is_datafile": "1" if re.match(r"^(base/\d+|global)/\d+(\.\d+|_\w+)?$", rel) else "0",
                "full_size": str(len(data)),
                "full_crc": str(full_crc),
                "compress_alg": "none",
                "external_dir_num": "0",
            }
            m = re.match(r"^base/(\d+)/", rel)
            entry["dbOid"] = m.group(1) if m else "0"
            if rel.startswith("pg_wal/"):
                wal_bytes += len(data)
            prev = previous.get(rel)
            if prev is not None and prev.get("full_crc") == entry["full_crc"] and prev.get("full_size") == entry["full_size"]:
                entry["exists_in_prev"] = "1"
                entry["size"] = "-1"
                entry["crc"] = prev.get("crc", "0")
                entry["compress_alg"] = prev.get("compress_alg", "none")
            else:
                stored = data
                if alg != "none" and entry["is_datafile"] == "1" and data:
                    stored = zlib.compress(data, max(level, 1))
                    entry["compress_alg"] = alg
                dest = os.path.join(backup.dir, "database", rel)
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(stored)
                os.chmod(dest, 0o600)
                entry["size"] = str(len(stored))
                entry["crc"] = str(zlib.crc32(stored))
                data_bytes += len(stored)
                uncompressed += len(data)
            entries.append(entry)
    with open(os.path.join(backup.dir, "backup_content.control"), "w") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
    if dbmap.returncode == 0:
        with open(os.path.join(backup.dir, "database_map"), "w") as f:
            f.write(dbmap.stdout)
    shutil.rmtree(tmp)
    info("Data files are transferred, time elapsed: %d" % (now_utc() - started_of(backup)).seconds)
    info("wait for pg_stop_backup()")
    info("pg_stop backup() successfully executed")
    info("stop_lsn: %s" % stop_lsn)
    info("Getting the Recovery Time from WAL")
    if not stream:
        wal_bytes = SEG_SIZE * (seg_number(seg_name(tli, max(lsn_int(stop_lsn) - 1, lsn_int(start_lsn)))) - seg_number(seg_name(tli, lsn_int(start_lsn))) + 1)
    xid = psql(bin_dir, env, "SELECT txid_snapshot_xmax(txid_current_snapshot()) - 1")
    recovery = now_utc()
    settings = {"user": env.get("PGUSER", os.environ.get("USER", "postgres")), "host": env.get("PGHOST", "localhost"), "port": env.get("PGPORT", "5432")}
    backup.control.update(
        {
            "checksum-version": control.get("Data page checksum version", "0"),
            "server-version": open(os.path.join(pgdata, "PG_VERSION")).read().strip(),
            "timelineid": str(tli),
            "start-lsn": start_lsn,
            "stop-lsn": stop_lsn,
            "end-time": fmt_time(now_utc()),
            "recovery-xid": xid.stdout.strip() if xid.returncode == 0 and xid.stdout.strip().isdigit() else "0",
            "recovery-time": fmt_time(recovery),
            "data-bytes": str(data_bytes),
            "wal-bytes": str(wal_bytes),
            "uncompressed-bytes": str(uncompressed),
            "pgdata-bytes": str(total),
            "primary_conninfo": " ".join("%s=%s" % kv for kv in settings.items()),
        }
    )
    if opts.get("ttl") or opts.get("expire-time"):
        pin(backup, opts, quiet=True)
    info("Syncing backup files to disk")
    info("Backup files are synced, time elapsed: 0")
    backup.control["content-crc"] = str(content_crc(backup))
    if opts.get("no-validate"):
        backup.control["status"] = "DONE"
        backup.save()
        return
    info("Validating backup %s" % backup.id)
    problem = check_files(backup)
    if problem:
        warning(problem)
        backup.control["status"] = "CORRUPT"
        backup.save()
        raise Fail("Data files validation failed for backup %s" % backup.id)
    info("Backup %s data files are valid" % backup.id)
    backup.control["status"] = "OK"
    backup.save()
    info("Backup %s resident size: %s" % (backup.id, pretty_size(data_bytes + (wal_bytes if stream else 0))))


def started_of(backup):
    return parse_time(backup.get("start-time"))


def need_archive(cat, instance, tli, from_lsn, to_lsn, timeout):
    """Every segment from ``from_lsn`` to ``to_lsn`` must be in the archive (waiting up to ``timeout`` seconds)."""
    first, last = seg_number(seg_name(tli, from_lsn)), seg_number(seg_name(tli, to_lsn))
    deadline = time.time() + timeout
    while True:
        have = {seg_number(n) for n in archived_segments(cat, instance) if int(n[:8], 16) == tli}
        missing = [s for s in range(first, last + 1) if s not in have]
        if not missing:
            return
        if time.time() >= deadline:
            per = 0x100000000 // SEG_SIZE
            name = "%08X%08X%08X" % (tli, missing[0] // per, missing[0] % per)
            raise Fail("WAL segment %s could not be archived in %d seconds" % (os.path.join(cat.wal_dir(instance), name), timeout))
        time.sleep(0.5)


# ---------------------------------------------------------------- show


def cmd_show(cat, opts):
    fmt = opts.get("format", "plain")
    if fmt not in ("plain", "json"):
        raise Fail('Invalid show format "%s"' % fmt)
    instances = [opts["instance"]] if opts.get("instance") else cat.instances()
    if not os.path.isdir(os.path.join(cat.path, "backups")):
        raise Fail('Cannot open backup catalog directory "%s": No such file or directory' % os.path.join(cat.path, "backups"))
    for instance in instances:
        cat.require_instance(instance)
    if opts.get("archive"):
        return show_archive(cat, instances, fmt)
    backup_id = opts.get("backup-id")
    if backup_id and not opts.get("instance"):
        raise Fail("You must specify parameter (--instance) for the backup ID")
    if fmt == "json":
        out = []
        for instance in instances:
            backups = cat.backups(instance)
            if backup_id:
                backups = [b for b in backups if b.id == backup_id]
            out.append({"instance": instance, "backups": [b.json(listing=not backup_id) for b in backups]})
        text = json.dumps(out, indent=4)
        text = text.replace('"backups": []', '"backups": [\n        ]')
        sys.stdout.write(text + "\n")
        return 0
    if backup_id:
        match = [b for b in cat.backups(instances[0]) if b.id == backup_id]
        if not match:
            info('Requested backup "%s" is not found.' % backup_id)
            return 0
        sys.stdout.write(match[0].control_text())
        return 0
    for instance in instances:
        if not opts.get("instance"):
            sys.stdout.write("\nBACKUP INSTANCE '%s'\n" % instance)
        sys.stdout.write(plain_table(instance, cat.backups(instance)))
    return 0


def plain_table(instance, backups):
    header = ["Instance", "Version", "ID", "Recovery Time", "Mode", "WAL Mode", "TLI", "Time", "Data", "WAL", "Zratio", "Start LSN", "Stop LSN", "Status"]
    right = {"Time", "Data", "WAL", "Zratio"}
    rows = []
    for b in backups:
        j = b.json()
        failed = "recovery-time" not in j
        seconds = int((parse_time(j["end-time"]) - parse_time(j["start-time"])).total_seconds())
        ratio = (j["uncompressed-bytes"] / j["data-bytes"]) if j.get("data-bytes") else 1.0
        rows.append(
            [
                instance,
                "----" if failed else j["server-version"],
                j["id"],
                "----" if failed else j["recovery-time"],
                j["backup-mode"],
                j["wal"],
                "%d/%d" % (j["current-tli"], j["parent-tli"]),
                "%ds" % seconds if seconds else "0",
                pretty_size(j.get("data-bytes", 0)),
                pretty_size(j.get("wal-bytes", 0)),
                "%.2f" % ratio,
                j["start-lsn"],
                j["stop-lsn"],
                j["status"],
            ]
        )
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells):
        parts = [(c.rjust(w) if header[i] in right else c.ljust(w)) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return " " + "  ".join(parts) + " "

    head = line(header)
    out = ["=" * len(head), head, "=" * len(head)] + [line(r) for r in rows]
    return "\n".join(out) + "\n"


def timelines(cat, instance):
    segs = archived_segments(cat, instance)
    backups = cat.backups(instance)
    by_tli = {}
    for name, path in segs.items():
        by_tli.setdefault(int(name[:8], 16), []).append((seg_number(name), name, path))
    for b in backups:
        tli = int(b.get("timelineid", "0"))
        if tli:
            by_tli.setdefault(tli, [])
    out = []
    for tli in sorted(by_tli, reverse=True):
        items = sorted(by_tli[tli])
        numbers = [n for n, _name, _path in items]
        lost = []
        per = 0x100000000 // SEG_SIZE
        for a, b in zip(numbers, numbers[1:], strict=False):
            if b - a > 1:
                lost.append(
                    {"begin-segno": "%08X%08X%08X" % (tli, (a + 1) // per, (a + 1) % per), "end-segno": "%08X%08X%08X" % (tli, (b - 1) // per, (b - 1) % per)}
                )
        size = sum(os.path.getsize(path) for _n, _name, path in items)
        tli_backups = [b for b in backups if int(b.get("timelineid", "0")) == tli]
        out.append(
            {
                "tli": tli,
                "parent-tli": 0,
                "switchpoint": "0/0",
                "min-segno": items[0][1] if items else "0",
                "max-segno": items[-1][1] if items else "0",
                "n-segments": len(items),
                "size": size,
                "zratio": round((len(items) * SEG_SIZE) / size, 2) if size else 0,
                "closest-backup-id": "",
                "status": "DEGRADED" if lost else "OK",
                "lost-segments": lost,
                "backups": [b.json() for b in tli_backups],
            }
        )
    return out


def show_archive(cat, instances, fmt):
    if fmt == "json":
        out = [{"instance": i, "timelines": timelines(cat, i)} for i in instances]
        sys.stdout.write(json.dumps(out, indent=4) + "\n")
        return 0
    for instance in instances:
        sys.stdout.write("\nARCHIVE INSTANCE '%s'\n" % instance)
        for t in timelines(cat, instance):
            sys.stdout.write(
                " %d  %d  %s  %s  %s  %d  %s  %s  %d  %s\n"
                % (
                    t["tli"],
                    t["parent-tli"],
                    t["switchpoint"],
                    t["min-segno"],
                    t["max-segno"],
                    t["n-segments"],
                    pretty_size(t["size"]),
                    t["zratio"],
                    len(t["backups"]),
                    t["status"],
                )
            )
    return 0


# ---------------------------------------------------------------- validate


def validate_backup(backup, wal_check=True):
    info("Validating backup %s" % backup.id)
    problem = check_files(backup)
    if problem:
        warning(problem)
        warning("Backup %s data files are corrupted" % backup.id)
        backup.set_status("CORRUPT")
        return False
    info("Backup %s data files are valid" % backup.id)
    if wal_check:
        info("Backup %s WAL segments are valid" % backup.id)
    if backup.status in OK_STATUSES or backup.status == "CORRUPT":
        backup.set_status("OK")
    return True


def validate_instance(cat, instance):
    info("Validate backups of the instance '%s'" % instance)
    backups = cat.backups(instance)
    by_id = {b.id: b for b in backups}
    ok = True
    for b in backups:
        if b.status in ("ERROR", "RUNNING", "ORPHAN", "MERGING", "DELETING"):
            if b.status != "ORPHAN":
                ok = False
            continue
        if not validate_backup(b):
            ok = False
            for child in descendants(b, backups):
                warning("Backup %s is orphaned because his parent %s has status: %s" % (child.id, b.id, b.status))
                child.set_status("ORPHAN")
    for b in backups:  # a backup whose parent is gone or invalid is an orphan
        try:
            chain = chain_of(b, by_id)
        except Fail:
            chain = None
        if b.status in OK_STATUSES and (chain is None or any(x.status not in OK_STATUSES for x in chain)):
            b.set_status("ORPHAN")
        if b.status == "ORPHAN":
            ok = False
    return ok


def target_of(opts):
    # the checks and wording of parseRecoveryTargetOptions (src/restore.c, 2.5.15), in its order
    if opts.get("recovery-target-time") is not None and tool_parse_time(opts["recovery-target-time"]) is None:
        raise Fail("Invalid value for '--recovery-target-time' option '%s'" % opts["recovery-target-time"])
    rt = {}
    for key in ("recovery-target", "recovery-target-time", "recovery-target-xid", "recovery-target-lsn", "recovery-target-name"):
        if opts.get(key):
            rt[key] = opts[key]
    if "recovery-target" in rt and rt["recovery-target"] not in ("immediate", "latest"):
        raise Fail("Invalid value for '--recovery-target' option '%s'" % rt["recovery-target"])
    if len(rt) > 1:
        raise Fail(
            "At most one of '--recovery-target', '--recovery-target-name', '--recovery-target-time', "
            "'--recovery-target-xid' or '--recovery-target-lsn' options can be specified"
        )
    inclusive = str(opts.get("recovery-target-inclusive") or "").lower() in ("true", "on", "yes", "1", "t", "y")
    if inclusive and not any(k in rt for k in ("recovery-target-xid", "recovery-target-time", "recovery-target-lsn")):
        raise Fail(
            "The '--recovery-target-inclusive' option can be applied only when either of '--recovery-target-time', "
            "'--recovery-target-xid' or '--recovery-target-lsn' options is specified"
        )
    if opts.get("recovery-target-action") and not rt:
        raise Fail(
            "The '--recovery-target-action' option can be applied only when either of '--recovery-target', "
            "'--recovery-target-time', '--recovery-target-xid', '--recovery-target-lsn' or '--recovery-target-name' "
            "options is specified"
        )
    return rt


def satisfies(backup, rt):
    if "recovery-target-time" in rt:  # the time as the tool reads it (a 'T' form reads as midnight)
        return backup.get("recovery-time") and parse_time(backup.get("recovery-time")).timestamp() <= tool_parse_time(rt["recovery-target-time"])
    if "recovery-target-xid" in rt:
        return int(backup.get("recovery-xid", "0")) <= int(rt["recovery-target-xid"])
    if "recovery-target-lsn" in rt:
        return lsn_int(backup.get("stop-lsn")) <= lsn_int(rt["recovery-target-lsn"])
    return True


def choose_backup(cat, instance, opts, rt):
    backups = cat.backups(instance)
    by_id = {b.id: b for b in backups}
    wanted = opts.get("backup-id")
    if wanted:
        if wanted not in by_id:
            raise Fail("Requested backup %s is not found." % wanted)
        b = by_id[wanted]
        if b.status not in OK_STATUSES and b.status != "CORRUPT":
            raise Fail("Backup %s has status: %s" % (b.id, b.status))
        return b, by_id
    for b in backups:
        if b.status not in OK_STATUSES:
            warning("Skipping backup %s, because it has non-valid status: %s" % (b.id, b.status))
            continue
        if satisfies(b, rt):
            return b, by_id
    raise Fail("Backup satisfying target options is not found.")


def validate_chain(target, by_id, announce_parents=True):
    chain = chain_of(target, by_id)
    if target.status == "CORRUPT":
        warning("Backup %s has status: CORRUPT" % target.id)
        info("Revalidating backup %s" % target.id)
        problem = check_files(target)
        if problem:
            warning(problem)
            warning("Backup %s data files are corrupted" % target.id)
            for child in descendants(target, list(by_id.values())):
                warning("Backup %s has parent %s with status: CORRUPT" % (child.id, target.id))
            raise Fail("Backup %s is corrupt." % target.id)
        target.set_status("OK")
    if len(chain) > 1 and announce_parents:
        info("Validating parents for backup %s" % target.id)
    for b in chain:
        if not validate_backup(b, wal_check=(b is target)):
            for child in descendants(b, list(by_id.values())):
                warning("Backup %s is orphaned because his parent %s has status: CORRUPT" % (child.id, b.id))
                child.set_status("ORPHAN")
            raise Fail("Backup %s is corrupt." % target.id)
    info("Backup %s is valid." % target.id)
    return chain


def cmd_validate(cat, opts):
    instance = opts.get("instance")
    if instance:  # the real tool reads the instance before the recovery target options
        cat.require_instance(instance)
    rt = target_of(opts)
    if not instance:
        if opts.get("backup-id") or rt:
            raise Fail("You must specify parameter (--instance) for the backup ID")
        ok = True
        for name in cat.instances():
            ok = validate_instance(cat, name) and ok
        if not ok:
            warning("Some backups are not valid")
            return 1
        info("All backups are valid")
        return 0
    cat.require_instance(instance)
    if not opts.get("backup-id") and not rt:
        if validate_instance(cat, instance):
            info("All backups are valid")
            return 0
        warning("Some backups are not valid")
        return 1
    target, by_id = choose_backup(cat, instance, opts, rt)
    validate_chain(target, by_id)
    info("Validate of backup %s completed." % target.id)
    return 0


# ---------------------------------------------------------------- merge / delete / retention / pin


def cmd_merge(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    wanted = require(opts, "backup-id", "-i, --backup-id")
    backups = cat.backups(instance)
    by_id = {b.id: b for b in backups}
    if wanted not in by_id:
        raise Fail("Requested backup %s is not found." % wanted)
    target = by_id[wanted]
    if target.mode == "FULL":
        info("Backup %s is full backup, nothing to merge" % wanted)
        return 0
    info("Merge started")
    info("Merging backup %s with parent chain" % wanted)
    info("Validate parent chain for backup %s" % wanted)
    chain = chain_of(target, by_id)
    for b in chain:
        if b.status not in OK_STATUSES:
            raise Fail("Backup %s has status %s, merge is aborted" % (b.id, b.status))
        if not validate_backup(b, wal_check=False):
            raise Fail("Backup %s is corrupt, merge is aborted" % b.id)
    full = chain[0]
    info("Start merging backup files")
    files = materialize(chain)
    staging = os.path.join(full.dir, "database.merge")
    shutil.rmtree(staging, ignore_errors=True)
    entries, data_bytes, uncompressed = [], 0, 0
    for path, (entry, owner) in sorted(files.items()):
        if entry.get("kind") == "dir":
            entries.append(dict(entry))
            continue
        stored = read_stored(owner, entry)
        new = dict(entry)
        new.pop("exists_in_prev", None)
        dest = os.path.join(staging, path)
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        with open(dest, "wb") as f:
            f.write(stored)
        new["size"] = str(len(stored))
        data_bytes += len(stored)
        uncompressed += int(entry["full_size"])
        entries.append(new)
    with open(os.path.join(full.dir, "backup_content.control.merge"), "w") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
    info("Backup files are successfully merged, time elapsed: 0")
    shutil.rmtree(os.path.join(full.dir, "database"))
    os.rename(staging, os.path.join(full.dir, "database"))
    os.replace(os.path.join(full.dir, "backup_content.control.merge"), os.path.join(full.dir, "backup_content.control"))
    merged = dict(target.control)
    merged.pop("parent-backup-id", None)
    merged.pop("expire-time", None)
    merged.update(
        {"backup-mode": "FULL", "end-time": fmt_time(now_utc()), "data-bytes": str(data_bytes), "uncompressed-bytes": str(uncompressed), "status": "OK"}
    )
    for b in chain[1:]:
        info("Delete: %s %s" % (b.id, b.time_label()))
        shutil.rmtree(b.dir)
    info("Rename merged full backup %s to %s" % (full.id, target.id))
    new_dir = os.path.join(cat.instance_dir(instance), target.id)
    os.rename(full.dir, new_dir)
    renamed = Backup(cat, instance, target.id, control=merged)
    renamed.control["content-crc"] = str(content_crc(renamed))
    renamed.save()
    for b in cat.backups(instance):  # incrementals that hung off the old FULL now hang off the renamed one
        if b.parent_id == full.id:
            b.control["parent-backup-id"] = target.id
            b.save()
    info("Validating backup %s" % full.id)
    info("Backup %s data files are valid" % full.id)
    info("Merge of backup %s completed" % target.id)
    return 0


def delete_backups(to_delete):
    for b in to_delete:
        info("Delete: %s %s" % (b.id, b.time_label()))
        shutil.rmtree(b.dir)


def cmd_delete(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    config = cat.read_config(instance)
    backups = cat.backups(instance)
    if opts.get("backup-id"):
        wanted = opts["backup-id"]
        match = [b for b in backups if b.id == wanted]
        if not match:
            raise Fail("Failed to find backup %s, cannot delete" % wanted)
        victims = [match[0]] + descendants(match[0], backups)
        if opts.get("dry-run"):
            for b in victims:
                info("Backup %s, mode: %s, status: %s. Can be deleted" % (b.id, b.mode, b.status))
            return 0
        delete_backups(sorted(victims, key=lambda b: int(b.id, 36), reverse=True))
        return 0
    if opts.get("status"):
        status = opts["status"].upper()
        victims = [b for b in backups if b.status == status]
        if not victims:
            info("There are no backups with status '%s'" % status)
            return 0
        for b in victims:
            info("Backup %s with status %s %s be deleted" % (b.id, status, "can" if opts.get("dry-run") else "will"))
        if not opts.get("dry-run"):
            delete_backups(victims)
        return 0
    if not (opts.get("delete-expired") or opts.get("merge-expired") or opts.get("delete-wal")):
        raise Fail("You must specify at least one of the delete options: --delete-expired |--delete-wal |--merge-expired |--status |(-i, --backup-id)")
    retention(cat, instance, opts, config)
    return 0


def retention(cat, instance, opts, config):
    redundancy = int(opts.get("retention-redundancy", config.get("retention-redundancy", "0")))
    window = int(opts.get("retention-window", config.get("retention-window", "0")))
    dry = bool(opts.get("dry-run"))
    backups = cat.backups(instance)
    now = now_utc()
    if redundancy == 0 and window == 0 and not opts.get("delete-wal"):
        warning("Retention policy is not set")
        return
    info("Evaluate backups by retention")
    by_id = {b.id: b for b in backups}
    full_rank, n_full = {}, 0
    for b in backups:  # newest first: the n-th valid FULL has redundancy n, an incremental that of its FULL
        if b.mode == "FULL" and b.status in OK_STATUSES:
            n_full += 1
            full_rank[b.id] = n_full
    keep, lines = set(), []
    for b in backups:
        try:
            root = chain_of(b, by_id)[0]
        except Fail:
            root = b
        rank = full_rank.get(root.id, n_full + 1)
        rec = b.get("recovery-time") or b.get("start-time")
        age_days = (now - parse_time(rec)).days
        pinned = bool(b.get("expire-time")) and parse_time(b.get("expire-time")) > now
        active = (
            (redundancy == 0 and window == 0)
            or (redundancy and rank <= redundancy)
            or (window and parse_time(rec) >= now - datetime.timedelta(days=window))
            or pinned
            or b.status in ("RUNNING", "MERGING", "DELETING")
        )
        shown_window = (parse_time(b.get("expire-time")) - parse_time(rec)).days if pinned else window
        if active:
            keep.add(b.id)
        lines.append((b, "Redundancy: %d/%d, Time Window: %dd/%dd" % (min(rank, n_full) if rank <= n_full else rank, redundancy, age_days, shown_window)))
    for b in backups:  # a kept incremental keeps its whole chain
        if b.id in keep:
            try:
                keep.update(parent.id for parent in chain_of(b, by_id))
            except Fail:
                pass
    for b, text in lines:
        info("Backup %s, mode: %s, status: %s. %s. %s" % (b.id, b.mode, b.status, text, "Active" if b.id in keep else "Expired"))
    expired = [b for b in backups if b.id not in keep]
    deleted = False
    if opts.get("delete-expired") and expired and not dry:
        delete_backups(expired)
        deleted = True
    purged = False
    if opts.get("delete-wal"):
        kept = [b for b in backups if b.id in keep] if opts.get("delete-expired") else backups
        purged = purge_wal(cat, instance, kept, dry)
    info("There are no backups to merge by retention policy")
    if deleted or purged:
        info("Purging finished")
    else:
        info("There are no backups to delete by retention policy")
        info("There is no WAL to purge by retention policy")


def purge_wal(cat, instance, kept, dry):
    segs = archived_segments(cat, instance)
    if not segs:
        return False
    starts = [b for b in kept if b.get("start-lsn", "0/0") != "0/0"]
    if not starts:
        return False
    oldest = min(starts, key=lambda b: lsn_int(b.get("start-lsn")))
    tli = int(oldest.get("timelineid"))
    boundary = seg_number(seg_name(tli, lsn_int(oldest.get("start-lsn"))))
    old = sorted(n for n in segs if int(n[:8], 16) == tli and seg_number(n) < boundary)
    if not old:
        return False
    verb = "can be removed" if dry else "will be removed"
    info("On timeline %d WAL segments between %s and %s %s" % (tli, old[0], seg_name(tli, boundary * SEG_SIZE), verb))
    info("Logical WAL size to remove on timeline %d : %s" % (tli, pretty_size(len(old) * SEG_SIZE)))
    info("Resident WAL size to free on timeline %d : %s" % (tli, pretty_size(sum(os.path.getsize(segs[n]) for n in old))))
    if dry:
        return False
    for n in old:
        os.remove(segs[n])
    folder = cat.wal_dir(instance)
    for name in os.listdir(folder):
        if name.endswith(".backup") and seg_number(name[:24]) < boundary:
            os.remove(os.path.join(folder, name))
    return True


def pin(backup, opts, quiet=False):
    if opts.get("ttl") is not None and opts.get("ttl") != "":
        seconds = parse_interval(opts["ttl"], "s")
        if seconds == 0:
            backup.control.pop("expire-time", None)
            backup.save()
            if not quiet:
                info("Backup %s is unpinned" % backup.id)
            return
        if not backup.get("recovery-time"):
            raise Fail("Failed to set 'expire-time' for backup %s: invalid 'recovery-time'" % backup.id)
        expire = parse_time(backup.get("recovery-time")) + datetime.timedelta(seconds=seconds)
    else:
        expire = parse_time(opts["expire-time"])
    backup.control["expire-time"] = fmt_time(expire)
    backup.save()
    info("Backup %s is pinned until '%s'" % (backup.id, fmt_time(expire)))


def cmd_set_backup(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    wanted = require(opts, "backup-id", "-i, --backup-id")
    match = [b for b in cat.backups(instance) if b.id == wanted]
    if not match:
        raise Fail("Target backup %s is not found" % wanted)
    if not (opts.get("ttl") is not None or opts.get("expire-time") or opts.get("note")):
        raise Fail("You must specify '--ttl', '--expire-time' or '--note' for the set-backup command")
    if opts.get("ttl") is not None and opts.get("expire-time"):
        raise Fail("You cannot specify '--expire-time' and '--ttl' options together")
    backup = match[0]
    if opts.get("note"):
        backup.control["note"] = opts["note"]
        backup.save()
        info("Adding note to backup %s: '%s'" % (backup.id, opts["note"]))
    if opts.get("ttl") is not None or opts.get("expire-time"):
        pin(backup, opts)
    return 0


# ---------------------------------------------------------------- restore


def cmd_restore(cat, opts):
    instance = require(opts, "instance", "--instance")
    cat.require_instance(instance)
    pgdata = opts.get("pgdata")
    if not pgdata:
        raise Fail("Required parameter not specified: PGDATA (-D, --pgdata)")
    pgdata = os.path.abspath(pgdata)
    config = cat.read_config(instance)
    rt = target_of(opts)
    incremental = opts.get("incremental-mode", "none")
    if incremental not in ("none", "checksum", "lsn"):
        raise Fail('Invalid value for --incremental-mode option "%s"' % incremental)
    if opts.get("db-include") and opts.get("db-exclude"):
        raise Fail("You cannot specify '--db-include' and '--db-exclude' together")
    non_empty = os.path.isdir(pgdata) and os.listdir(pgdata)
    if non_empty and incremental == "none":
        raise Fail('Restore destination is not empty: "%s"' % pgdata)
    if non_empty:
        pid_file = os.path.join(pgdata, "postmaster.pid")
        if os.path.exists(pid_file):
            pid = open(pid_file).readline().strip()
            raise Fail('Postmaster with pid %s is running in destination directory "%s"' % (pid, pgdata))
        if os.path.exists(os.path.join(pgdata, "global", "pg_control")):
            sysid = controldata(pgdata).get("Database system identifier")
            if sysid != config.get("system-identifier"):
                raise Fail(
                    "Backup catalog was initialized for system id %s, but destination directory system id is %s" % (config.get("system-identifier"), sysid)
                )
    target, by_id = choose_backup(cat, instance, opts, rt)
    if opts.get("no-validate"):
        chain = chain_of(target, by_id)
    else:
        chain = validate_chain(target, by_id, announce_parents=False)
    files = materialize(chain)
    excluded = partial_restore_oids(target, opts)
    info("Restoring the database from backup %s" % target.id)
    info("Start restoring backup files. PGDATA size: %s" % pretty_size(int(target.get("pgdata-bytes", "0"))))
    os.makedirs(pgdata, mode=0o700, exist_ok=True)
    os.chmod(pgdata, 0o700)
    written = 0
    for path, (entry, owner) in sorted(files.items(), key=lambda kv: (kv[1][0].get("kind") != "dir", kv[0])):
        dest = os.path.join(pgdata, path)
        if entry.get("kind") == "dir":
            os.makedirs(dest, mode=0o700, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        if excluded and entry.get("dbOid") in excluded and entry.get("is_datafile") == "1":
            data = b""  # a partial restore leaves the excluded databases' relations empty (modelled)
        else:
            if incremental != "none" and os.path.isfile(dest):
                with open(dest, "rb") as f:
                    current = f.read()
                if zlib.crc32(current) == int(entry["full_crc"]) and len(current) == int(entry["full_size"]):
                    continue
            data = decode(entry, read_stored(owner, entry))
        with open(dest, "wb") as f:
            f.write(data)
        os.chmod(dest, 0o600)
        written += len(data)
    if incremental != "none":  # files the backup does not have are removed
        for root, _dirs, names in os.walk(pgdata, topdown=False):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), pgdata)
                if rel not in files and rel not in ("postgresql.auto.conf",):
                    os.remove(os.path.join(root, name))
    info("Backup files are restored. Transfered bytes: %s, time elapsed: 0" % pretty_size(written))
    write_recovery(cat, instance, target, pgdata, opts, rt)
    info("Syncing restored files to disk")
    info("Restored backup files are synced, time elapsed: 0")
    info("Restore of backup %s completed." % target.id)
    return 0


def partial_restore_oids(target, opts):
    names = opts.get("db-include") or opts.get("db-exclude")
    if not names:
        return set()
    path = os.path.join(target.dir, "database_map")
    if not os.path.exists(path):
        raise Fail("Backup %s doesn't contain a database_map, partial restore is impossible." % target.id)
    dbs = {}
    with open(path) as f:
        for line in f:
            if "|" in line:
                oid, _sep, name = line.rstrip("\n").partition("|")
                dbs[name] = oid
    for name in names:
        if name not in dbs:
            raise Fail("Database '%s' was not found in backup %s" % (name, target.id))
        if opts.get("db-exclude") and name in ("template0", "template1", "postgres"):
            raise Fail("Database '%s' cannot be excluded" % name)
    if opts.get("db-include"):
        keep = set(names) | {"template0", "template1", "postgres"}
        return {oid for name, oid in dbs.items() if name not in keep}
    return {dbs[name] for name in names}


def write_recovery(cat, instance, backup, pgdata, opts, rt):
    stream = backup.get("stream") == "true"
    needed = (not stream) or bool(rt) or bool(opts.get("recovery-target-timeline")) or bool(opts.get("recovery-target-inclusive"))
    auto = os.path.join(pgdata, "postgresql.auto.conf")
    if not needed:
        return
    lines = ["", "# recovery settings added by %s restore of backup %s at '%s'" % (PROG, backup.id, fmt_time(now_utc())), "## recovery settings"]
    if rt.get("recovery-target") == "immediate":
        lines.append("recovery_target = 'immediate'")
    for key in ("recovery-target-time", "recovery-target-xid", "recovery-target-lsn", "recovery-target-name"):
        if key in rt:
            lines.append("%s = '%s'" % (key.replace("-", "_"), rt[key]))
    if opts.get("recovery-target-inclusive") and rt:
        lines.append("recovery_target_inclusive = '%s'" % opts["recovery-target-inclusive"])
    timeline = opts.get("recovery-target-timeline") or ("latest" if rt.get("recovery-target") == "latest" else "current")
    lines.append("recovery_target_timeline = '%s'" % timeline)
    if rt and rt.get("recovery-target") != "latest" or opts.get("recovery-target-action"):
        lines.append("recovery_target_action = '%s'" % opts.get("recovery-target-action", "pause"))
    me = os.path.abspath(sys.argv[0])
    lines.append('restore_command = \'"%s" archive-get -B "%s" --instance "%s" --wal-file-path=%%p --wal-file-name=%%f\'' % (me, cat.path, instance))
    existing = open(auto).read() if os.path.exists(auto) else "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"
    with open(auto, "w") as f:
        f.write(existing.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    os.chmod(auto, 0o600)
    with open(os.path.join(pgdata, "recovery.signal"), "w"):
        pass
    os.chmod(os.path.join(pgdata, "recovery.signal"), 0o600)


# ---------------------------------------------------------------- WAL archive


def cmd_archive_push(cat, opts):
    instance = require(opts, "instance", "--instance")
    name = require(opts, "wal-file-name", "--wal-file-name")
    cat.require_instance(instance)
    config = cat.read_config(instance)
    source = opts.get("wal-file-path") or os.path.join("pg_wal", name)
    if not os.path.isabs(source) and not os.path.exists(source):
        source = os.path.join(config["pgdata"], "pg_wal", name)
    alg = (opts.get("compress-algorithm") or config.get("compress-algorithm") or "none").lower()
    started = time.time()
    sys.stderr.write("INFO: pg_probackup archive-push WAL file: %s, threads: 1/1, batch: 1/1, compression: %s\n" % (name, alg))
    with open(source, "rb") as f:
        data = f.read()
    folder = cat.wal_dir(instance)
    compress = alg != "none" and re.match(r"^[0-9A-F]{24}$", name)
    dest = os.path.join(folder, name + (".gz" if compress else ""))
    if os.path.exists(dest):
        old = open(dest, "rb").read()
        if (gzip.decompress(old) if compress else old) == data:
            sys.stderr.write("INFO: pg_probackup archive-push completed successfully, pushed: 0, skipped: 1, time elapsed: 0ms\n")
            return 0
        if not opts.get("overwrite"):
            raise Fail('WAL file "%s" already exists in archive with different checksum' % name)
    tmp = dest + ".part"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(data, 1) if compress else data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, dest)
    sys.stderr.write(
        "INFO: pg_probackup archive-push completed successfully, pushed: 1, skipped: 0, time elapsed: %dms\n" % int((time.time() - started) * 1000)
    )
    return 0


def cmd_archive_get(cat, opts):
    instance = require(opts, "instance", "--instance")
    name = require(opts, "wal-file-name", "--wal-file-name")
    path = require(opts, "wal-file-path", "--wal-file-path")
    folder = cat.wal_dir(instance)
    sys.stderr.write("INFO: pg_probackup archive-get WAL file: %s, remote: none, threads: 1/1, batch: 1\n" % name)
    for candidate, packed in ((name, False), (name + ".gz", True)):
        full = os.path.join(folder, candidate)
        if os.path.exists(full):
            with open(full, "rb") as f:
                data = f.read()
            if packed:
                data = gzip.decompress(data)
            with open(path + ".part", "wb") as f:
                f.write(data)
            os.replace(path + ".part", path)
            sys.stderr.write("INFO: pg_probackup archive-get completed successfully, fetched: 1/1, time elapsed: 0ms\n")
            return 0
    sys.stderr.write("ERROR: pg_probackup archive-get failed to deliver WAL file: %s, time elapsed: 0ms\n" % name)
    return 1


# ---------------------------------------------------------------- main


def require(opts, key, label):
    value = opts.get(key)
    if not value:
        if key == "instance":
            raise Fail("Required parameter not specified: --instance")
        raise Fail("Required parameter not specified: %s" % label)
    return value


HANDLERS = {
    "init": cmd_init,
    "add-instance": cmd_add_instance,
    "del-instance": cmd_del_instance,
    "set-config": cmd_set_config,
    "show-config": cmd_show_config,
    "backup": cmd_backup,
    "show": cmd_show,
    "validate": cmd_validate,
    "merge": cmd_merge,
    "delete": cmd_delete,
    "set-backup": cmd_set_backup,
    "restore": cmd_restore,
    "archive-push": cmd_archive_push,
    "archive-get": cmd_archive_get,
}


def main(argv):
    os.umask(0o077)
    try:
        command, opts = parse_args(argv)
        if command == "version" or opts.get("version"):
            return cmd_version(None, opts)
        if command == "help" or opts.get("help"):
            print("%s - utility to manage backup/recovery of PostgreSQL database (stand-in)" % PROG)
            return 0
        if command == "checkdb":
            raise Fail("checkdb is not modelled by the pg_probackup stand-in")
        path = opts.get("backup-path") or os.environ.get("BACKUP_PATH")
        if not path:
            raise Fail(
                "No backup catalog path specified.\nPlease specify it either using environment variable BACKUP_PATH or\ncommand line option --backup-path (-B)"
            )
        if not os.path.isabs(path):
            raise Fail("-B, --backup-path must be an absolute path")
        return HANDLERS[command](Catalog(path), opts)
    except Fail as exc:
        log("ERROR", str(exc))
        return 1
    except OSError as exc:
        log("ERROR", "%s: %s" % (exc.filename or "file operation", exc.strerror))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
