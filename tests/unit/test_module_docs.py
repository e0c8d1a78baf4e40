"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse, and every option is documented (sanity catches
this too, minutes later; this catches it in a second)."""

import importlib
import os

import pytest
import yaml

MODULES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "modules")
MODULES = sorted(name[:-3] for name in os.listdir(MODULES_DIR) if name.endswith(".py") and not name.startswith("_"))
FRAGMENTS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "doc_fragments")
# every doc fragment of the collection, by the name modules extend it with
FRAGMENTS = {
    "pgdr.backup." + name[:-3]: importlib.import_module("ansible_collections.pgdr.backup.plugins.doc_fragments." + name[:-3]).ModuleDocFragment.DOCUMENTATION
    for name in sorted(os.listdir(FRAGMENTS_DIR))
    if name.endswith(".py") and not name.startswith("_")
}


def documented_options(module):
    docs = yaml.safe_load(module.DOCUMENTATION)
    options = {}
    for fragment in docs.get("extends_documentation_fragment") or []:
        options.update(yaml.safe_load(FRAGMENTS[fragment])["options"])
    for name, doc in (docs.get("options") or {}).items():
        options[name] = dict(options.get(name, {}), **doc)  # as Ansible merges a fragment: the module's own keys win
    return options


def compare(spec, options, where):
    problems = []
    for name, arg in spec.items():
        doc = options.get(name)
        if doc is None:
            problems.append("%s%s is not documented" % (where, name))
            continue
        if arg.get("type", "str") != doc.get("type", "str"):
            problems.append("%s%s: type %s in the spec, %s in the docs" % (where, name, arg.get("type", "str"), doc.get("type", "str")))
        if "options" in arg:
            problems += compare(arg["options"], doc.get("suboptions") or {}, "%s%s." % (where, name))
    problems += ["%s%s is documented but not in the spec" % (where, name) for name in options if name not in spec]
    return problems


@pytest.mark.parametrize("name", MODULES)
def test_docs_parse_and_cover_the_argument_spec(name):
    module = importlib.import_module("ansible_collections.pgdr.backup.plugins.modules.%s" % name)
    yaml.safe_load(module.EXAMPLES)
    yaml.safe_load(module.RETURN)
    assert compare(module.argument_spec(), documented_options(module), "") == []
