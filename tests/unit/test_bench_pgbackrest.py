"""bench/pgbackrest.py's pure parts: the configuration text and the throwaway certificates its TLS transport uses."""

import subprocess
from types import SimpleNamespace

from bench.pgbackrest import config_text, make_certificates


def test_config_text_keeps_repeated_options_in_order():
    text = config_text({"global": [("tls-server-auth", "primary15=bench"), ("tls-server-auth", "replica15=bench"), ("process-max", 2)],
                        "bench": [("pg1-path", "/var/lib/postgresql/15/main")]})
    assert text == ("[global]\ntls-server-auth=primary15=bench\ntls-server-auth=replica15=bench\nprocess-max=2\n\n"
                    "[bench]\npg1-path=/var/lib/postgresql/15/main\n")


def test_certificates_verify_against_their_ca_for_the_host_name_and_address(tmp_path):
    hosts = [SimpleNamespace(name="backup1", address="10.1.2.3"), SimpleNamespace(name="primary15", address="10.1.2.4")]
    pem = make_certificates(hosts)
    assert sorted(pem) == ["backup1.crt", "backup1.key", "ca.crt", "primary15.crt", "primary15.key"]
    for name, text in pem.items():
        (tmp_path / name).write_text(text)
    for host in hosts:
        for check in (["-verify_hostname", host.name], ["-verify_ip", host.address]):
            for purpose in ("sslserver", "sslclient"):  # each host's certificate serves both ends of pgBackRest's TLS
                done = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "-purpose", purpose, *check, host.name + ".crt"],
                                      cwd=tmp_path, capture_output=True, text=True, check=False)
                assert done.returncode == 0, done.stdout + done.stderr
    # a certificate does not pass for another host's name
    done = subprocess.run(["openssl", "verify", "-CAfile", "ca.crt", "-verify_hostname", "primary15", "backup1.crt"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode != 0
