# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stanza's settings in pgbackrest.conf: what the task asks for, the file as it is, the file as it will be.

Pure: text in, text out. The stanza's own section ``[<stanza>]`` holds every setting the module manages (pgBackRest
reads a global option from a stanza section too, so two stanzas of one file can have their own repositories);
``[global]`` and every other section are kept as they are, byte for byte. Within the section only the keys the task
gives change; keys it does not manage, comments and order stay. A task that gives ``repository`` owns the
``repo1-*`` keys: one it no longer gives (an S3 key after a move to posix) is removed.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

SECRET_KEYS = ("repo1-s3-key", "repo1-s3-key-secret", "repo1-cipher-pass")
MASK = "********"
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_STANZA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def yes_no(value):
    return None if value is None else ("y" if value else "n")


def check_stanza_name(name):
    """A stanza name pgBackRest takes as a section and a folder name (no ':' - that marks a command section)."""
    if not _STANZA_NAME.match(name) or name == "global":
        raise PgdrError("stanza %r is not a usable name: use letters, digits, '.', '_' or '-' (and not 'global')" % name)


def s3_endpoint(endpoint):
    """(host, port or None) of an S3 endpoint given as a host, host:port or https:// URL; pgBackRest speaks only HTTPS."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme != "https":
            raise PgdrError("repository.endpoint %s is %s: pgBackRest reaches S3 over HTTPS only; give an https:// endpoint "
                            "(repository.verify_tls: false for a self-signed certificate)" % (endpoint, parts.scheme))
        if parts.path not in ("", "/"):
            raise PgdrError("repository.endpoint %s has a path: give the host (and port) only; the folder goes in repository.path" % endpoint)
        return parts.hostname, parts.port
    host, port = endpoint.partition(":")[::2]
    if port and not port.isdigit():
        raise PgdrError("repository.endpoint %s: the port %r is not a number" % (endpoint, port))
    return host, (int(port) if port else None)


def repository_settings(repository):
    """The repo1-* keys of a RepositoryOptions (validated: a one-line error for what pgBackRest would refuse later)."""
    if not repository.path.startswith("/"):
        raise PgdrError("repository.path %s is not absolute: pgBackRest needs a path that starts with / (inside the bucket "
                        "for S3, e.g. /pgbackrest)" % repository.path)
    settings = {"repo1-type": repository.type, "repo1-path": repository.path}
    s3_only = dict(bucket=repository.bucket, endpoint=repository.endpoint, region=repository.region, key=repository.key,
                   secret=repository.secret, verify_tls=repository.verify_tls, uri_style=repository.uri_style)
    if repository.type == "posix":
        given = sorted(name for name, value in s3_only.items() if value is not None)
        if given:
            raise PgdrError("repository.%s go with type s3; a posix repository has a path only" % ", repository.".join(given))
    else:
        missing = [name for name in ("bucket", "endpoint", "region", "key", "secret") if s3_only[name] is None]
        if missing:
            raise PgdrError("an s3 repository needs repository.%s" % ", repository.".join(missing))
        host, port = s3_endpoint(repository.endpoint)
        settings.update({
            "repo1-s3-bucket": repository.bucket, "repo1-s3-endpoint": host, "repo1-s3-region": repository.region,
            "repo1-s3-key": repository.key, "repo1-s3-key-secret": repository.secret,
        })
        if port is not None:
            settings["repo1-storage-port"] = str(port)
        if repository.verify_tls is not None:
            settings["repo1-storage-verify-tls"] = yes_no(repository.verify_tls)
        if repository.uri_style is not None:
            settings["repo1-s3-uri-style"] = repository.uri_style
    if repository.cipher_pass is not None:
        settings.update({"repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": repository.cipher_pass})
    return settings


def desired_settings(options):
    """{key: text} of what a task with StanzaSettings ``options`` manages in the stanza's section (None values left out)."""
    if options.pg_data is not None and not options.pg_data.startswith("/"):
        raise PgdrError("pg_data %s is not absolute: give the cluster's data directory as a full path" % options.pg_data)
    settings = {
        "pg1-path": options.pg_data,
        "pg1-port": None if options.pg_port is None else str(options.pg_port),
        "pg1-socket-path": options.pg_socket,
        "compress-type": options.compress_type,
        "compress-level": None if options.compress_level is None else str(options.compress_level),
        "process-max": None if options.process_max is None else str(options.process_max),
        "archive-async": yes_no(options.archive_async),
        "spool-path": options.spool_path,
        "log-path": options.log_path,
    }
    if options.archive_async and not options.spool_path:
        raise PgdrError("archive_async needs spool_path: the folder where pgBackRest queues WAL between PostgreSQL and the repository")
    if options.retention is not None:
        settings["repo1-retention-full"] = None if options.retention.full is None else str(options.retention.full)
        settings["repo1-retention-diff"] = None if options.retention.diff is None else str(options.retention.diff)
    if options.repository is not None:
        settings.update(repository_settings(options.repository))
    return {key: value for key, value in settings.items() if value is not None}


