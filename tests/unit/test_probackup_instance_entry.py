"""module_utils.probackup.instance: what probackup_instance runs, called as pgdr-backup calls it (typed options, check_mode).

Runs the pg_probackup stand-in (tests/probackup_standin/), so no lab is needed.
"""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.errors import PgdrError
from ansible_collections.pgdr.backup.plugins.module_utils.probackup import instance
from ansible_collections.pgdr.backup.plugins.modules import probackup_instance
from tests.unit.test_probackup import catalog, standin_binary  # noqa: F401 pylint: disable=unused-import

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# imports the given modules with every ansible.* import refused, then lists what of ansible got loaded anyway
_NO_ANSIBLE = """
import importlib, importlib.abc, sys
sys.path.insert(0, sys.argv[1])
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ansible" or name.startswith("ansible."):
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
for name in sys.argv[2:]:
    importlib.import_module(name)
print(sorted(n for n in sys.modules if n == "ansible" or n.startswith("ansible.")))
"""


def import_without_ansible(*names):
    """Import ``names`` in a fresh interpreter where ``ansible`` cannot be imported: (returncode, stdout, stderr)."""
    collections = os.path.join(PROJECT, ".collections")
    done = subprocess.run([sys.executable, "-c", _NO_ANSIBLE, collections, *names], capture_output=True, text=True, check=False)
    return done.returncode, done.stdout.strip(), done.stderr


def test_the_refusing_import_check_sees_an_ansible_import():
    rc, _out, err = import_without_ansible("ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner")
    assert rc != 0 and "refused: ansible" in err


def test_instance_imports_nothing_from_ansible():
    assert import_without_ansible("ansible_collections.pgdr.backup.plugins.module_utils.probackup.instance") == (0, "[]", "")


def params(**given):
    """The params Ansible gives the module for ``given`` (spec defaults applied, relations checked)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    validated = ArgumentSpecValidator(instance.argument_spec(), **instance.ARGUMENT_RELATIONS).validate(given)
    assert validated.error_messages == []
    return validated.validated_parameters


def config_file(root):
    with open(root / "backups" / "main" / "pg_probackup.conf") as f:
        return f.read()


def test_state_present_in_check_mode_records_set_config_and_changes_nothing(catalog, standin_binary):  # noqa: F811
    before = config_file(catalog)
    options = instance.options_from(params(binary=standin_binary, backup_path=str(catalog), instance="main", retention_redundancy=3))
    assert isinstance(options, instance.InstanceOptions)
    result = instance.run(options, check_mode=True)
    assert result["changed"] is True and result["catalog_created"] is False and result["instance_added"] is False
    assert result["config_changes"] == {"retention-redundancy": "3"}
    assert result["would_run"] == [["pg_probackup", "set-config", "-B", str(catalog), "--instance=main", "--retention-redundancy=3"]]
    assert "diff" not in result and "config" not in result
    assert config_file(catalog) == before


def test_state_present_converges_then_changes_nothing_and_diff_only_when_asked(catalog, standin_binary):  # noqa: F811
    options = instance.options_from(params(binary=standin_binary, backup_path=str(catalog), instance="main", retention_redundancy=3))
    done = instance.run(options, check_mode=False, diff=True)
    assert done["changed"] is True and "would_run" not in done
    assert done["diff"]["before"]["retention-redundancy"] == "2" and done["diff"]["after"]["retention-redundancy"] == "3"
    assert done["config"]["retention-redundancy"] == 3 and "retention-redundancy = 3\n" in config_file(catalog)
    again = instance.run(options, check_mode=False)
    assert again["changed"] is False and again["config_changes"] == {} and "diff" not in again


@pytest.mark.parametrize("deprecate", [None, "recorded"], ids=["no-one-to-tell", "told"])
def test_a_legacy_target_runs_without_a_deprecate_callable_and_tells_one_when_given(catalog, standin_binary, deprecate):  # noqa: F811
    told = []
    legacy = params(binary=standin_binary, backup_path=str(catalog), instance="main", action="validate", recovery_target=dict(kind="xid", value=727))
    flat = params(binary=standin_binary, backup_path=str(catalog), instance="main", action="validate", recovery_target_xid="727")
    callback = (lambda msg, **kw: told.append(dict(kw, msg=msg))) if deprecate else None
    legacy_run = instance.run(instance.options_from(legacy), check_mode=True, deprecate=callback)
    assert legacy_run["would_run"] == instance.run(instance.options_from(flat), check_mode=True)["would_run"]
    assert legacy_run["would_run"][0][-1] == "--recovery-target-xid=727"
    if deprecate:
        assert [(t["version"], t["collection_name"]) for t in told] == [("1.0.0", "pgdr.backup")]
        assert told[0]["msg"].startswith("recovery_target as a {kind, value} dict is deprecated; ")
    else:
        assert told == []


def test_a_malformed_legacy_target_is_refused_even_with_no_one_to_tell(catalog):  # noqa: F811
    options = instance.options_from(params(binary="/nonexistent/pg_probackup", backup_path=str(catalog), action="show", recovery_target=dict(kind="soon")))
    with pytest.raises(PgdrError, match="recovery_target kind 'soon'"):
        instance.run(options, check_mode=False)


class _Module:
    """What the module's run reads of an AnsibleModule."""

    def __init__(self, given, check_mode, diff):
        self.params, self.check_mode, self._diff, self.deprecations = params(**given), check_mode, diff, []

    def deprecate(self, msg, **kw):
        self.deprecations.append(msg)


@pytest.mark.parametrize("check_mode, diff", [(True, False), (False, True)])
def test_the_module_passes_check_mode_and_diff_through(catalog, standin_binary, check_mode, diff):  # noqa: F811
    module = _Module(dict(binary=standin_binary, backup_path=str(catalog), instance="main", retention_window=9), check_mode, diff)
    result = probackup_instance.run(module)
    assert ("would_run" in result) is check_mode and ("diff" in result) is diff
    assert ("retention-window = 9\n" in config_file(catalog)) is not check_mode
    assert probackup_instance.argument_spec() == instance.argument_spec()


def test_the_module_passes_deprecate_through(catalog, standin_binary):  # noqa: F811
    module = _Module(dict(binary=standin_binary, backup_path=str(catalog), instance="main", action="validate", recovery_target=dict(kind="immediate")),
                     True, False)
    probackup_instance.run(module)
    assert len(module.deprecations) == 1 and "deprecated" in module.deprecations[0]


def test_main_runs_the_entry_point_with_its_check_mode_and_deprecations(catalog, standin_binary, monkeypatch, capsys):  # noqa: F811
    from tests.unit.test_catalog_actions import run_main

    before = config_file(catalog)
    args = dict(binary=standin_binary, backup_path=str(catalog), instance="main", action="validate", recovery_target=dict(kind="immediate"))
    checked = run_main(monkeypatch, capsys, probackup_instance.main, dict(args, _ansible_check_mode=True))
    assert checked["would_run"] == [["pg_probackup", "validate", "-B", str(catalog), "--instance=main", "--recovery-target=immediate"]]
    told = json.dumps(checked["deprecations"])  # its shape is ansible-core's: only what it says and the version are ours
    assert "recovery_target as a {kind, value} dict is deprecated; " in told and '"version": "1.0.0"' in told
    refused = run_main(monkeypatch, capsys, probackup_instance.main, dict(args, action="pin", recovery_target=None))
    assert refused["failed"] is True and "action is pin but all of the following are missing: backup_id" in refused["msg"]
    assert config_file(catalog) == before
