"""Authentication for the FHIR client: none, static bearer, HTTP basic, SMART Backend Services.

The client asks an :class:`Auth` for headers (and, after a 401, to ``invalidate`` them); an
auth that must fetch a token does so through the :class:`TokenHttp` it is handed: two
unauthenticated, retried requests (a JSON GET, a form POST). Auth knows nothing of the
client's internals, and a token request can never ask the auth again.

Secrets come from files or environment variables (never command-line values, which land in
shell history and process listings) and never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_cohort.errors import AuthError, FhirHttpError
from fhir_cohort.fhir.client import is_loopback, origin_of, outcome_text, strip_query
from fhir_cohort.files import warn_if_exposed

__all__ = [
    "ASSERTION_TYPE",
    "Auth",
    "AuthOptions",
    "BasicAuth",
    "BearerTokenAuth",
    "NoAuth",
    "SigningKey",
    "SmartBackendAuth",
    "TokenHttp",
    "auth_from_env",
    "discover_token_endpoint",
    "load_signing_key",
]

log = logging.getLogger("fhir_cohort.fhir")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OAUTH_URIS_EXT = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
DEFAULT_SCOPE = "system/*.read"
ASSERTION_LIFETIME = 240  # seconds; SMART requires exp <= 5 minutes ahead, keep a margin for skew


class TokenHttp(Protocol):
    """What an auth may do on the wire to get credentials (:class:`FhirClient` provides it).

    Both requests go without credentials and are retried like any other; ``allow_insecure_http``
    is the user's consent to plain http, which a token endpoint must honour too.
    """

    allow_insecure_http: bool

    def get_json(
        self,
        path: str,
        params: Any = None,
        *,
        accept: str | None = None,
        authenticate: bool = True,
    ) -> dict[str, Any]:
        """GET ``path`` (relative to the FHIR base, or absolute) and return its JSON object."""
        ...

    def post_form(
        self, url: str, form: Callable[[], Mapping[str, str]]
    ) -> tuple[int, dict[str, Any], str]:
        """POST ``form()`` (anew on every attempt); (status, JSON body, URL without query).

        A 400 is returned as an answer (OAuth's errors come that way); 401/403 raise AuthError.
        """
        ...


class Auth:
    """Base class: supplies request headers; ``invalidate`` drops cached credentials (on 401).

    ``sends_credentials``: whether the headers carry a secret (the client then refuses a plain
    http base URL unless it is loopback or insecure http was allowed). ``http`` is what the
    auth may use to fetch credentials; static credentials ignore it.
    """

    sends_credentials = True

    def headers(self, http: TokenHttp) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        """Forget cached credentials so the next ``headers`` call fetches fresh ones."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAuth(Auth):
    sends_credentials = False


class BearerTokenAuth(Auth):
    def __init__(self, token: str) -> None:
        token = token.strip()
        if not token:
            raise AuthError("empty bearer token")
        self._token = token

    def headers(self, http: TokenHttp) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=***)"


class BasicAuth(Auth):
    def __init__(self, username: str, password: str) -> None:
        if not username or ":" in username:
            raise AuthError("basic auth user name must be non-empty and contain no ':'")
        self.username = username
        self._header = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def headers(self, http: TokenHttp) -> dict[str, str]:
        return {"Authorization": self._header}

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=***)"


