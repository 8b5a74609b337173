"""``serve --web-config FILE``: TLS and basic-auth settings in the Prometheus exporter-toolkit
format (the ``--web.config.file`` of node_exporter and every exporter built on that toolkit), so
one file serves all of a host's exporters.

``parse_web_config`` is a pure function of the parsed YAML; it checks every key and value and
raises ``WebConfigError`` (exit 2) naming the key.  ``load_web_config`` reads the file and builds
the ``ssl.SSLContext`` at once, so a missing or unreadable certificate, key or CA file is an
``OSError`` naming the key and path (exit 1) before anything is served.  ``BasicAuth`` checks an
``Authorization`` header against the bcrypt hashes and remembers the checks that succeeded:
bcrypt is slow on purpose (tens of milliseconds at cost 10), and a scraper sends the same
credentials every few seconds.

Keys of the toolkit's format that Python's ``ssl`` module cannot honour (Go cipher-suite and
curve names, inline PEM, a rate limiter) are refused by name rather than silently ignored: each
weakens or changes what the operator asked for.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..schema import require

__all__ = ["WebConfig", "TLSSettings", "WebConfigError", "BasicAuth", "parse_web_config",
           "load_web_config", "tls_context", "EXTRA"]

#: The pip extra that installs PyYAML and bcrypt.
EXTRA = "serve"

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

# Go's tls.ClientAuthType names; the two that accept an unverified certificate have no
# equivalent in OpenSSL's verify modes.
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version",
             "client_allowed_sans", "prefer_server_cipher_suites")
_UNSUPPORTED_TLS_KEYS = {
    "cert": "inline PEM is not supported: write it to a file and name it in cert_file",
    "key": "inline PEM is not supported: write it to a file and name it in key_file",
    "client_ca": "inline PEM is not supported: write it to a file and name it in client_ca_file",
    "cipher_suites": "Go cipher-suite names have no equivalent here: remove it (Python's ssl "
                     "defaults exclude weak suites)",
    "curve_preferences": "Go curve names have no equivalent here: remove it",
}
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_UNSUPPORTED_TOP_KEYS = {"rate_limit": "the rate limiter is not supported: remove it (the server's "
                                       "connection cap and fixed pool of threads bound the load)"}
_HTTP_KEYS = ("http2", "headers")
_HEADER_NAMES = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
                 "Strict-Transport-Security")

# $2a$, $2b$ or $2y$, a two-digit cost, then 22 characters of salt and 31 of hash
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


class WebConfigError(ValueError):
    """The web configuration file is not valid (the message names the key)."""


@dataclass(frozen=True)
class TLSSettings:
    """``tls_server_config``: paths are already resolved against the config file's directory."""
    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    client_allowed_sans: Tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True)
class WebConfig:
    """What ``--web-config`` asks of the HTTP server; the empty default is plain HTTP, no auth."""
    tls: Optional[TLSSettings] = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Tuple[Tuple[str, str], ...] = ()
    context: Optional[ssl.SSLContext] = None     #: built by ``load_web_config`` from ``tls``
    source: str = ""


# ---- parsing: a pure function of the YAML's data -----------------------------------------
def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{where} must be a mapping of keys to values, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise WebConfigError(f"{where}: the key {key!r} is not a string")
    return value


def _check_keys(data: Mapping[str, Any], where: str, known: Tuple[str, ...],
                unsupported: Mapping[str, str]) -> None:
    for key in data:
        if key in unsupported:
            raise WebConfigError(f"{where}{key}: {unsupported[key]}")
        if key not in known:
            raise WebConfigError(f"unknown key {where}{key} (known here: {', '.join(known)})")


def _string(data: Mapping[str, Any], key: str, where: str, default: Optional[str] = None) -> Optional[str]:
    value = data.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise WebConfigError(f"{where}{key} must be a non-empty string, not {value!r}")
    return value