# ---------------------------------------------------------------- the file


def parse(text):
    """[(section or None, [lines])]: the file cut at its section headers, lines as they are (without newlines)."""
    parts = [(None, [])]
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            parts.append((match.group(1).strip(), [line]))
        else:
            parts[-1][1].append(line)
    return parts


def _key_value(line):
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None, None
    key, value = stripped.partition("=")[::2]
    return key.strip(), value.strip()


def section_settings(text, section):
    """{key: value} of one section (the last value of a key given twice, as pgBackRest reads it), None if absent."""
    found = None
    for name, lines in parse(text):
        if name == section:
            found = {} if found is None else found
            for line in lines[1:]:
                key, value = _key_value(line)
                if key is not None:
                    found[key] = value
    return found


def render(text, stanza, desired, owns_repository):
    """The file's new text with ``desired`` in the section ``[stanza]`` (added at the end if missing)."""
    parts = parse(text)
    names = [part[0] for part in parts]
    if stanza not in names:
        parts.append((stanza, ["[%s]" % stanza]))
    out, done = [], set()
    for name, lines in parts:
        if name != stanza:
            out.extend(lines)
            continue
        kept = [lines[0]]
        for line in lines[1:]:
            key = _key_value(line)[0]
            if key in desired:
                if key not in done:
                    kept.append("%s=%s" % (key, desired[key]))
                    done.add(key)
            elif key is not None and owns_repository and key.startswith("repo1-") and not key.startswith("repo1-retention"):
                continue
            else:
                kept.append(line)
        while len(kept) > 1 and not kept[-1].strip():  # new keys go after the last setting
            kept.pop()
        kept.extend("%s=%s" % (key, desired[key]) for key in desired if key not in done)
        done.update(desired)
        out.extend(kept + [""])
    return _tidy(out)


def remove_section(text, stanza):
    """The file without ``[stanza]`` and its command sections ``[stanza:archive-push]`` etc."""
    out = []
    for name, lines in parse(text):
        if name is not None and (name == stanza or name.startswith(stanza + ":")):
            continue
        out.extend(lines)
    return _tidy(out)


def _tidy(lines):
    # at most one blank line before a section, none at the end
    text = "\n".join(lines).strip("\n")
    return (re.sub(r"\n{3,}(?=\[)", "\n\n", text) + "\n") if text else ""


def masked(settings, changed=()):
    """A section's settings for output, secrets replaced; a secret among ``changed`` says so instead of showing either value."""
    if settings is None:
        return None
    return {key: ((MASK + " (changed)" if key in changed else MASK) if key in SECRET_KEYS else value) for key, value in sorted(settings.items())}


def changed_keys(before, after):
    """The keys whose value differs (secrets included: compared, never shown)."""
    before, after = before or {}, after or {}
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
