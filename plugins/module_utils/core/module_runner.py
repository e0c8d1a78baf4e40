# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The main() every pgdr.backup module shares: parse arguments, run, turn PgdrError into fail_json."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.pgdr.backup.plugins.module_utils.core.connection import HAS_PSYCOPG, PSYCOPG_IMPORT_ERROR
from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError


def run_module(argument_spec, run, **relations):
    """``run(module)`` returns the result dict; a PgdrError becomes one clear failure, never a traceback.

    ``relations``: AnsibleModule's mutually_exclusive, required_if, required_one_of, required_together,
    required_by, declared so that ansible-doc shows them and Ansible checks them before ``run``.
    """
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **relations)
    null_means_default(argument_spec, module.params)
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg"), exception=str(PSYCOPG_IMPORT_ERROR))
    try:
        result = run(module)
    except PgdrError as exc:
        module.fail_json(**exc.fail_json_kwargs())
    module.exit_json(**result)


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