def _choice(data: Mapping[str, Any], key: str, where: str, default: str, choices: Tuple[str, ...]) -> str:
    value = _string(data, key, where, default) or default
    if value not in choices:
        raise WebConfigError(f"{where}{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _parse_tls(data: Mapping[str, Any], directory: str) -> Optional[TLSSettings]:
    where = "tls_server_config."
    _check_keys(data, where, _TLS_KEYS, _UNSUPPORTED_TLS_KEYS)
    if not data:
        return None
    paths = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        value = _string(data, key, where)
        paths[key] = None if value is None else os.path.join(directory, value)
    for key in ("cert_file", "key_file"):
        if paths[key] is None:
            raise WebConfigError(f"{where}{key} is missing: TLS needs both cert_file and key_file")
    auth = data.get("client_auth_type", "NoClientCert")
    if auth in _UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(f"{where}client_auth_type: {auth} (a client certificate nobody verifies) is "
                             "not supported: use RequireAndVerifyClientCert or VerifyClientCertIfGiven")
    auth = _choice(data, "client_auth_type", where, "NoClientCert", tuple(_CLIENT_AUTH))
    if paths["client_ca_file"] is not None and auth == "NoClientCert":
        raise WebConfigError(f"{where}client_ca_file is set but client_auth_type is NoClientCert: "
                             "set client_auth_type: RequireAndVerifyClientCert")
    if paths["client_ca_file"] is None and auth != "NoClientCert":
        raise WebConfigError(f"{where}client_auth_type {auth} needs client_ca_file (the CA that signs the "
                             "clients' certificates)")
    low = _choice(data, "min_version", where, "TLS12", tuple(_TLS_VERSIONS))
    high = _choice(data, "max_version", where, "TLS13", tuple(_TLS_VERSIONS))
    if _TLS_VERSIONS[low] > _TLS_VERSIONS[high]:
        raise WebConfigError(f"{where}min_version {low} is above max_version {high}")
    sans = data.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) and s for s in sans):
        raise WebConfigError(f"{where}client_allowed_sans must be a list of names, not {sans!r}")
    if sans and auth == "NoClientCert":
        raise WebConfigError(f"{where}client_allowed_sans needs client_auth_type RequireAndVerifyClientCert "
                             "(without a client certificate there is no name to match)")
    prefer = data.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{where}prefer_server_cipher_suites must be true or false, not {prefer!r}")
    return TLSSettings(str(paths["cert_file"]), str(paths["key_file"]), paths["client_ca_file"], auth,
                       low, high, tuple(sans), prefer)


def _parse_users(data: Mapping[str, Any]) -> Dict[str, bytes]:
    users = {}
    for user, hashed in data.items():
        if not user or ":" in user:
            raise WebConfigError(f"basic_auth_users: {user!r} is not a user name (non-empty, no colon)")
        match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise WebConfigError(f"basic_auth_users.{user}: not a bcrypt hash (expected $2y$10$ followed by 53 "
                                 "characters, as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)")
        users[user] = hashed.encode("ascii")
    return users


def _parse_http(data: Mapping[str, Any]) -> Tuple[Tuple[str, str], ...]:
    where = "http_server_config."
    _check_keys(data, where, _HTTP_KEYS, {})
    if not isinstance(data.get("http2", True), bool):
        raise WebConfigError(f"{where}http2 must be true or false (this server speaks HTTP/1.1 either way)")
    headers = _mapping(data.get("headers"), where + "headers")
    out = []
    for name, value in headers.items():
        canonical = {n.lower(): n for n in _HEADER_NAMES}.get(name.lower())
        if canonical is None:
            raise WebConfigError(f"unknown header {where}headers.{name} (known: {', '.join(_HEADER_NAMES)})")
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise WebConfigError(f"{where}headers.{name} must be a one-line string")
        if value:
            out.append((canonical, value))
    return tuple(out)


def parse_web_config(data: Any, directory: str = ".") -> WebConfig:
    """The settings in ``data`` (the YAML document, ``None`` for an empty file); relative file
    names are taken from ``directory``, as the toolkit takes them from the config's directory."""
    top = _mapping(data, "the web configuration")
    _check_keys(top, "", _TOP_KEYS, _UNSUPPORTED_TOP_KEYS)
    return WebConfig(tls=_parse_tls(_mapping(top.get("tls_server_config"), "tls_server_config"), directory),
                     users=_parse_users(_mapping(top.get("basic_auth_users"), "basic_auth_users")),
                     headers=_parse_http(_mapping(top.get("http_server_config"), "http_server_config")))


