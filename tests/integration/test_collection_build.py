"""The Galaxy tarball installs and works the same as the checkout."""

import os
import subprocess
import sys

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BIN = os.path.dirname(sys.executable)


def test_built_tarball_installs_and_runs_role_grants(lab, tmp_path):
    dist, installed = tmp_path / "dist", tmp_path / "collections"
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(dist), PROJECT_DIR],
                   check=True, capture_output=True)
    (tarball,) = dist.glob("pgdr-backup-*.tar.gz")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--force", "-p", str(installed), str(tarball)],
                   check=True, capture_output=True)
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
