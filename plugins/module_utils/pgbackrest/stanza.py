# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What module pgbackrest_stanza runs, callable without Ansible.

``argument_spec()`` and ``ARGUMENT_RELATIONS`` are the module's options; ``options_from(params)`` types them once;
``run(options, check_mode, diff)`` converges the stanza's section of pgbackrest.conf and the stanza in the repository
(stanza-create when it is missing, stanza-upgrade after a PostgreSQL upgrade), or runs one action (check, backup,
expire, verify, info), and returns the module's result dict. Backups come back as catalog entries (info.entries).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import tempfile
from typing import Optional

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import commands as cmd
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import config as conf
from ansible_collections.pgdr.backup.plugins.module_utils.pgbackrest import info

DEFAULT_CONFIG = "/etc/pgbackrest/pgbackrest.conf"
ACTIONS = ("none", "check", "backup", "expire", "verify", "info")


def argument_spec():
    return dict(
        binary=dict(type="str", default="pgbackrest"),
        stanza=dict(type="str", required=True),
        config_file=dict(type="path", default=DEFAULT_CONFIG),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        pg_data=dict(type="path"),
        pg_port=dict(type="int"),
        pg_socket=dict(type="path"),
        repository=dict(type="dict", options=dict(
            type=dict(type="str", default="posix", choices=["posix", "s3"]),
            path=dict(type="str", required=True),
            bucket=dict(type="str"),
            endpoint=dict(type="str"),
            region=dict(type="str"),
            key=dict(type="str", no_log=True),
            secret=dict(type="str", no_log=True),
            verify_tls=dict(type="bool"),
            uri_style=dict(type="str", choices=["host", "path"]),
            cipher_pass=dict(type="str", no_log=True),
        )),
        retention=dict(type="dict", options=dict(full=dict(type="int"), diff=dict(type="int"))),
        compress_type=dict(type="str", choices=["none", "gz", "bz2", "lz4", "zst"]),
        compress_level=dict(type="int"),
        process_max=dict(type="int"),
        archive_async=dict(type="bool"),
        spool_path=dict(type="path"),
        log_path=dict(type="path"),
        action=dict(type="str", default="none", choices=list(ACTIONS)),
        backup_type=dict(type="str", default="full", choices=list(cmd.BACKUP_TYPES)),
    )


ARGUMENT_RELATIONS = dict()


@dataclasses.dataclass(frozen=True)
class RepositoryOptions:
    """repo1: a posix folder, or an S3 bucket (path is the folder inside it)."""

    type: str
    path: str
    bucket: Optional[str]
    endpoint: Optional[str]
    region: Optional[str]
    key: Optional[str]
    secret: Optional[str]
    verify_tls: Optional[bool]
    uri_style: Optional[str]
    cipher_pass: Optional[str]


@dataclasses.dataclass(frozen=True)
class RetentionOptions:
    full: Optional[int]
    diff: Optional[int]


@dataclasses.dataclass(frozen=True)
class StanzaSettings:
    """The settings the module manages in the stanza's section (None: not managed by this task)."""

    pg_data: Optional[str]
    pg_port: Optional[int]
    pg_socket: Optional[str]
    repository: Optional[RepositoryOptions]
    retention: Optional[RetentionOptions]
    compress_type: Optional[str]
    compress_level: Optional[int]
    process_max: Optional[int]
    archive_async: Optional[bool]
    spool_path: Optional[str]
    log_path: Optional[str]


@dataclasses.dataclass(frozen=True)
class StanzaOptions:
    """Which stanza, in which configuration file, through which binary: what every pgBackRest command of a task needs
    (a restore from a stanza takes the same)."""

    binary: str
    stanza: str
    config_file: str


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    stanza: StanzaOptions
    settings: StanzaSettings
    state: str
    action: str
    backup_type: str


def options_from(params):
    """The task's options, typed once."""
    return typed(TaskOptions, dict(params, stanza=params, settings=params))


# ---------------------------------------------------------------- the cluster on this host


def cluster_version(pg_data):
    """The major version in pg_data/PG_VERSION, None when pg_data is not given or not readable here."""
    try:
        with open(os.path.join(pg_data, "PG_VERSION")) as f:
            return f.read().strip()
    except (TypeError, OSError):
        return None


def cluster_system_id(pg_data):
    """The system identifier in pg_control (its first 8 bytes, little-endian), as text; None when unreadable."""
    try:
        with open(os.path.join(pg_data, "global", "pg_control"), "rb") as f:
            return str(struct.unpack("<Q", f.read(8))[0])
    except (TypeError, OSError, struct.error):
        return None


# ---------------------------------------------------------------- the configuration file


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise PgdrError("cannot read %s (%s): run the task as the user pgBackRest runs as (become_user: postgres), who must "
                        "own the file" % (path, exc.strerror)) from None