# ---- loading: the file, the certificates ---------------------------------------------------
def _file_error(source: str, key: str, path: str, e: OSError) -> OSError:
    return OSError(e.errno or errno.EINVAL, f"{source}: {key} {path}: {e.strerror or e}")


def tls_context(tls: TLSSettings, source: str = "--web-config") -> ssl.SSLContext:
    """A server context for ``tls``; an ``OSError`` naming the key and path when a file is
    missing, unreadable or not what it should be."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    for key in ("cert_file", "key_file"):
        path = getattr(tls, key)
        if not os.path.isfile(path):
            raise _file_error(source, f"tls_server_config.{key}", path,
                              OSError(errno.ENOENT, "no such file" if not os.path.exists(path) else "not a file"))
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as e:
        raise OSError(errno.EINVAL, f"{source}: tls_server_config: cannot use {tls.cert_file} with the key "
                      f"{tls.key_file} ({e.reason or e}): both must be PEM, the key unencrypted and "
                      "matching the certificate") from None
    except OSError as e:
        raise _file_error(source, "tls_server_config.cert_file/key_file", f"{tls.cert_file}, {tls.key_file}",
                          e) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as e:
            raise OSError(errno.EINVAL, f"{source}: tls_server_config.client_ca_file {tls.client_ca_file}: "
                          f"not a PEM certificate ({e.reason or e})") from None
        except OSError as e:
            raise _file_error(source, "tls_server_config.client_ca_file", tls.client_ca_file, e) from None
        context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return context


def load_web_config(path: str) -> WebConfig:
    """Read and check ``path``; needs the ``serve`` extra (PyYAML, and bcrypt for basic auth)."""
    yaml = require("yaml", EXTRA, "--web-config")
    source = f"--web-config {path}"
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise OSError(e.errno or errno.EIO, f"{source}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise WebConfigError(f"not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    config = parse_web_config(data, os.path.dirname(os.path.abspath(path)))
    if config.users:
        require("bcrypt", EXTRA, "--web-config basic_auth_users")
    context = tls_context(config.tls, source) if config.tls is not None else None
    return WebConfig(config.tls, config.users, config.headers, context, path)


# ---- basic auth -----------------------------------------------------------------------------
class BasicAuth:
    """Checks ``Authorization: Basic ...`` against bcrypt hashes, remembering successes.

    The remembered key is a SHA-256 of user, password and hash, so the cache holds no password
    and a changed hash misses.  An unknown user is checked against a dummy hash, so the time
    taken does not tell which users exist.
    """

    REMEMBERED = 64

    def __init__(self, users: Mapping[str, bytes]):
        self._users = dict(users)
        self._good: "OrderedDict[bytes, None]" = OrderedDict()
        self._lock = threading.Lock()
        self._dummy = next(iter(self._users.values()), b"")

    def __bool__(self) -> bool:
        return bool(self._users)

    @staticmethod
    def credentials(header: Optional[str]) -> Optional[Tuple[str, str]]:
        """(user, password) from an ``Authorization`` value, or None if it is not Basic."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def _key(self, user: str, password: str) -> bytes:
        hashed = self._users.get(user, b"")
        return hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()

    def remembered(self, header: Optional[str]) -> bool:
        """True when these credentials were checked good before (cheap: no bcrypt)."""
        given = self.credentials(header)
        if given is None:
            return False
        key = self._key(*given)
        with self._lock:
            if key in self._good:
                self._good.move_to_end(key)
                return True
        return False

    def check(self, header: Optional[str]) -> bool:
        """The full bcrypt check (slow: call it off the event loop)."""
        given = self.credentials(header)
        if given is None:
            return False
        user, password = given
        bcrypt = require("bcrypt", EXTRA, "--web-config basic_auth_users")
        hashed = self._users.get(user)
        good = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None
        if good:
            key = self._key(user, password)
            with self._lock:
                self._good[key] = None
                while len(self._good) > self.REMEMBERED:
                    self._good.popitem(last=False)
        return good
