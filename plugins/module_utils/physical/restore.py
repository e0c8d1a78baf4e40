# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a base backup set onto the host the module runs on, with point-in-time recovery.

The order is what makes it safe:

1. Everything that can be checked without touching the target is checked first: the set is
   complete, the binaries are of the backup's major version, the recovery target lies after the
   backup's end and not after the newest archived WAL.
2. The backup is deployed into a sibling folder ``<pg_data>.pgdr-new`` while the current cluster
   keeps running: tars are streamed from the repository through sha256 into ``tar -x``, so each stored
   byte is read once, and a file whose digest or size differs from the set's manifest (found at its end,
   or when damage makes tar, the decompressor or gpg fail first) fails the restore and the scratch copy is
   removed; plain sets are copied; an incremental chain is combined with pg_combinebackup. pg_verifybackup
   checks the deployed copy against PostgreSQL's own backup_manifest.
3. Only then is the running server stopped (with ``force``), its data directory renamed to
   ``<pg_data>.pgdr-previous-<backup_id>`` and the new one renamed into place. Whatever ``pg_data`` holds
   (a running or stopped cluster, any other file) is replaced only with ``force``, and kept aside the same way;
   a ``pg_data`` that is absent or empty needs no ``force``, and missing folders above it are made for the
   cluster's OS user.
4. The server starts with the recovery settings and is watched until recovery reaches the target.
   Any failure stops it, puts the previous data directory back and starts it again if it ran before.
   The previous directory is removed only after success, and only with ``keep_previous: false``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import grp
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import tempfile
import time
from typing import Callable, List, NamedTuple, Optional, Tuple

from ansible_collections.pgdr.backup.plugins.module_utils.core import encryption
from ansible_collections.pgdr.backup.plugins.module_utils.core.binaries import find_binary, tool_version
from ansible_collections.pgdr.backup.plugins.module_utils.core.commands import run, run_pipeline
from ansible_collections.pgdr.backup.plugins.module_utils.core.compression import decompress_argv
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.pg_service import Cluster, ServiceOptions
from ansible_collections.pgdr.backup.plugins.module_utils.core.recovery_target import RecoveryTargetOptions, lsn_to_int, parse_target_time, requested_target
from ansible_collections.pgdr.backup.plugins.module_utils.sets import backup_set
from ansible_collections.pgdr.backup.plugins.module_utils.storage.base import HashingReader, NotFound
from ansible_collections.pgdr.backup.plugins.module_utils.wal import archive as wal_archive
from ansible_collections.pgdr.backup.plugins.module_utils.wal import installer as wal_installer
from ansible_collections.pgdr.backup.plugins.module_utils.wal.archive import ArchiveOptions

WAL_SEGMENT_SIZE = 16 * 1024 * 1024  # the default; manifests record another size when the source used one
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$")
AUTO_CONF_MARK = "# --- written by pgdr.backup restore_cluster ---"


# --- options ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StandbyOptions:
    """The ``standby`` option of restore_cluster: the restored cluster follows a primary."""

    primary_conninfo: str
    slot: Optional[str]


@dataclasses.dataclass(frozen=True)
class PhysicalRestoreOptions(RecoveryTargetOptions, ServiceOptions):
    """What every restore of a whole data directory takes (a base backup set or a probackup catalog), typed.

    The recovery target and the server (pg_data, service_manager, os_user, ...) are restore_cluster's top-level
    options, so they are inherited fields rather than nested ones.
    """

    backup_id: str
    pg_bin_dir: Optional[str]
    login_host: Optional[str]  # the restored server's socket folder or host: where recovery is watched
    login_port: Optional[int]
    force: bool
    keep_previous: bool
    standby: Optional[StandbyOptions]
    archive_mode: str
    server_settings: Optional[dict]
    tablespace_mapping: Optional[dict]
    recovery_timeout: int
    start_timeout: int


@dataclasses.dataclass(frozen=True)
class DecryptionOptions:
    """restore_cluster's ``encryption`` option: the passphrase an encrypted (gpg) set was encrypted with."""

    passphrase: Optional[str]


@dataclasses.dataclass(frozen=True)
class BaseSetRestoreOptions(PhysicalRestoreOptions):
    """A restore of a base backup set (pg_basebackup's) from a repository."""

    cluster: str  # the set's cluster name in the repository layout
    verify: bool
    archive: Optional[ArchiveOptions]
    encryption: Optional[DecryptionOptions]


class Setting(NamedTuple):
    """One line of postgresql.auto.conf."""

    name: str
    value: object


class WalSource(NamedTuple):
    """Where recovery reads WAL after the backup's own."""

    restore_command: Optional[str]  # the PostgreSQL setting; None where the tool writes its own (probackup)
    newest: Optional[Tuple[str, Optional[datetime.datetime]]]  # the newest archived segment and its mtime, ("", None): none; None: not listable
    install: Optional[Callable[[], None]] = None  # what the host needs (the pgdr-wal helper), run once plan() has refused nothing


class RestorePlan(NamedTuple):
    """What plan() found: the sets to deploy, full backup first, and what the task reports as ``plan``."""

    chain: List[dict]
    description: dict


# --- pure helpers ---------------------------------------------------------------------


def segment_end(walfile, segment_size=WAL_SEGMENT_SIZE):
    """The LSN (as int) just past the end of a WAL segment file name, or None for other files."""
    match = _SEGMENT_RE.match(walfile)
    if not match:
        return None
    log, seg = int(match.group(2), 16), int(match.group(3), 16)
    per_log = 0x100000000 // segment_size
    return (log * per_log + seg + 1) * segment_size