# -- SMART Backend Services --------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private key for client assertions, with its JWS algorithm and key id."""

    key: Any
    alg: str
    kid: str

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: the conventional kid when none is configured."""
    if public_jwk["kty"] == "RSA":
        members = {"e": public_jwk["e"], "kty": "RSA", "n": public_jwk["n"]}
    else:
        members = {
            "crv": public_jwk["crv"],
            "kty": "EC",
            "x": public_jwk["x"],
            "y": public_jwk["y"],
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


def _alg_for(key: Any, alg: str | None) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        wanted = alg or "RS384"
        if wanted not in ("RS384", "RS256"):
            raise AuthError(f"an RSA key cannot sign {wanted}")
        return wanted
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp384r1" and (alg or "ES384") == "ES384":
            raise AuthError(f"ES384 needs a P-384 key, got curve {key.curve.name}")
        return alg or "ES384"
    raise AuthError("private key must be RSA or EC (P-384)")


def _public_jwk(key: Any) -> dict[str, Any]:
    pub = key.public_key()
    algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
    return json.loads(algo.to_jwk(pub))


def load_signing_key(
    *,
    pem_path: str | Path | None = None,
    jwks_path: str | Path | None = None,
    kid: str | None = None,
    alg: str | None = None,
) -> SigningKey:
    """Load a PEM private key or pick one private key from a JWKS file (by ``kid`` or ``alg``)."""
    if (pem_path is None) == (jwks_path is None):
        raise AuthError("give exactly one of a PEM private key file or a JWKS file")
    if pem_path is not None:
        path = Path(pem_path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except OSError as exc:
            raise AuthError(f"cannot read private key file {path}: {exc.strerror}") from None
        except (ValueError, TypeError):
            raise AuthError(
                f"{path} is not an unencrypted PEM private key (RSA or EC P-384)"
            ) from None
        warn_if_exposed(path, "SMART private key file")
        chosen = _alg_for(key, alg)
        return SigningKey(key, chosen, kid or _thumbprint(_public_jwk(key)))
    path = Path(jwks_path)  # type: ignore[arg-type]
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise AuthError(f"cannot read JWKS file {path}: {exc.strerror}") from None
    except ValueError:
        raise AuthError(f"{path} is not JSON") from None
    warn_if_exposed(path, "SMART private JWKS file")
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise AuthError(f"{path} is not a JWK set (no 'keys' array)")
    candidates = []
    for jwk in keys:
        if not isinstance(jwk, dict) or "d" not in jwk:
            continue  # public keys cannot sign
        if kid is not None and jwk.get("kid") != kid:
            continue
        if alg is not None and jwk.get("alg") not in (None, alg):
            continue
        if jwk.get("kty") not in ("RSA", "EC"):
            continue
        candidates.append(jwk)
    if not candidates:
        what = f" with kid {kid!r}" if kid else ""
        raise AuthError(f"{path} holds no private RSA/EC key{what}")
    jwk = candidates[0]
    algo = RSAAlgorithm if jwk["kty"] == "RSA" else ECAlgorithm
    key = algo.from_jwk(json.dumps(jwk))
    chosen = _alg_for(key, alg or jwk.get("alg"))
    return SigningKey(key, chosen, kid or jwk.get("kid") or _thumbprint(_public_jwk(key)))


def discover_token_endpoint(http: TokenHttp) -> str:
    """Token URL from ``.well-known/smart-configuration``, else the CapabilityStatement."""
    try:
        conf = http.get_json(
            ".well-known/smart-configuration", accept="application/json", authenticate=False
        )
        url = conf.get("token_endpoint")
        if isinstance(url, str) and url:
            return url
    except FhirHttpError as exc:
        log.debug("no smart-configuration (%s); trying the CapabilityStatement", exc.status)
    try:
        cap = http.get_json("metadata", authenticate=False)
    except FhirHttpError:
        cap = {}
    for rest in cap.get("rest") or []:
        for ext in (rest.get("security") or {}).get("extension") or []:
            if ext.get("url") != OAUTH_URIS_EXT:
                continue
            for sub in ext.get("extension") or []:
                if sub.get("url") == "token" and sub.get("valueUri"):
                    return str(sub["valueUri"])
    raise AuthError(
        "cannot find the SMART token endpoint: neither .well-known/smart-configuration nor the "
        "CapabilityStatement names one (set FHIR_COHORT_TOKEN_URL)"
    )


class SmartBackendAuth(Auth):
    """SMART Backend Services: client_credentials grant with a private_key_jwt assertion.

    The access token is cached and refreshed ``refresh_margin`` seconds before it expires, or
    after a 401 (``invalidate``). Thread-safe: concurrent workers share one token. ``clock``
    (monotonic) only tracks the token's lifetime.
    """

    def __init__(
        self,
        client_id: str,
        signing_key: SigningKey,
        *,
        scope: str = DEFAULT_SCOPE,
        token_url: str | None = None,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not client_id:
            raise AuthError("SMART backend auth needs a client id")
        self.client_id = client_id
        self.signing_key = signing_key
        self.scope = scope
        self.token_url = token_url
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.token_requests = 0

    def __repr__(self) -> str:
        return (
            f"SmartBackendAuth(client_id={self.client_id!r}, key={self.signing_key!r}, "
            f"scope={self.scope!r}, token=***)"
        )

    def invalidate(self) -> None:
        with self._lock:
            self._token = None
            self._expires_at = 0.0

    def headers(self, http: TokenHttp) -> dict[str, str]:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self.refresh_margin:
                self._fetch_token(http)
            return {"Authorization": f"Bearer {self._token}"}

    def assertion(self, token_url: str) -> str:
        now = int(time.time())  # wall time: the server checks iat/exp against its own clock
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims,
            self.signing_key.key,
            algorithm=self.signing_key.alg,
            headers={"kid": self.signing_key.kid, "typ": "JWT"},
        )

    def _form(self, token_url: str) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(token_url),
        }

    def _fetch_token(self, http: TokenHttp) -> None:
        if self.token_url is None:
            self.token_url = discover_token_endpoint(http)
        token_url = self.token_url
        scheme, host, _ = origin_of(token_url)
        if scheme not in ("http", "https") or (
            scheme == "http" and not is_loopback(host) and not http.allow_insecure_http
        ):
            # the assertion goes there, and the access token comes back: never in clear text
            raise AuthError(
                f"refusing to send the client assertion to {strip_query(token_url)}: the token "
                "endpoint must be https (or loopback, or --allow-insecure-http)"
            )
        try:
            # the form is a callable: each attempt signs a new assertion (a jti is single-use,
            # so re-sending one after a lost response would be refused as a replay)
            status, body, safe_url = http.post_form(token_url, lambda: self._form(token_url))
        except AuthError as exc:
            raise AuthError(
                f"the token endpoint refused client {self.client_id!r} "
                "(is the public key registered and the client id right?)",
                method="POST",
                url=exc.url,
                status=exc.status,
                outcome=exc.outcome,
            ) from None
        if status == 400 or not isinstance(body.get("access_token"), str):
            raise AuthError(
                f"the token endpoint did not issue a token for client {self.client_id!r}",
                method="POST",
                url=safe_url,
                status=status,
                outcome=outcome_text(body),
            )
        self.token_requests += 1
        self._token = str(body["access_token"])
        try:
            lifetime = float(body.get("expires_in", 300))
        except (TypeError, ValueError):
            lifetime = 300.0
        self._expires_at = self._clock() + lifetime
        log.debug("obtained a SMART access token valid for %.0fs", lifetime)


# -- configuration from the environment -------------------------------------------------------


AuthKind = Literal["none", "bearer", "basic", "smart"]


@dataclass(frozen=True)
class AuthOptions:
    """Non-secret auth settings the CLI may take from flags; secrets stay in env/files.

    ``kind=None`` picks the method from which environment variables are set.
    """

    kind: AuthKind | None = None
    client_id: str | None = None
    private_key: Path | None = None
    jwks: Path | None = None
    kid: str | None = None
    alg: str | None = None
    scope: str | None = None
    token_url: str | None = None


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """Value of ``NAME`` or the first line of the file ``NAME_FILE``."""
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value and path:
        raise AuthError(f"set only one of {name} and {name}_FILE")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise AuthError(f"cannot read {name}_FILE {path}: {exc.strerror}") from None
        lines = text.splitlines()
        return lines[0].strip() if lines else ""
    return value


def auth_from_env(env: Mapping[str, str] | None = None, options: AuthOptions | None = None) -> Auth:
    """Build the client's Auth from environment variables and non-secret options.

    Variables: ``FHIR_COHORT_TOKEN`` / ``FHIR_COHORT_TOKEN_FILE``; ``FHIR_COHORT_BASIC_USER`` with
    ``FHIR_COHORT_BASIC_PASSWORD`` / ``FHIR_COHORT_BASIC_PASSWORD_FILE``; ``FHIR_COHORT_CLIENT_ID``
    with ``FHIR_COHORT_PRIVATE_KEY`` (PEM path) or ``FHIR_COHORT_JWKS`` (JWKS path), optional
    ``FHIR_COHORT_KID``, ``FHIR_COHORT_ALG``, ``FHIR_COHORT_SCOPE``, ``FHIR_COHORT_TOKEN_URL``.

    >>> auth_from_env({})
    NoAuth()
    >>> auth_from_env({"FHIR_COHORT_TOKEN": "s3cret"})
    BearerTokenAuth(token=***)
    """
    env = os.environ if env is None else env
    opts = options or AuthOptions()
    token = _secret(env, "FHIR_COHORT_TOKEN")
    user = env.get("FHIR_COHORT_BASIC_USER")
    client_id = opts.client_id or env.get("FHIR_COHORT_CLIENT_ID")
    key_path = opts.private_key or env.get("FHIR_COHORT_PRIVATE_KEY")
    jwks_path = opts.jwks or env.get("FHIR_COHORT_JWKS")
    configured: list[AuthKind] = []
    if token:
        configured.append("bearer")
    if user:
        configured.append("basic")
    if client_id or key_path or jwks_path:
        configured.append("smart")
    kind = opts.kind
    if kind is None:
        if len(configured) > 1:
            raise AuthError(
                f"several auth methods are configured ({', '.join(configured)}); choose one"
            )
        kind = configured[0] if configured else "none"
    if kind == "none":
        return NoAuth()
    if kind == "bearer":
        if not token:
            raise AuthError("bearer auth needs FHIR_COHORT_TOKEN or FHIR_COHORT_TOKEN_FILE")
        return BearerTokenAuth(token)
    if kind == "basic":
        password = _secret(env, "FHIR_COHORT_BASIC_PASSWORD")
        if not user or password is None:
            raise AuthError(
                "basic auth needs FHIR_COHORT_BASIC_USER and FHIR_COHORT_BASIC_PASSWORD(_FILE)"
            )
        return BasicAuth(user, password)
    if kind == "smart":
        if not client_id:
            raise AuthError("SMART backend auth needs FHIR_COHORT_CLIENT_ID")
        if not key_path and not jwks_path:
            raise AuthError(
                "SMART backend auth needs FHIR_COHORT_PRIVATE_KEY (PEM file) or FHIR_COHORT_JWKS"
            )
        if key_path and jwks_path:
            raise AuthError("set only one of FHIR_COHORT_PRIVATE_KEY and FHIR_COHORT_JWKS")
        key = load_signing_key(
            pem_path=key_path,
            jwks_path=jwks_path,
            kid=opts.kid or env.get("FHIR_COHORT_KID"),
            alg=opts.alg or env.get("FHIR_COHORT_ALG"),
        )
        return SmartBackendAuth(
            client_id,
            key,
            scope=opts.scope or env.get("FHIR_COHORT_SCOPE") or DEFAULT_SCOPE,
            token_url=opts.token_url or env.get("FHIR_COHORT_TOKEN_URL"),
        )
    raise AuthError(f"unknown auth kind {kind!r}")
