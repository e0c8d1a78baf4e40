# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The main() every pgdr.backup module shares: parse arguments, run, turn PgdrError into fail_json."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError


def run_module(argument_spec, run, needs_psycopg=True, **relations):
    """``run(module)`` returns the result dict; a PgdrError becomes one clear failure, never a traceback.

    ``needs_psycopg=False`` for a module that never connects to PostgreSQL (backup_catalog runs on backup hosts).

    ``relations``: AnsibleModule's mutually_exclusive, required_if, required_one_of, required_together,
    required_by, declared so that ansible-doc shows them and Ansible checks them before ``run``.
    """
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **relations)
    empty = empty_options(argument_spec, module.params)
    if empty:
        module.fail_json(msg=empty_message(empty))
    null_means_default(argument_spec, module.params)
    if needs_psycopg and not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(PSYCOPG_IMPORT_ERROR))
    try:
        result = run(module)
    except PgdrError as exc:
        module.fail_json(**exc.fail_json_kwargs())
    module.exit_json(**result)


def empty_options(argument_spec, params, parent=""):
    """The options given as an empty string (or an empty list, or a list holding one) that are not so by default.

    A playbook variable that came out empty must not pass for "not given": ``database: ''`` would otherwise dump
    ``postgres``, ``cluster: ''`` take the host name. An empty value is allowed only where it is the default
    (``repository.prefix``), because there it means exactly what leaving the option out means.
    """
    found = []
    for name, spec in argument_spec.items():
        value, label, default = params.get(name), parent + name, spec.get("default")
        if value == "" and default != "" and spec.get("type", "str") in ("str", "path", "raw"):
            found.append(label)
        elif isinstance(value, list):
            if not value and default is None:
                found.append(label)
            for index, item in enumerate(value):
                if item == "":
                    found.append("%s[%d]" % (label, index))
                elif spec.get("options") and isinstance(item, dict):
                    found.extend(empty_options(spec["options"], item, "%s[%d]." % (label, index)))
        elif spec.get("options") and isinstance(value, dict):
            found.extend(empty_options(spec["options"], value, label + "."))
    return found


def empty_message(empty):
    others = " (and %s more: %s)" % (len(empty) - 1, ", ".join(empty[1:4]) + (", ..." if len(empty) > 4 else "")) if len(empty) > 1 else ""
    return ("option %s is empty%s: give it a value, or leave it out (for a variable that may be empty: default(omit))"
            % (empty[0], others))


def null_means_default(argument_spec, params):
    """An option given as null (``key: ~``, a variable that came out None) takes its default, as if left out.

    Ansible keeps an explicit null even where the spec has a default; the code behind typed options relies on
    the spec's defaults having been applied, so a null would reach it as a value nobody chose.
    """
    for name, spec in argument_spec.items():
        value = params.get(name)
        if value is None and spec.get("default") is not None:
            params[name] = spec["default"]
        elif spec.get("options") and isinstance(value, dict):
            null_means_default(spec["options"], value)
        elif spec.get("options") and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    null_means_default(spec["options"], item)