def write_text(path, text):
    """Write atomically, mode 0600 (the file may hold repository keys), keeping the old file's owner when run as root."""
    folder = os.path.dirname(path) or "."
    try:
        if not os.path.isdir(folder):
            os.mkdir(folder, 0o750)
        owner = os.stat(path) if os.path.exists(path) else None
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".pgbackrest.conf.")
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                if owner is not None and os.geteuid() == 0:
                    os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as exc:
        raise PgdrError("cannot write %s (%s): make its folder writable by the user the task runs as, or set config_file"
                        % (path, exc.strerror)) from None


# ---------------------------------------------------------------- run


def location(settings):
    """The repository as a location text (catalog entries' ``location``)."""
    if settings.get("repo1-type") == "s3":
        return "s3://%s%s" % (settings.get("repo1-s3-bucket"), settings.get("repo1-path", "/var/lib/pgbackrest"))
    return settings.get("repo1-path", "/var/lib/pgbackrest")


def run(options, check_mode, diff=False, tool=None):
    """The task's result dict; a PgdrError on failure. ``tool``: a Pgbackrest to use (tests), else one is made."""
    stanza = options.stanza
    conf.check_stanza_name(stanza.stanza)
    text = read_text(stanza.config_file)
    pg_data = options.settings.pg_data or (conf.section_settings(text, stanza.stanza) or {}).get("pg1-path")
    tool = tool or cmd.Pgbackrest(stanza.binary, pg_version=cluster_version(pg_data))  # the version names a refusal
    result = dict(changed=False, tool_version=tool.version, commands=tool.commands, config_file=stanza.config_file,
                  archive_command=cmd.archive_command(stanza.binary, stanza.config_file, stanza.stanza, DEFAULT_CONFIG))
    if check_mode:
        result["would_run"] = []
    if options.action != "none":
        managed = conf.desired_settings(options.settings)
        if managed:
            raise PgdrError("%s configure the stanza; set them in a task without action (action %s uses the configuration file)"
                            % (", ".join(sorted(managed)), options.action))
        if options.state != "present":
            raise PgdrError("state absent removes the stanza's section; it goes in a task without action")
        current = conf.section_settings(text, stanza.stanza)
        if current is None:
            raise PgdrError("stanza %s is not in %s; configure it first (state: present, pg_data, repository)" % (stanza.stanza, stanza.config_file))
        ACTION_RUNNERS[options.action](tool, stanza, current, result, check_mode, options)
        return result
    if options.state == "absent":
        remove(stanza, text, result, check_mode, diff)
        return result
    converge(tool, options, text, result, check_mode, diff)
    return result


def remove(stanza, text, result, check_mode, diff):
    before = conf.section_settings(text, stanza.stanza)
    if before is None:
        return
    result["changed"] = True
    if diff:
        result["diff"] = dict(before=conf.masked(before), after={})
    if not check_mode:
        write_text(stanza.config_file, conf.remove_section(text, stanza.stanza))


def converge(tool, options, text, result, check_mode, diff):
    stanza, settings = options.stanza, options.settings
    desired = conf.desired_settings(settings)
    before = conf.section_settings(text, stanza.stanza)
    if before is None and "pg1-path" not in desired:
        raise PgdrError("stanza %s is not in %s yet: pg_data is needed to add it" % (stanza.stanza, stanza.config_file))
    new_text = conf.render(text, stanza.stanza, desired, settings.repository is not None)
    after = conf.section_settings(new_text, stanza.stanza)
    changed_keys = conf.changed_keys(before, after)
    result.update(config_changes=list(changed_keys), settings=conf.masked(after))
    if diff:
        result["diff"] = dict(before=conf.masked(before, changed_keys) or {}, after=conf.masked(after, changed_keys))
    if changed_keys:
        result["changed"] = True
        # the stanza as the new file sees it, through a private 0600 copy, before the file changes: a refusal (another
        # cluster, an unreachable repository) leaves the file as it was
        folder = tempfile.mkdtemp(prefix="pgdr-pgbackrest-")
        try:
            copy = os.path.join(folder, "pgbackrest.conf")
            write_text(copy, new_text)
            step, item = plan_stanza(tool, dataclasses.replace(stanza, config_file=copy), settings)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not check_mode:
            write_text(stanza.config_file, new_text)
    else:
        step, item = plan_stanza(tool, stanza, settings)
    apply_stanza(tool, stanza, step, item, after, result, check_mode)


def read_info(tool, stanza):
    ran = tool.run(cmd.info_argv(stanza.binary, stanza.config_file, stanza.stanza))
    return info.parse(ran.stdout, stanza.stanza)


def record(tool, argv, result, check_mode):
    """Run a command that changes the repository, or in check mode say it would run."""
    result["changed"] = True
    if check_mode:
        result["would_run"].append(["pgbackrest"] + [a for a in argv[1:] if not a.startswith("--config=")])
        return None
    return tool.run(argv)


