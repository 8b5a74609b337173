"""``--web-config``: the exporter-toolkit format, key by key and error by error, and how
``serve`` reports a bad file (one line, exit 2 for the content, 1 for a file it names, 5 for a
missing extra) before it opens anything."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import pytest
from certificates import make_certificates

from taskstats_fast.live import webconfig
from taskstats_fast.live.webconfig import BasicAuth, WebConfigError, load_web_config, parse_web_config

bcrypt = pytest.importorskip("bcrypt")
pytest.importorskip("yaml")

# the $2y$ prefix htpasswd writes (the toolkit's documentation uses it), of the password "test"
HASH = bcrypt.hashpw(b"test", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")


def test_an_empty_document_is_plain_http_without_auth():
    for data in (None, {}):
        config = parse_web_config(data)
        assert config.tls is None and not config.users and config.headers == ()


def test_every_tls_key(tmp_path):
    config = parse_web_config({"tls_server_config": {
        "cert_file": "s.pem", "key_file": "/abs/s.key", "client_ca_file": "ca.pem",
        "client_auth_type": "RequireAndVerifyClientCert", "min_version": "TLS13", "max_version": "TLS13",
        "client_allowed_sans": ["scraper.test"], "prefer_server_cipher_suites": False}}, str(tmp_path))
    tls = config.tls
    assert tls.cert_file == str(tmp_path / "s.pem") and tls.key_file == "/abs/s.key"
    assert tls.client_ca_file == str(tmp_path / "ca.pem")
    assert (tls.client_auth_type, tls.min_version, tls.max_version) == ("RequireAndVerifyClientCert", "TLS13",
                                                                        "TLS13")
    assert tls.client_allowed_sans == ("scraper.test",) and tls.prefer_server_cipher_suites is False
    defaults = parse_web_config({"tls_server_config": {"cert_file": "a", "key_file": "b"}}).tls
    assert (defaults.client_auth_type, defaults.min_version, defaults.max_version) == ("NoClientCert", "TLS12",
                                                                                       "TLS13")


def test_users_and_headers():
    config = parse_web_config({"basic_auth_users": {"prometheus": HASH},
                               "http_server_config": {"http2": True, "headers": {
                                   "x-frame-options": "deny", "Content-Security-Policy": ""}}})
    assert config.users == {"prometheus": HASH.encode()}
    assert config.headers == (("X-Frame-Options", "deny"),)


TLS = {"cert_file": "a.pem", "key_file": "a.key"}


@pytest.mark.parametrize("data,message", [
    ([1, 2], "must be a mapping"),
    ({"tls_config": {}}, "unknown key tls_config"),
    ({"rate_limit": {"interval": "1s"}}, "rate_limit: the rate limiter is not supported"),
    ({"tls_server_config": {"cert_file": "a"}}, "key_file is missing"),
    ({"tls_server_config": {"key_file": "a"}}, "cert_file is missing"),
    ({"tls_server_config": {**TLS, "certfile": "x"}}, "unknown key tls_server_config.certfile"),
    ({"tls_server_config": {**TLS, "cert": "PEM"}}, "inline PEM is not supported"),
    ({"tls_server_config": {**TLS, "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}}, "cipher_suites"),
    ({"tls_server_config": {**TLS, "curve_preferences": ["X25519"]}}, "curve_preferences"),
    ({"tls_server_config": {**TLS, "cert_file": 7}}, "cert_file must be a non-empty string"),
    ({"tls_server_config": {**TLS, "client_auth_type": "Sometimes"}}, "'Sometimes' is not one of"),
    ({"tls_server_config": {**TLS, "client_auth_type": "RequireAnyClientCert", "client_ca_file": "c"}},
     "nobody verifies"),
    ({"tls_server_config": {**TLS, "client_ca_file": "ca.pem"}}, "client_auth_type is NoClientCert"),
    ({"tls_server_config": {**TLS, "client_auth_type": "RequireAndVerifyClientCert"}}, "needs client_ca_file"),
    ({"tls_server_config": {**TLS, "min_version": "TLS14"}}, "min_version: 'TLS14' is not one of"),
    ({"tls_server_config": {**TLS, "max_version": "SSL3"}}, "max_version: 'SSL3' is not one of"),
    ({"tls_server_config": {**TLS, "min_version": "TLS13", "max_version": "TLS12"}}, "is above max_version"),
    ({"tls_server_config": {**TLS, "client_allowed_sans": "x"}}, "must be a list"),
    ({"tls_server_config": {**TLS, "client_allowed_sans": ["x"]}}, "client_allowed_sans needs"),
    ({"tls_server_config": {**TLS, "prefer_server_cipher_suites": "yes"}}, "must be true or false"),
    ({"basic_auth_users": ["alice"]}, "basic_auth_users must be a mapping"),
    ({"basic_auth_users": {"alice": "plaintext"}}, "basic_auth_users.alice: not a bcrypt hash"),
    ({"basic_auth_users": {"alice": HASH[:-1]}}, "not a bcrypt hash"),
    ({"basic_auth_users": {"alice": HASH.replace("$04$", "$99$")}}, "not a bcrypt hash"),
    ({"basic_auth_users": {"a:b": HASH}}, "not a user name"),
    ({"http_server_config": {"http3": True}}, "unknown key http_server_config.http3"),
    ({"http_server_config": {"http2": "on"}}, "http2 must be true or false"),
    ({"http_server_config": {"headers": {"X-Evil": "1"}}}, "unknown header"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "deny\r\nSet-Cookie: x"}}}, "one-line"),
])
def test_each_error_names_its_key(data, message):
    with pytest.raises(WebConfigError, match=message.replace("$", r"\$").replace("(", r"\(")):
        parse_web_config(data)


def test_basic_auth_checks_hashes_and_remembers_successes(monkeypatch):
    auth = BasicAuth({"prometheus": HASH.encode()})
    good = "Basic " + base64.b64encode(b"prometheus:test").decode()
    assert not auth.remembered(good)
    assert auth.check(good) and auth.remembered(good)
    for bad in (None, "", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic " + base64.b64encode(b"prometheus:wrong").decode(),
                "Basic " + base64.b64encode(b"alice:test").decode(), "Digest x"):
        assert not auth.check(bad) and not auth.remembered(bad)
    monkeypatch.setattr(BasicAuth, "REMEMBERED", 0)
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.check(good) and not auth.remembered(good)


# ---- loading files, and serve's one line ---------------------------------------------------
def _write(tmp_path, text, name="web.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_builds_the_tls_context_with_paths_from_the_config_directory(tmp_path):
    make_certificates(tmp_path / "certs")
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: certs/server.pem\n  key_file: certs/server.key\n"
                            f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    config = load_web_config(str(path))
    assert config.context is not None and config.users and config.source == str(path)


@pytest.mark.parametrize("text,message", [
    ("tls_server_config:\n  cert_file: nowhere.pem\n  key_file: nowhere.key\n",
     "tls_server_config.cert_file .*nowhere.pem: no such file"),
    ("tls_server_config:\n  cert_file: certs/server.pem\n  key_file: certs/ca.pem\n", "cannot use .*server.pem"),
    ("tls_server_config:\n  cert_file: certs/server.pem\n  key_file: certs/server.key\n"
     "  client_ca_file: certs/server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
     "client_ca_file .*server.key: not a PEM certificate"),
])
def test_load_names_the_key_and_the_file_that_is_wrong(tmp_path, text, message):
    make_certificates(tmp_path / "certs")
    with pytest.raises(OSError, match=message):
        load_web_config(str(_write(tmp_path, text)))


def test_load_reports_bad_yaml_with_its_line(tmp_path):
    with pytest.raises(WebConfigError, match=r"not valid YAML at line \d+, column \d+: expected"):
        load_web_config(str(_write(tmp_path, "basic_auth_users:\n  a: [\n")))


def _serve(*args, env=None):
    return subprocess.run([sys.executable, "-m", "taskstats_fast", "serve", "--listen", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("text,code,message", [
    ("basic_auth_users:\n  alice: plain\n", 2, "--web-config .*: basic_auth_users.alice: not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  bogus: 1\n", 2, "unknown key"),
    ("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n", 1, "cert_file .*a.pem: no such file"),
    (":\n- [", 2, "not valid YAML"),
])
def test_serve_reports_a_bad_web_config_in_one_line(tmp_path, text, code, message):
    res = _serve("--web-config", str(_write(tmp_path, text)))
    assert res.returncode == code, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert re.search(message, res.stderr), res.stderr


def test_serve_without_the_extra_names_it_and_exits_5(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "yaml.py").write_text("raise ImportError('hidden by the test')\n")
    res = _serve("--web-config", str(_write(tmp_path, "{}\n")), env={"PYTHONPATH": str(hide)})
    assert res.returncode == 5, res.stderr
    assert "pip install 'taskstats_fast[serve]'" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_serve_with_a_missing_web_config_file_exits_1(tmp_path):
    res = _serve("--web-config", str(tmp_path / "absent.yml"))
    assert res.returncode == 1 and "absent.yml" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_the_module_names_its_extra():
    assert webconfig.EXTRA == "serve"


def test_the_readme_example_is_a_valid_web_config():
    import yaml
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = readme[readme.index("```yaml\ntls_server_config:") + len("```yaml\n"):]
    config = parse_web_config(yaml.safe_load(block[:block.index("```")]), "/etc/taskstats-fast")
    assert config.tls.cert_file == "/etc/taskstats-fast/serve.pem" and set(config.users) == {"prometheus"}
    assert BasicAuth(config.users).check("Basic " + base64.b64encode(b"prometheus:example").decode())