def _conf_quote(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'%s'" % str(value).replace("'", "''")


def recovery_settings(options, target, restore_command):
    """The settings written to postgresql.auto.conf of the restored cluster, in order.

    ``options``: PhysicalRestoreOptions; ``target``: requested_target(options); ``restore_command``: the PostgreSQL setting, or None.
    """
    settings = []
    if restore_command:
        settings.append(Setting("restore_command", restore_command))
    kind, value = target
    if kind == "immediate":
        settings.append(Setting("recovery_target", "immediate"))
    elif kind != "latest":
        settings.append(Setting("recovery_target_" + kind, value))
        if options.recovery_target_inclusive is not None:
            settings.append(Setting("recovery_target_inclusive", bool(options.recovery_target_inclusive)))
    if kind != "latest" or options.recovery_target_timeline:
        settings.append(Setting("recovery_target_timeline", options.recovery_target_timeline or "latest"))
    if kind != "latest":
        # Always explicit: PostgreSQL's default (pause) leaves a drill waiting forever.
        settings.append(Setting("recovery_target_action", options.recovery_target_action))
    if options.standby:
        settings.append(Setting("primary_conninfo", options.standby.primary_conninfo))
        if options.standby.slot:
            settings.append(Setting("primary_slot_name", options.standby.slot))
    # A restored copy must never push WAL into the production archive unless asked to.
    settings.append(Setting("archive_mode", options.archive_mode))
    for name, value in sorted((options.server_settings or {}).items()):
        settings.append(Setting(name, value))
    return settings


def auto_conf_text(existing, settings):
    """postgresql.auto.conf with our settings last (later lines win), replacing what an earlier restore wrote."""
    keep = existing.split(AUTO_CONF_MARK)[0].rstrip("\n")
    names = {name for name, _value in settings}
    lines = [line for line in keep.splitlines() if line.split("=")[0].strip() not in names]
    lines.append(AUTO_CONF_MARK)
    lines += ["%s = %s" % (name, _conf_quote(value)) for name, value in settings]
    return "\n".join(lines) + "\n"


def archive_shortfall(target, reached, archive_newest, standby=False):
    """Why a replay of the whole archive ended too early, or None.

    restore_command cannot tell "not archived" from "could not be read" (a store that is down): PostgreSQL ends
    recovery at the first file it does not get. Without a target it then promotes there, silently early; so the
    reached LSN must lie in or past the newest segment the archive listed before the start.
    """
    if target[0] != "latest" or standby or not archive_newest or not archive_newest[0] or not reached.get("reached_lsn"):
        return None
    end = segment_end(archive_newest[0])
    if end is None or lsn_to_int(reached["reached_lsn"]) >= end - WAL_SEGMENT_SIZE:
        return None
    return (
        "recovery ended at %s, before the newest archived segment %s: the archive could not be read completely (check that the "
        "store is reachable from this host, then restore again)" % (reached["reached_lsn"], archive_newest[0])
    )


def check_target_bounds(manifest, target, archive_newest=None, has_archive=False):
    """Refuse targets that cannot be reached, before anything is touched.

    ``archive_newest`` is (walfile, mtime) of the newest archived segment, ("", None) for an empty archive,
    or None when the archive cannot be listed.
    """
    kind, value = target
    bid = manifest["backup_id"]
    stop_lsn = lsn_to_int(manifest["stop_lsn"])
    stop_time = backup_set.parse_iso_utc(manifest["physical"].get("stop_time") or manifest["finished_at"])
    if kind == "lsn" and lsn_to_int(value) < stop_lsn:
        raise PgdrError(
            "recovery_target_lsn %s lies before the end of backup %s (%s); choose a later target or an older backup" % (value, bid, manifest["stop_lsn"])
        )
    if kind == "time" and parse_target_time(value) < stop_time:
        raise PgdrError(
            "recovery_target_time %s lies before the end of backup %s (%s); choose a later target or an older backup"
            % (value, bid, backup_set.iso_utc(stop_time))
        )
    if kind in ("immediate", "latest"):
        return
    if not has_archive:
        raise PgdrError(
            "recovery_target_%s needs WAL after the backup: give archive (the WAL archive to replay from), "
            "or use recovery_target: immediate to stop at the end of the backup" % kind
        )
    if archive_newest is None:  # an archive that cannot be listed (probackup, a custom command): PostgreSQL will tell
        return
    walfile, mtime = archive_newest
    if not walfile:
        if kind in ("lsn", "time"):
            raise PgdrError("the WAL archive holds no segment; recovery_target_%s %s cannot be reached" % (kind, value))
        return
    if mtime is not None and mtime.tzinfo is None:
        mtime = mtime.replace(tzinfo=datetime.timezone.utc)
    if kind == "lsn" and segment_end(walfile) is not None and lsn_to_int(value) >= segment_end(walfile):
        raise PgdrError("recovery_target_lsn %s lies after the newest archived WAL (%s); archive more WAL first or choose an earlier target" % (value, walfile))
    if kind == "time" and parse_target_time(value) > mtime:
        raise PgdrError(
            "recovery_target_time %s lies after the newest archived WAL (%s, archived %s); archive more WAL first "
            "(pg_switch_wal) or choose an earlier target" % (value, walfile, backup_set.iso_utc(mtime))
        )


# --- what pg_data holds, and the folders around it ------------------------------------


class Existing(NamedTuple):
    """What ``pg_data`` holds before a restore."""

    kind: str  # "absent", "empty", "cluster", "other", "link", "file"
    detail: object = None  # cluster: its PG_VERSION; other: its entries (sorted); link: where it points


def inspect_target(pg_data):
    """What is at ``pg_data`` now (an Existing); reads names only, never contents beyond PG_VERSION."""
    if os.path.islink(pg_data):
        return Existing("link", os.readlink(pg_data))
    if not os.path.lexists(pg_data):
        return Existing("absent")
    if not os.path.isdir(pg_data):
        return Existing("file")
    try:
        entries = sorted(os.listdir(pg_data))
    except OSError as exc:
        raise PgdrError("pg_data %s cannot be read (%s); run the task as root (become: true)" % (pg_data, exc.strerror)) from None
    if not entries:
        return Existing("empty")
    if os.path.isfile(os.path.join(pg_data, "PG_VERSION")):
        with open(os.path.join(pg_data, "PG_VERSION"), errors="replace") as f:
            return Existing("cluster", (f.readline().strip() or "?")[:20])
    return Existing("other", entries)


def nested_cluster(folder, depth=3, budget=10000):
    """The first data directory (a folder with PG_VERSION) found below ``folder``, ``depth`` levels deep at most, or None.

    Bounded (``budget`` entries) so that a huge folder costs little: this only guards against pg_data given one
    level too high (/var/lib/postgresql/16 instead of .../16/main), where replacing it would take a cluster with it.
    """
    level = [folder]
    for _level in range(depth):
        below = []
        for parent in level:
            try:
                with os.scandir(parent) as entries:
                    for entry in entries:
                        budget -= 1
                        if budget < 0:
                            return None
                        if entry.is_dir(follow_symlinks=False):
                            if os.path.isfile(os.path.join(entry.path, "PG_VERSION")):
                                return entry.path
                            below.append(entry.path)
            except OSError:
                continue
        level = below
    return None


def existing_name(existing, running):
    """What the plan says pg_data holds: absent, empty, running cluster, stopped cluster, other (link and file are refused)."""
    if existing.kind == "cluster":
        return "running cluster" if running else "stopped cluster"
    return existing.kind


def _listing(entries, shown=5):
    names = ", ".join(entries[:shown])
    return names + (" and %d more" % (len(entries) - shown) if len(entries) > shown else "")


def existing_refusal(pg_data, existing, running, force, backup_id, nested=None):
    """Why the restore must not replace what ``pg_data`` holds (``existing``, an Existing), or None.

    Anything that is there is replaced only with ``force``, and kept as ``<pg_data>.pgdr-previous-<backup_id>`` until
    the restored cluster has verified; a link, a file, or a folder with a cluster inside (``nested``) never are.
    """
    kept = "it is kept as %s.pgdr-previous-%s until the restored cluster has started and passed verification" % (pg_data, backup_id)
    if existing.kind == "link":
        return (
            "pg_data %s is a symbolic link (to %s); give the data directory itself as pg_data (a restore renames pg_data, which "
            "would move the link and leave the data where it is)" % (pg_data, existing.detail)
        )
    if existing.kind == "file":
        return "pg_data %s is a file, not a folder; give the path of the cluster's data directory" % pg_data
    if existing.kind == "other" and nested:
        return (
            "pg_data %s is not a data directory but holds one in %s; give that folder as pg_data, or move it out of %s first "
            "(replacing %s would take it along)" % (pg_data, nested, pg_data, pg_data)
        )
    if force:
        return None
    if running:
        return (
            "the PostgreSQL server in %s is running; set force: true to stop it (its data directory is kept until "
            "the restored cluster has started and passed verification)" % pg_data
        )
    if existing.kind == "cluster":
        return "pg_data %s holds a stopped PostgreSQL %s cluster; set force: true to replace it (%s)" % (pg_data, existing.detail, kept)
    if existing.kind == "other":
        what = "pg_data %s is not empty and holds no PostgreSQL cluster (%s)" % (pg_data, _listing(existing.detail))
        return "%s; give an empty or new folder, or set force: true to replace what is there (%s)" % (what, kept)
    return None


def folders_to_make(folder):
    """(the nearest folder that exists at or above ``folder``, the missing folders down to ``folder``, outermost first)."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder, missing[::-1]


def describe_owner(path):
    """``owned by user:group, mode 0755`` of ``path``, for a message that says why a user cannot write there."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return "cannot be read: %s" % exc.strerror
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "owned by %s:%s, mode %04o" % (user, group, st.st_mode & 0o7777)


def make_folders(folders, os_user):
    """Create ``folders`` (outermost first) as the cluster's OS user would (owner ``os_user``, mode 0700, like initdb's);
    returns those made."""
    made = []
    owner = pwd.getpwnam(os_user) if os.geteuid() == 0 else None
    try:
        for folder in folders:
            os.mkdir(folder, 0o700)
            made.append(folder)
            os.chmod(folder, 0o700)  # the umask must not decide
            if owner:
                os.chown(folder, owner.pw_uid, owner.pw_gid)
    except OSError as exc:
        remove_empty_folders(made)
        raise PgdrError("creating the folder %s for pg_data failed: %s; create it (owned by %s) and run again" % (folder, exc.strerror, os_user)) from None
    return made


def remove_empty_folders(made):
    """Undo make_folders where nothing was left inside (the server's log, kept for the reason of a failure, stays)."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


# --- the chain of sets to deploy ------------------------------------------------------


def load_chain(repo, cluster_name, manifest):
    """Manifests from the full backup to ``manifest`` (one for a full backup), each complete."""
    chain_ids = manifest["physical"].get("chain") or [manifest["backup_id"]]
    if chain_ids[-1] != manifest["backup_id"]:
        raise PgdrError("backup set %s records a chain that does not end with itself; the manifest is corrupt" % manifest["backup_id"])
    chain = [backup_set.load_manifest(repo, cluster_name, bid) for bid in chain_ids[:-1]] + [manifest]
    for index in range(1, len(chain)):
        parent, child = chain[index - 1], chain[index]
        if child["physical"].get("incremental_from") != parent["backup_id"]:
            raise PgdrError(
                "backup set %s is not the incremental child of %s as the chain says; the chain is broken" % (child["backup_id"], parent["backup_id"])
            )
    return chain


def check_chain_supported(chain):
    """Refuse an incremental chain whose sets hold tablespaces (each part would need its own tablespace folders)."""
    if len(chain) < 2:
        return
    with_tablespaces = [m["backup_id"] for m in chain if m["physical"].get("tablespaces")]
    if with_tablespaces:
        raise PgdrError(
            "incremental chains with tablespaces are not supported yet (set %s holds tablespaces); restore the full backup %s "
            "with recovery_target and the WAL archive instead, or take a full backup" % (with_tablespaces[0], chain[0]["backup_id"])
        )


# --- deploying ------------------------------------------------------------------------


PASSPHRASE_OPTION = "encryption.passphrase"


def _decrypt_stage(entry, gpg, what):
    """[gpg --decrypt] for an encrypted file (none for a plain one); PgdrError when there is no passphrase."""
    if encryption.method_of(entry) == "none":
        return []
    if gpg is None:
        raise PgdrError("%s is encrypted (gpg): give %s, the one it was encrypted with" % (what, PASSPHRASE_OPTION))
    return [gpg.decrypt_argv()]


def _extract(repo, cluster_name, manifest, entry, dest, gpg=None):
    """Stream one tar from the repository through sha256 (and gpg) into tar -x; refuses a file whose digest differs."""
    key = backup_set.set_key(cluster_name, manifest["backup_id"], entry["path"])
    os.makedirs(dest, mode=0o700, exist_ok=True)
    stages = _decrypt_stage(entry, gpg, "backup set %s/%s" % (cluster_name, manifest["backup_id"]))
    method = (entry.get("compression") or {}).get("method", "none")
    if decompress_argv(method):
        stages.append(decompress_argv(method))
    stages.append(["tar", "-x", "-f", "-", "-C", dest])
    with repo.open_reader(key) as raw:
        reader = HashingReader(raw)
        try:
            run_pipeline(stages, stdin_reader=reader)
        except PgdrError as exc:
            # damaged bytes make gpg, the decompressor or tar fail too: read the rest and name the real cause
            reader.drain()
            if not reader.matches(entry["size"], entry["sha256"]):
                raise _corrupt(entry, cluster_name, manifest) from None
            if (exc.details.get("cmd") or [""])[0] == "gpg":
                raise encryption.wrong_passphrase(exc, PASSPHRASE_OPTION) from None
            raise
        reader.drain()
    if not reader.matches(entry["size"], entry["sha256"]):
        raise _corrupt(entry, cluster_name, manifest)


def _corrupt(entry, cluster_name, manifest):
    return PgdrError(
        "file %s of backup set %s/%s does not match its manifest (sha256 or size differs); the set is corrupt, "
        "nothing was changed on the target; restore another backup" % (entry["path"], cluster_name, manifest["backup_id"])
    )


def _checked_bytes(repo, cluster_name, manifest, entry):
    key = backup_set.set_key(cluster_name, manifest["backup_id"], entry["path"])
    data = repo.get_bytes(key)
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise PgdrError(
            "file %s of backup set %s/%s does not match its manifest; the set is corrupt, nothing was changed on the target"
            % (entry["path"], cluster_name, manifest["backup_id"])
        )
    return data


def _fetch_file(repo, cluster_name, manifest, entry, path, gpg=None):
    data = _checked_bytes(repo, cluster_name, manifest, entry)
    stages = _decrypt_stage(entry, gpg, "backup set %s/%s" % (cluster_name, manifest["backup_id"]))
    if not stages:
        with open(path, "wb") as out:
            out.write(data)
        return
    try:
        run_pipeline(stages, stdin_reader=io.BytesIO(data), stdout_path=path)
    except PgdrError as exc:
        raise encryption.wrong_passphrase(exc, PASSPHRASE_OPTION) from None


def check_decryption(repo, cluster_name, chain, gpg):
    """Decrypt each set's backup_manifest (small) in memory: a missing or wrong passphrase fails here, in one line,
    before anything is written; the sha256 of the stored bytes is checked first, so damage is not taken for a wrong key."""
    for manifest in chain:
        for entry in manifest["files"]:
            if entry["role"] != "backup-manifest" or encryption.method_of(entry) == "none":
                continue
            data = _checked_bytes(repo, cluster_name, manifest, entry)
            stages = _decrypt_stage(entry, gpg, "backup set %s/%s" % (cluster_name, manifest["backup_id"]))
            try:
                result = run_pipeline(stages, stdin_reader=io.BytesIO(data))
            except PgdrError as exc:
                raise encryption.wrong_passphrase(exc, PASSPHRASE_OPTION) from None
            try:
                json.loads(result.stdout)
            except ValueError:
                raise PgdrError(
                    "the backup_manifest of backup set %s/%s decrypts to something that is not JSON; the set is damaged, nothing was changed"
                    % (cluster_name, manifest["backup_id"])
                ) from None


def is_encrypted(chain):
    return any(encryption.method_of(entry) != "none" for manifest in chain for entry in manifest.get("files") or [])


def deploy_one(repo, cluster_name, manifest, dest, tablespace_dirs, gpg=None):
    """Put one set's data directory at ``dest`` (and its tablespaces where ``tablespace_dirs`` says)."""
    physical = manifest["physical"]
    if physical["format"] == "plain":
        if repo.kind != "local":
            raise PgdrError("plain-format set %s is only readable from a local repository" % manifest["backup_id"])
        backup_set.check_files(repo, manifest, cluster_name)  # the sha256 of backup_manifest; pg_verifybackup does the rest
        source = repo.location(backup_set.set_key(cluster_name, manifest["backup_id"], physical.get("data_dir") or "data"))
        run(["cp", "-a", "--reflink=auto", source, dest])
        for tablespace in physical.get("tablespaces") or []:
            if str(tablespace["oid"]) in tablespace_dirs:
                # inside the set (tablespaces/<oid>), or where the backup's tablespace_mapping put it
                held = (
                    tablespace["file"]
                    if os.path.isabs(tablespace["file"])
                    else repo.location(backup_set.set_key(cluster_name, manifest["backup_id"], tablespace["file"]))
                )
                os.makedirs(tablespace_dirs[str(tablespace["oid"])], mode=0o700, exist_ok=True)
                run(["cp", "-a", "--reflink=auto", held + "/.", tablespace_dirs[str(tablespace["oid"])]])
        return
    for entry in manifest["files"]:
        role = entry["role"]
        if role == "base":
            _extract(repo, cluster_name, manifest, entry, dest, gpg)
        elif role == "wal":
            _extract(repo, cluster_name, manifest, entry, os.path.join(dest, "pg_wal"), gpg)
        elif role == "tablespace":
            oid = entry["path"].split(".")[0]
            _extract(repo, cluster_name, manifest, entry, tablespace_dirs[oid], gpg)
    for entry in manifest["files"]:
        if entry["role"] == "backup-manifest":
            _fetch_file(repo, cluster_name, manifest, entry, os.path.join(dest, "backup_manifest"), gpg)


def tablespace_dirs(manifest, mapping):
    """oid -> folder for each tablespace of the set (the original location unless mapped); each must be empty or absent."""
    dirs = {}
    for tablespace in manifest["physical"].get("tablespaces") or []:
        oid, location = str(tablespace["oid"]), tablespace["location"]
        target = (mapping or {}).get(location) or (mapping or {}).get(oid) or location
        if os.path.isdir(target) and os.listdir(target):
            raise PgdrError("tablespace folder %s is not empty; give tablespace_mapping {%s: /new/empty/folder}" % (target, location))
        dirs[oid] = target
    return dirs


def relink_tablespaces(data_dir, dirs):
    for oid, target in dirs.items():
        link = os.path.join(data_dir, "pg_tblspc", oid)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)


