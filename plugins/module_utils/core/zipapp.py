# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-side programs (``pgdr-wal``, ``pgdr-backup``) as Python zipapps built from this collection's own source, and
the careful file writes that install them and their 0600 settings.

A program runs where Ansible does not (the archiver, a systemd timer, cron), so it is packed with exactly the
module_utils it imports, read through the module loader (so building works from inside an AnsiballZ zip) and
never imported while building (reading ``storage/s3.py`` must not load boto3 into the module). The same sources
give the same bytes, so reinstalling an unchanged program changes nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import stat
import sys
import zipfile

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError

PACKAGE = "ansible_collections.pgdr.backup.plugins.module_utils"
PROGRAM_DIR = "/usr/local/lib/pgdr"  # root:root 0755, where every program is installed


def source(module_name):
    """Source text of one of our module_utils (dotted below PACKAGE), from a plain file or AnsiballZ's zip, without importing it."""
    full = "%s.%s" % (PACKAGE, module_name)
    spec = importlib.util.find_spec(full)
    if spec is None:
        raise PgdrError("cannot build a pgdr program: %s is not importable here" % full)
    text = None
    if spec.loader is not None and hasattr(spec.loader, "get_source"):
        try:
            text = spec.loader.get_source(full)
        except (ImportError, OSError):
            text = None
    if text is None:
        with open(spec.origin, encoding="utf-8") as handle:
            text = handle.read()
    return text


def imported_module_utils(text):
    """The module_utils (dotted below PACKAGE) a source imports, at any depth of the file (a function's import too)."""
    found = set()
    prefix = PACKAGE + "."
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            base = node.module[len(prefix):]
            if _is_package(base):  # "from ...core import encryption" imports modules of a package
                found.update("%s.%s" % (base, alias.name) for alias in node.names)
            else:  # "from ...core.errors import PgdrError" imports names of a module
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name[len(prefix):] for alias in node.names if alias.name.startswith(prefix))
    return found


def _is_package(name):
    spec = importlib.util.find_spec("%s.%s" % (PACKAGE, name))
    if spec is None:
        raise PgdrError("cannot build a pgdr program: %s.%s is not importable here" % (PACKAGE, name))
    return spec.submodule_search_locations is not None


def closure(roots):
    """Every module_utils the modules ``roots`` import, transitively, roots included (sorted, dotted below PACKAGE)."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_module_utils(source(name)) - seen)
    return sorted(seen)


def build(sources, main, python=None):
    """A zipapp as bytes: ``sources`` (dotted below PACKAGE) and ``main`` (the text of __main__.py)."""
    python = python or sys.executable or "/usr/bin/python3"
    buf = io.BytesIO()
    # -I: ignore PYTHON* variables and the user's site-packages; the environment of a timer or an archiver is not ours to trust
    buf.write(("#!%s -I\n" % python).encode())
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:

        def add(name, text):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text)

        add("__main__.py", main)
        packages = set()
        for module_name in sources:
            parts = ("%s.%s" % (PACKAGE, module_name)).split(".")
            packages.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        for package in sorted(packages):
            add(package + "/__init__.py", "")
        for module_name in sources:
            add("%s.py" % ("%s.%s" % (PACKAGE, module_name)).replace(".", "/"), source(module_name))
    return buf.getvalue()


# --- installing -----------------------------------------------------------------------------------


def owner_ids(user):
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PgdrError("OS user %s does not exist on this host; set os_user to the user that runs PostgreSQL" % user) from None
    return entry.pw_uid, entry.pw_gid


def readable_by(path, uid, gid):
    """Whether ``uid`` can read ``path`` (mode bits; root can read anything)."""
    if uid == 0:
        return True
    try:
        found = os.stat(path)
    except OSError:
        return False
    mode = found.st_mode
    if found.st_uid == uid:
        return bool(mode & stat.S_IRUSR)
    if found.st_gid == gid:
        return bool(mode & stat.S_IRGRP)
    return bool(mode & stat.S_IROTH)


def writable_by(path, uid, gid):
    """Whether ``uid`` can create files in the folder ``path``: its mode bits, or a POSIX ACL on it (then trusted, not
    evaluated: an admin who set one meant it)."""
    if uid == 0:
        return True
    found = os.stat(path)
    if found.st_uid == uid:
        allowed = found.st_mode & stat.S_IWUSR and found.st_mode & stat.S_IXUSR
    elif found.st_gid == gid:
        allowed = found.st_mode & stat.S_IWGRP and found.st_mode & stat.S_IXGRP
    else:
        allowed = found.st_mode & stat.S_IWOTH and found.st_mode & stat.S_IXOTH
    if allowed:
        return True
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False


def ensure_dir(path, mode, uid, gid, check_mode):
    """Make the folder (and missing parents, root's 0755) unless it exists; True if it was (or would be) made."""
    if os.path.isdir(path):
        return False
    if not check_mode:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            ensure_dir(parent, 0o755, 0, 0, check_mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            return False  # another run (a second task on this host) made it just now
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
    return True


def install_file(path, data, mode, uid, gid, check_mode):
    """Write ``data`` atomically unless the file already holds it with this mode and owner; True if it changed.

    Lab hosts (and hosts sharing /usr/local over NFS) may install the same program at once: a temporary file and
    a rename, so nobody ever runs a half-written one.
    """
    try:
        found = os.stat(path)
        with open(path, "rb") as handle:
            same = handle.read() == data
        owner_ok = os.geteuid() != 0 or (found.st_uid, found.st_gid) == (uid, gid)
        if same and stat.S_IMODE(found.st_mode) == mode and owner_ok:
            return False
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    temp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if os.geteuid() == 0:
            os.chown(temp, uid, gid)
        os.chmod(temp, mode)
        os.rename(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return True


def remove_file(path, check_mode):
    """Remove a file if it is there; True if it was (or would be) removed."""
    if not os.path.lexists(path):
        return False
    if not check_mode:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
    return True
