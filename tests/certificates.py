"""Throwaway TLS certificates for the HTTP tests, made with the ``openssl`` command (Debian's
``openssl`` package; the Makefile's test-deps installs it): a CA, a server certificate for
127.0.0.1/localhost and a client certificate, all signed by that CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

from under_ci import unavailable


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> Dict[str, Path]:
    """ca.pem, server.pem/server.key, client.pem/client.key in ``directory``."""
    if shutil.which("openssl") is None:
        unavailable("the openssl command is not installed (apt-get install openssl; make test-deps does)")
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", "/CN=taskstats-test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                            ("client", "subjectAltName=DNS:scraper.test\nextendedKeyUsage=clientAuth")):
        (directory / f"{name}.ext").write_text(extension + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", f"/CN=taskstats-test-{name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)
    return {name: directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}