def drop_tablespace_map(data_dir):
    """Remove the tablespace_map a tar backup carries (after pg_verifybackup, which checks it against backup_manifest).

    At startup PostgreSQL recreates pg_tblspc/<oid> from tablespace_map, pointing at the tablespaces' original
    locations: that would undo tablespace_mapping and replay into the previous cluster's tablespace folders.
    relink_tablespaces() already made the links point where the tablespaces were deployed, so the map is not needed.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(data_dir, "tablespace_map"))


def deploy(repo, cluster_name, chain, new_dir, tools, os_user, mapping, gpg=None):
    """Deploy a full backup or an incremental chain into ``new_dir`` (decrypting with ``gpg`` what is encrypted)."""
    check_chain_supported(chain)
    dirs = tablespace_dirs(chain[-1], mapping)
    if len(chain) == 1:
        deploy_one(repo, cluster_name, chain[0], new_dir, dirs, gpg)
    else:
        with tempfile.TemporaryDirectory(prefix="pgdr-chain-", dir=os.path.dirname(new_dir)) as work:
            parts = []
            for manifest in chain:
                part = os.path.join(work, manifest["backup_id"])
                deploy_one(repo, cluster_name, manifest, part, {}, gpg)
                parts.append(part)
            argv = [tools["pg_combinebackup"], "-o", new_dir]
            for location, target in sorted((mapping or {}).items()):
                argv += ["-T", "%s=%s" % (location, target)]
            run(argv + parts)
    relink_tablespaces(new_dir, dirs)
    for leftover in ("postmaster.pid", "postmaster.opts", "recovery.signal", "standby.signal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(new_dir, leftover))
    os.makedirs(os.path.join(new_dir, "pg_wal"), mode=0o700, exist_ok=True)
    os.chmod(new_dir, 0o700)
    run(["chown", "-R", "%s:" % os_user, new_dir] + sorted(set(dirs.values())))


def write_recovery(new_dir, settings, signal, os_user):
    path = os.path.join(new_dir, "postgresql.auto.conf")
    existing = ""
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        existing = f.read()
    with open(path, "w") as f:
        f.write(auto_conf_text(existing, settings))
    files = [path]
    if signal:
        signal_path = os.path.join(new_dir, signal + ".signal")
        open(signal_path, "w").close()
        files.append(signal_path)
    run(["chown", "%s:" % os_user] + files)


# --- the swap and its undo ------------------------------------------------------------


def remove_tree(path):
    if os.path.lexists(path):
        shutil.rmtree(path)


def log_tail(path, offset, limit=4000):
    """What the server wrote to its log since ``offset`` (the reason a start failed)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")[-limit:]
    except OSError:
        return ""


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')


