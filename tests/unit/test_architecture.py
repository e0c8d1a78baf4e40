"""The layers of plugins/module_utils, as docs/architecture.md declares them, are the layers of the code."""

from __future__ import annotations

import ast
import os
import re

import pytest

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_UTILS = os.path.join(PROJECT, "plugins", "module_utils")
MODULES = os.path.join(PROJECT, "plugins", "modules")
PACKAGE = "ansible_collections.pgdr.backup.plugins"


def allowed_imports():
    """{layer: set of layers it may import}, read from the table under '## The rule' in docs/architecture.md."""
    with open(os.path.join(PROJECT, "docs", "architecture.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## The rule", 1)[1].split("\n## ", 1)[0]
    table = {}
    for layer, allowed in re.findall(r"^\| (\w+) \| ([\w, ]+) \|$", section, re.M):
        if layer != "layer":  # the header row
            table[layer] = {name.strip() for name in allowed.split(",")}
    return table


def imported_names(path):
    """Every module name a file imports, at any depth (AnsiballZ ships function-level imports too)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += ["%s.%s" % (node.module, alias.name) for alias in node.names]
    return names


def python_files(folder):
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def layer_of(name):
    """The layer an import names ('...module_utils.core.errors' -> 'core'), or None for anything else."""
    prefix = PACKAGE + ".module_utils."
    if not name.startswith(prefix):
        return None
    return name[len(prefix):].split(".")[0]


def test_the_doc_declares_every_layer_and_only_existing_ones():
    layers = {entry for entry in os.listdir(MODULE_UTILS) if os.path.isdir(os.path.join(MODULE_UTILS, entry)) and entry != "__pycache__"}
    assert set(allowed_imports()) == layers


def test_module_utils_holds_only_layers():
    loose = [entry for entry in os.listdir(MODULE_UTILS) if entry.endswith(".py") and entry != "__init__.py"]
    assert loose == [], "module_utils files outside a layer: %s" % loose


@pytest.mark.parametrize("layer", sorted(allowed_imports()))
def test_a_layer_imports_only_what_the_doc_allows(layer):
    allowed = allowed_imports()[layer] | {layer}
    wrong = []
    for path in python_files(os.path.join(MODULE_UTILS, layer)):
        for name in imported_names(path):
            if name.startswith(PACKAGE + ".modules"):
                wrong.append("%s imports the module %s" % (os.path.relpath(path, PROJECT), name))
            target = layer_of(name)
            if target is not None and target not in allowed:
                wrong.append("%s imports %s (layer %s may import %s)" % (os.path.relpath(path, PROJECT), name, layer, ", ".join(sorted(allowed))))
    assert wrong == []


def test_no_module_imports_another_module():
    wrong = []
    for path in python_files(MODULES):
        wrong += ["%s imports %s" % (os.path.basename(path), name) for name in imported_names(path) if name.startswith(PACKAGE + ".modules")]
    assert wrong == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # the walk must find imports inside functions too, or a lazy upward import would pass unseen
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from %s.module_utils.physical import restore\n" % PACKAGE)
    assert layer_of(imported_names(str(path))[0]) == "physical"


def reads_of_module_params(path):
    """Lines where code reads Ansible's params: ``module.params``, ``self.p``, or ``p[...]`` / ``p.get(...)``."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in (("module", "params"), ("self", "p"), ("p", "get")):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "p":
            lines.append(node.lineno)
    return sorted(set(lines))


# the boundary: the one main() that builds the AnsibleModule, and typed() that turns its params into options
PARAMS_BOUNDARY = {os.path.join("core", "module_runner.py"), os.path.join("core", "options.py")}


def test_module_utils_receive_typed_options_not_the_params_mapping():
    """Only the boundary sees Ansible's params; everything else gets option objects."""
    wrong = []
    for path in python_files(MODULE_UTILS):
        if os.path.relpath(path, MODULE_UTILS) in PARAMS_BOUNDARY:
            continue
        wrong += ["%s:%d" % (os.path.relpath(path, PROJECT), line) for line in reads_of_module_params(path)]
    assert wrong == []


def test_the_params_check_sees_a_params_read(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f(module, p):\n    return module.params, p['a'], p.get('b')\n")
    assert reads_of_module_params(str(path)) == [2]
