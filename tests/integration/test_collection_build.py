"""The Galaxy tarball installs and works the same as the checkout, and carries the execution environment's files."""

import os
import subprocess
import sys

import pytest
import yaml

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The collection built from the checkout and installed; returns the collections folder."""
    tmp_path = tmp_path_factory.mktemp("build")
    dist, installed = tmp_path / "dist", tmp_path / "collections"
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(dist), PROJECT_DIR],
                   check=True, capture_output=True)
    (tarball,) = dist.glob("pgdr-backup-*.tar.gz")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--force", "-p", str(installed), str(tarball)],
                   check=True, capture_output=True)
    return installed


def test_built_tarball_installs_and_runs_role_grants(lab, installed):
    module = installed / "ansible_collections" / "pgdr" / "backup" / "plugins" / "modules" / "role_grants.py"
    assert module.is_file()
    assert not (installed / "ansible_collections" / "pgdr" / "backup" / ".lab").exists()

    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed), ANSIBLE_CONFIG=os.path.join(PROJECT_DIR, "ansible.cfg"))
    env.pop("ANSIBLE_COLLECTIONS_PATHS", None)
    doc = subprocess.run([os.path.join(BIN, "ansible-doc"), "pgdr.backup.role_grants"], env=env,
                         capture_output=True, text=True, check=False)
    assert doc.returncode == 0, doc.stderr
    assert str(installed) in doc.stdout

    adhoc = subprocess.run(
        [os.path.join(BIN, "ansible"), "primary18", "-i", str(lab.inventory_path), "-m", "pgdr.backup.role_grants",
         "-a", "name=postgres state=check databases=postgres", "-b", "--become-user", "postgres",
         "--become-method", "ansible.builtin.su"],
        env=env, capture_output=True, text=True, check=False)
    assert adhoc.returncode == 0, adhoc.stdout + adhoc.stderr
    assert "checked_as: on_behalf" in adhoc.stdout


def test_built_collection_carries_the_execution_environment_and_no_build_junk(installed):
    root = installed / "ansible_collections" / "pgdr" / "backup"
    for name in ("execution-environment.yml", "ee-requirements.txt", "ee-bindep.txt"):
        assert (root / "meta" / name).is_file(), name
    shipped = {str(path.relative_to(root)) for path in root.rglob("*")}
    top_level_junk = ("requirements.txt", "requirements.in", "Makefile", ".ci", "bench", ".venv", ".lab", ".build", "context",
                      "pyproject.toml", "ansible.cfg")
    junk = [p for p in shipped if p.split(os.sep)[0] in top_level_junk or "__pycache__" in p or p.endswith(".pyc")]
    assert junk == []

    # what ansible-builder reads when this collection is installed into an execution environment
    intro = subprocess.run([os.path.join(BIN, "ansible-builder"), "introspect", "--sanitize", str(installed)],
                           capture_output=True, text=True, check=False)
    assert intro.returncode == 0, intro.stdout + intro.stderr
    data = yaml.safe_load(intro.stdout[intro.stdout.index("---"):])
    assert sorted(line.split()[0] for line in data["python"]) == ["boto3>=1.26", "paramiko>=2.7", "psycopg[binary]>=3.1"]
    assert "gnupg [platform:dpkg]  # from collection pgdr.backup" in data["system"]