def restored_wal_files(text):
    """Distinct WAL segments the server says it restored from the archive (recovery's own count)."""
    return len(set(_RESTORED_RE.findall(text)))


def telling_log_line(text):
    """The line of the server log that explains a failed recovery."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for mark in ("FATAL:", "PANIC:", "ERROR:"):
        for line in lines:
            if mark in line:
                return line[line.index(mark) :]
    return lines[-1] if lines else "no server log output"


def wrong_server_problem(reached, pg_data, realpath=os.path.realpath):
    """Why the server recovery was watched on is not the restored cluster in ``pg_data``, or None.

    login_host/login_port may reach another server (a scratch restore on another port, with login_port left at the
    production server's): that one would "pass" and, with keep_previous false, the previous data directory would go.
    A restored cluster always ran recovery (from backup_label), so its pg_last_wal_replay_lsn() is never NULL; and
    where data_directory can be read it must be ``pg_data``.
    """
    hint = "point login_host and login_port at the restored server (its socket folder and the port it runs on, server_settings' port if set)"
    if not reached.get("reached_lsn"):
        return "the server login_host/login_port reach never ran recovery (pg_last_wal_replay_lsn() is NULL), so it is not the restored cluster in %s; %s" % (
            pg_data,
            hint,
        )
    found = reached.get("data_directory")
    if found and realpath(found) != realpath(pg_data):
        return "the server login_host/login_port reach runs from %s, not from the restored cluster in %s; %s" % (found, pg_data, hint)
    return None


SHUT_DOWN_IN_RECOVERY = "shut down in recovery"


def cluster_state(controldata_text):
    """The "Database cluster state" of pg_controldata's output (run with LC_ALL=C), or None."""
    for line in (controldata_text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Database cluster state":
            return value.strip()
    return None


class ServerStopped(Exception):
    """The restored server exited while recovery was awaited (its log says why)."""


def wait_for_recovery(connect, target, action, expect_standby, timeout, alive=lambda: True):
    """Poll the restored server until recovery is where it should be; returns facts about the reached state."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            with contextlib.closing(connect()) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(),"
                    " (SELECT system_identifier::text FROM pg_control_system()), (SELECT timeline_id FROM pg_control_checkpoint())"
                )
                in_recovery, replay_lsn, replay_time, system_identifier, timeline = cur.fetchone()
                paused = False
                if in_recovery:
                    cur.execute("SELECT pg_get_wal_replay_pause_state()")
                    paused = cur.fetchone()[0] == "paused"
                done = (
                    expect_standby
                    and in_recovery
                    or (not expect_standby and action == "promote" and not in_recovery)
                    or (not expect_standby and action == "pause" and paused)
                    or (not expect_standby and target[0] == "latest" and not in_recovery)
                )
                if done:
                    if not in_recovery:
                        cur.execute("SELECT timeline_id FROM pg_control_checkpoint()")
                    # no row (not an error) for a role without the privilege to read it
                    cur.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory'")
                    row = cur.fetchone()
                    return dict(
                        in_recovery=in_recovery,
                        paused=paused,
                        reached_lsn=replay_lsn,
                        reached_time=replay_time.astimezone(datetime.timezone.utc).isoformat() if replay_time else None,
                        system_identifier=system_identifier,
                        data_directory=row[0] if row else None,
                    )
        except Exception as exc:  # pylint: disable=broad-exception-caught  # the server is still starting or recovering
            last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not alive():
                raise ServerStopped() from None
        if time.monotonic() > deadline:
            raise PgdrError(
                "recovery did not reach its target within %d seconds (%s); raise recovery_timeout or check the archive"
                % (timeout, last_error or "still recovering")
            )
        time.sleep(0.5)


# --- what a restore starts from ----------------------------------------------------------


def server_bin_dir(manifest, pg_bin_dir, pg_data):
    """The binaries the restored cluster runs with; refuses a backup of another major version."""
    major = manifest["source"]["major"]
    target_major, why = None, None
    if pg_bin_dir:
        version = tool_version(os.path.join(pg_bin_dir, "pg_ctl"))
        target_major, why = (version[0] if version else None), "the binaries in %s" % pg_bin_dir
    elif os.path.isfile(os.path.join(pg_data, "PG_VERSION")):
        with open(os.path.join(pg_data, "PG_VERSION")) as f:
            target_major, why = int(f.read().strip().split(".")[0]), "the cluster in %s" % pg_data
    if target_major is not None and target_major != major:
        raise PgdrError(
            "backup %s is of PostgreSQL %d but %s is PostgreSQL %s; a physical backup restores only onto the same major "
            "version: use a PostgreSQL %d host (or pg_bin_dir), or a logical backup to move between versions"
            % (manifest["backup_id"], major, why, target_major, major)
        )
    return os.path.dirname(find_binary("pg_ctl", major, pg_bin_dir)[0])


def wal_source(archive, cluster_name, os_user):
    """The WalSource of the ``archive`` option (ArchiveOptions, or None for no archive)."""
    if archive is None:
        return None
    name = "restore-%s" % cluster_name
    # checked here, installed (helper, config, an emptied spool) only once the restore's own checks refused nothing
    restore_command = wal_installer.restore_command(archive, name, os_user, check_mode=True)
    newest = None
    if archive.type in wal_archive.STORE_TYPES:  # the others (probackup, command) cannot be listed
        with wal_archive.open_archive(archive) as listing:
            newest = listing.newest_segment() or ("", None)
            if newest[0]:
                # an encrypted archive must decrypt with the passphrase given: a fetch that fails would end recovery
                for walfile in (newest[0], newest[0] + ".partial"):
                    try:
                        listing.check_decryption(archive.passphrase, walfile)
                        break
                    except NotFound:
                        continue
    return WalSource(restore_command, newest, install=lambda: wal_installer.restore_command(archive, name, os_user))


# --- the whole restore ----------------------------------------------------------------


class PhysicalRestore:
    """One restore of a whole data directory onto this host: the checks, the swap, the start, the wait, the undo.

    A subclass says which sets the restore is made of (``chain``) and what fills the new data directory
    (``prepare``). ``options`` is a PhysicalRestoreOptions; ``server`` the pg_service.Cluster of
    ``options.pg_data``; ``connect()`` opens a psycopg connection to the restored server; ``wal`` the
    WalSource recovery replays from, None for none.
    """

    kind = None  # the result's ``kind``

    def __init__(self, options, server, manifest, connect, wal=None):
        self.options = options
        self.server = server
        self.manifest = manifest
        self.connect = connect
        self.wal = wal
        self.target = requested_target(options)
        self.pg_data = server.pg_data
        self.new_dir = self.pg_data + ".pgdr-new"
        self.previous_dir = None
        self.was_running = None
        self.made_folders = []  # folders above pg_data this run created, removed again if the restore fails

    def chain(self):
        """The manifests to deploy, full backup first."""
        return [self.manifest]

    def prepare(self, plan, timings):
        """Fill ``self.new_dir`` with the restored data directory and its recovery settings (the live cluster is untouched)."""
        raise NotImplementedError

    def plan(self):
        """Every check that needs nothing changed; a RestorePlan."""
        m = self.manifest
        chain = self.chain()
        check_chain_supported(chain)
        check_target_bounds(m, self.target, self.wal.newest if self.wal else None, self.wal is not None)
        if self.options.standby and self.target[0] != "latest":
            raise PgdrError("a standby (standby.signal) follows its primary; do not combine standby with a recovery target")
        existing = inspect_target(self.pg_data)
        self.was_running = existing.kind == "cluster" and self.server.status() == "running"  # pg_ctl status needs PG_VERSION
        refusal = existing_refusal(
            self.pg_data,
            existing,
            self.was_running,
            self.options.force,
            m["backup_id"],
            nested=nested_cluster(self.pg_data) if existing.kind == "other" else None,
        )
        if refusal:
            raise PgdrError(refusal)
        signal = "standby" if self.options.standby else "recovery"
        return RestorePlan(
            chain,
            dict(
                pg_data=self.pg_data,
                existing=existing_name(existing, self.was_running),
                create_folders=self.folders_needed(),
                chain=[c["backup_id"] for c in chain],
                signal=signal,
                was_running=self.was_running,
                target=dict(kind=self.target[0], value=self.target[1]),
                format=m["physical"]["format"],
            ),
        )

    def folders_needed(self):
        """The missing folders above pg_data (and the server log's) this restore creates; refuses a place the server cannot use.

        Checked before anything changes: the server, as the cluster's OS user, must reach pg_data and write its log
        (pg_ctl's shell opens the log before the server runs, so a log it cannot create leaves nothing to read).
        """
        user = self.server.os_user
        anchor, missing = folders_to_make(os.path.dirname(self.pg_data))
        if not os.path.isdir(anchor):
            raise PgdrError("%s is not a folder, so pg_data %s cannot be made there; give another pg_data" % (anchor, self.pg_data))
        if os.geteuid() != 0 and not os.access(anchor, os.W_OK | os.X_OK):
            raise PgdrError(
                "this task runs as %s, which cannot create %s.pgdr-new in %s (%s); run it as root (become: true)"
                % (pwd.getpwuid(os.geteuid()).pw_name, self.pg_data, anchor, describe_owner(anchor))
            )
        if not self.server.owner_can_reach(anchor):
            raise PgdrError(
                "the server runs as %s, which cannot enter %s (%s, or a folder above it lacks search permission for %s); "
                "give pg_data in a folder %s can reach" % (user, anchor, describe_owner(anchor), user, user)
            )
        if self.server.manager == "pg_ctl":
            log = self.server.server_log
            log_anchor, log_missing = folders_to_make(os.path.dirname(log))
            if os.path.lexists(log):
                blocker, fine = log, self.server.owner_can_write(log)
            elif log_missing:  # made below for the server's user, so only the way there matters
                blocker, fine = log_anchor, os.path.isdir(log_anchor) and self.server.owner_can_reach(log_anchor)
            else:
                blocker, fine = log_anchor, self.server.owner_can_write(log_anchor)
            if not fine:
                raise PgdrError(
                    "the server log %s cannot be written by %s, which runs the server (%s %s); give server_log a file %s can write, "
                    "or let %s write there" % (log, user, blocker, describe_owner(blocker), user, user)
                )
            missing += [folder for folder in log_missing if folder not in missing]
        return sorted(missing, key=lambda folder: folder.count(os.sep))

    def run(self, check_mode=False):
        plan = self.plan()
        result = dict(changed=not check_mode, backup_id=self.manifest["backup_id"], kind=self.kind, plan=plan.description)
        if check_mode:
            return result
        if self.wal and self.wal.install:
            self.wal.install()
        timings = {}
        started = time.monotonic()
        self.made_folders = make_folders(plan.description["create_folders"], self.server.os_user)
        remove_tree(self.new_dir)  # left by a run that was killed; never the live data
        try:
            self.prepare(plan, timings)
        except BaseException:
            remove_tree(self.new_dir)
            remove_empty_folders(self.made_folders)
            if self.was_running and self.server.status() == "stopped":  # prepare() may stop it (incremental restores)
                self.server.start(timeout=self.options.start_timeout)
            raise
        mark = time.monotonic()
        try:
            self._swap_in()
        except BaseException:
            remove_empty_folders(self.made_folders)
            raise
        try:
            reached = self._start_and_wait()
        except BaseException as exc:
            self._roll_back()
            remove_empty_folders(self.made_folders)
            if isinstance(exc, PgdrError):
                if self.previous_dir:
                    exc.msg += "; the previous data directory was put back" + (" and started" if self.was_running else "")
                else:  # a restore into a new folder (a scratch copy): there was nothing to put back
                    exc.msg += "; the restored copy was removed"
                raise PgdrError(exc.msg, **exc.details) from None
            raise
        timings["recovery_seconds"] = round(time.monotonic() - mark, 3)
        previous = self.previous_dir
        if previous and not self.options.keep_previous:
            remove_tree(previous)
            previous = None
        timings["total_seconds"] = round(time.monotonic() - started, 3)
        result.update(reached, timings=timings, previous_data_dir=previous, state=reached.pop("state"))
        return result

    def _swap_in(self):
        """Stop the server and put the new data directory in place; any failure puts everything back as it was."""
        try:
            if self.was_running:
                self.server.stop(mode="fast")
            if os.path.lexists(self.pg_data):
                previous = "%s.pgdr-previous-%s" % (self.pg_data, self.manifest["backup_id"])
                if os.path.lexists(previous):
                    previous += "-%d" % int(time.time())
                os.rename(self.pg_data, previous)
                self.previous_dir = previous
            os.rename(self.new_dir, self.pg_data)
        except Exception as exc:
            why = exc.msg if isinstance(exc, PgdrError) else str(exc)
            raise PgdrError("swapping the restored data directory into %s failed: %s; %s" % (self.pg_data, why, self._undo_swap())) from None

    def _undo_swap(self):
        """After a failed swap: the previous data directory back in place, the new one gone, the server started if it ran.

        Returns what the failure message says about the state left behind.
        """
        said = "the data directory in place was not moved"
        try:
            if self.previous_dir and not os.path.lexists(self.pg_data):
                os.rename(self.previous_dir, self.pg_data)
                said = "the previous data directory was put back"
            self.previous_dir = None
            remove_tree(self.new_dir)
            if self.was_running and self.server.status() == "stopped":
                self.server.start(timeout=self.options.start_timeout)
                said += " and started again"
        except Exception as exc:  # pylint: disable=broad-exception-caught  # the swap's failure is the one to report
            why = exc.msg if isinstance(exc, PgdrError) else str(exc)
            said = "undoing it failed too (%s): check %s and %s.pgdr-* by hand" % (why, self.pg_data, self.pg_data)
        return said

    def _start_and_wait(self):
        offset = log_size(self.server.server_log)
        action = self.options.recovery_target_action
        try:
            self.server.start(timeout=self.options.start_timeout)
        except PgdrError as exc:
            shut_down_at_target = action == "shutdown" and self.target[0] != "latest" and self.server.status() == "stopped"
            if not shut_down_at_target:
                text = log_tail(self.server.server_log, offset)
                # nothing logged: the server never ran (a log it could not create, a folder it cannot enter), so the
                # reason is in what pg_ctl or the service manager said
                line = telling_log_line(text) if text.strip() else (getattr(exc, "reason", None) or exc.msg)
                raise PgdrError("the restored cluster did not start: %s" % line, server_log=text, stderr=exc.details.get("stderr", "")) from exc
        if action == "shutdown" and self.target[0] != "latest":
            return self._wait_for_shutdown(offset)
        try:
            reached = wait_for_recovery(
                self.connect,
                self.target,
                action,
                bool(self.options.standby),
                self.options.recovery_timeout,
                alive=lambda: self.server.status() == "running",
            )
        except ServerStopped:
            text = log_tail(self.server.server_log, offset)
            raise PgdrError("the restored cluster stopped during recovery: %s" % telling_log_line(text), server_log=text) from None
        wrong = wrong_server_problem(reached, self.pg_data)
        if wrong:
            raise PgdrError(wrong)
        reached.pop("data_directory", None)
        expected = (self.manifest.get("source") or {}).get("system_identifier")
        if expected and reached["system_identifier"] != str(expected):
            raise PgdrError(
                "the restored cluster has system identifier %s, the backup's source %s; this is not the backed-up cluster"
                % (reached["system_identifier"], expected)
            )
        if reached["reached_lsn"] and lsn_to_int(reached["reached_lsn"]) < lsn_to_int(self.manifest["stop_lsn"]):
            raise PgdrError("recovery stopped at %s, before the end of the backup (%s)" % (reached["reached_lsn"], self.manifest["stop_lsn"]))
        short = archive_shortfall(self.target, reached, self.wal.newest if self.wal else None, bool(self.options.standby))
        if short:
            raise PgdrError(short)
        reached["state"] = "standby" if reached["in_recovery"] and not reached["paused"] else ("paused" if reached["paused"] else "promoted")
        # from the server log pg_ctl writes; None where the log goes elsewhere (journal, logging_collector)
        text = log_tail(self.server.server_log, offset, limit=50 * 1024 * 1024) if self.server.manager == "pg_ctl" else ""
        reached["wal_files_restored"] = restored_wal_files(text) if "redo" in text or "restored log file" in text else None
        return reached

    def _wait_for_shutdown(self, offset):
        deadline = time.monotonic() + self.options.recovery_timeout
        while self.server.status() == "running":
            if time.monotonic() > deadline:
                raise PgdrError("the restored cluster did not shut down at the recovery target within recovery_timeout")
            time.sleep(0.5)
        # The control file says how the server stopped wherever its log goes (pg_ctl's file, the journal, logging_collector).
        controldata = run([os.path.join(self.server.bin_dir, "pg_controldata"), "-D", self.pg_data], env=dict(os.environ, LC_ALL="C", LANGUAGE="C"))
        state = cluster_state(controldata.stdout)
        if state != SHUT_DOWN_IN_RECOVERY:
            text = log_tail(self.server.server_log, offset, limit=20000)
            why = telling_log_line(text) if text.strip() else "see the server log"
            raise PgdrError("the restored cluster stopped before reaching its target (pg_controldata: cluster state %s): %s" % (state or "unknown", why))
        return dict(in_recovery=True, paused=False, reached_lsn=None, reached_time=None, system_identifier=None, state="shut down at target")

    def _roll_back(self):
        with contextlib.suppress(Exception):
            self.server.stop(mode="immediate")
        remove_tree(self.pg_data)
        if self.previous_dir:
            os.rename(self.previous_dir, self.pg_data)
            if self.was_running:
                self.server.start(timeout=self.options.start_timeout)


class BaseSetRestore(PhysicalRestore):
    """A base backup set from a repository (a full backup, or an incremental chain combined with pg_combinebackup).

    ``options`` is a BaseSetRestoreOptions; ``tools`` maps pg_verifybackup and pg_combinebackup to their paths.
    """

    kind = "base"

    def __init__(self, options, server, manifest, connect, repo, tools, wal=None):
        super().__init__(options, server, manifest, connect, wal)
        self.repo = repo
        self.cluster_name = options.cluster
        self.tools = tools

    @classmethod
    def from_options(cls, options, conn_params, repo, manifest):
        """The restore of the set ``manifest`` (of ``options.cluster`` in ``repo``) as ``options`` ask; nothing is changed yet.

        ``conn_params`` (a ConnectionParams) reaches the restored server once it runs.
        """
        if manifest["kind"] != "base":
            raise PgdrError(
                "set %s is a %s backup; pg_data is only for base backups (drop pg_data to restore it logically)" % (manifest["backup_id"], manifest["kind"])
            )
        bin_dir = server_bin_dir(manifest, options.pg_bin_dir, options.pg_data)
        tools = {name: os.path.join(bin_dir, name) for name in ("pg_verifybackup", "pg_combinebackup")}
        server = Cluster.from_options(options, bin_dir, port=options.login_port, socket_dir=options.login_host)
        wal = wal_source(options.archive, options.cluster, options.os_user)
        return cls(options, server, manifest, lambda: conn_params.connect(autocommit=True), repo, tools, wal)

    def chain(self):
        return load_chain(self.repo, self.cluster_name, self.manifest)

    def _decryption(self):
        passphrase = self.options.encryption.passphrase if self.options.encryption else None
        return encryption.gpg_session(passphrase) if passphrase else contextlib.nullcontext()

    def plan(self):
        found = super().plan()
        if is_encrypted(found.chain):
            with self._decryption() as gpg:
                check_decryption(self.repo, self.cluster_name, found.chain, gpg)
            found.description["encrypted"] = True
        return found

    def prepare(self, plan, timings):
        started = time.monotonic()
        with self._decryption() as gpg:
            deploy(self.repo, self.cluster_name, plan.chain, self.new_dir, self.tools, self.options.os_user, self.options.tablespace_mapping, gpg)
        timings["deploy_seconds"] = round(time.monotonic() - started, 3)
        if self.options.verify:
            mark = time.monotonic()
            run([self.tools["pg_verifybackup"], "-n", "-q", self.new_dir])
            timings["verify_backup_seconds"] = round(time.monotonic() - mark, 3)
        drop_tablespace_map(self.new_dir)
        # no archive: "false", which also overrides a restore_command the backed-up cluster's own configuration carries
        restore_command = (self.wal.restore_command if self.wal else None) or ("false" if not self.options.standby else None)
        write_recovery(self.new_dir, recovery_settings(self.options, self.target, restore_command), plan.description["signal"], self.options.os_user)