def plan_stanza(tool, stanza, cluster):
    """(step, info item): step "create" when the stanza is missing, "upgrade" when the cluster's PostgreSQL version is
    not the stanza's (after pg_upgrade), else None; another cluster at the same version is refused."""
    item = read_info(tool, stanza)
    if info.missing(item):
        return "create", item
    have = info.current_db(item)
    version, system_id = cluster_version(cluster.pg_data), cluster_system_id(cluster.pg_data)
    if have and version and have["version"] != version:
        return "upgrade", item
    if have and system_id and have["system_id"] != system_id:
        raise PgdrError(
            "stanza %s backs up the cluster with system identifier %s, but %s holds cluster %s (same PostgreSQL %s): a different "
            "cluster must not share a stanza; name another stanza" % (stanza.stanza, have["system_id"], cluster.pg_data, system_id, version))
    return None, item


def apply_stanza(tool, stanza, step, item, section, result, check_mode):
    result.update(stanza_created=step == "create", stanza_upgraded=step == "upgrade")
    if step:
        build = cmd.stanza_create_argv if step == "create" else cmd.stanza_upgrade_argv
        record(tool, build(stanza.binary, stanza.config_file, stanza.stanza), result, check_mode)
        if not check_mode:
            item = read_info(tool, stanza)
    describe(item, section, result)


def describe(item, settings, result):
    where = location(settings)
    result["stanza"] = info.summary(item, where)
    result["backups"] = info.entries(item, where)


# ---------------------------------------------------------------- actions


def require_stanza(tool, stanza):
    item = read_info(tool, stanza)
    if info.missing(item):
        raise PgdrError("stanza %s has not been created in its repository (%s); run the module with state: present first"
                        % (stanza.stanza, info.status(item)[1]))
    return item


def show(tool, stanza, settings, result, check_mode, options):
    describe(read_info(tool, stanza), settings, result)


def check(tool, stanza, settings, result, check_mode, options):
    require_stanza(tool, stanza)
    argv = cmd.check_argv(stanza.binary, stanza.config_file, stanza.stanza)
    if check_mode:  # check switches WAL to prove archiving: not in check mode
        result["would_run"].append(["pgbackrest"] + [a for a in argv[1:] if not a.startswith("--config=")])
    else:
        tool.run(argv)
    describe(read_info(tool, stanza), settings, result)


def backup(tool, stanza, settings, result, check_mode, options):
    before = info.entries(require_stanza(tool, stanza), location(settings))
    argv = cmd.backup_argv(stanza.binary, stanza.config_file, stanza.stanza, options.backup_type)
    if record(tool, argv, result, check_mode) is None:
        result["backups"] = before
        return
    describe(read_info(tool, stanza), settings, result)
    known = {entry["backup_id"] for entry in before}
    new = [entry for entry in result["backups"] if entry["backup_id"] not in known]
    if not new:
        raise PgdrError("pgbackrest backup exited 0 but info lists no new backup of stanza %s" % stanza.stanza)
    result["backup"] = new[-1]
    result["deleted"] = sorted(known - {entry["backup_id"] for entry in result["backups"]})  # backup runs expire after itself


def expire(tool, stanza, settings, result, check_mode, options):
    item = require_stanza(tool, stanza)
    before = info.entries(item, location(settings))
    if check_mode:
        ran = tool.run(cmd.expire_argv(stanza.binary, stanza.config_file, stanza.stanza, dry_run=True))
        doomed, wal = cmd.expired_by_dry_run(ran.stdout + ran.stderr)
        result.update(would_delete=doomed, would_remove_wal=wal, backups=before, changed=bool(doomed or wal))
        return
    tool.run(cmd.expire_argv(stanza.binary, stanza.config_file, stanza.stanza))
    after_item = read_info(tool, stanza)
    describe(after_item, settings, result)
    result["deleted"] = sorted({e["backup_id"] for e in before} - {e["backup_id"] for e in result["backups"]})
    result["changed"] = bool(result["deleted"]) or info.archive_ranges(item) != info.archive_ranges(after_item)


def verify(tool, stanza, settings, result, check_mode, options):
    require_stanza(tool, stanza)
    ran = tool.run(cmd.verify_argv(stanza.binary, stanza.config_file, stanza.stanza), check=False)
    report = [line.rstrip() for line in ran.stdout.splitlines() if line.strip()]
    result["verify"] = report
    if ran.returncodes[0] != 0:
        raise cmd.PgbackrestError(cmd.failure_message("verify", ran.returncodes[0], ran.stderr, tool.version, tool.pg_version),
                                  rc=ran.returncodes[0], verify=report, stderr=ran.stderr[-4000:])
    describe(read_info(tool, stanza), settings, result)


ACTION_RUNNERS = dict(info=show, check=check, backup=backup, expire=expire, verify=verify)
