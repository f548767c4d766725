"""Start a real FHIR R4 server (sekmet-fhir) as a subprocess for integration tests.

Usable outside pytest too (benchmarks)::

    with SekmetServer(tmp_dir) as server:
        server.load_resources(resources)
        client = FhirClient(server.base_url)

Auth: ``auth_types=("none",)`` (default) lets every request in. Any other set
(``("smart",)``, ``("bearer",)``, ...) enforces it; an admin static bearer token is always
configured too so ``load_*`` can write. SMART clients are registered with their public JWK.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["SekmetServer", "free_port", "generate_key_pair", "public_jwk", "write_private_pem"]

ADMIN_TOKEN = "integration-admin-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def generate_key_pair(alg: str = "RS384") -> Any:
    """A fresh private key: RSA 2048 for RS384, P-384 for ES384."""
    if alg.startswith("ES"):
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_private_pem(key: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def public_jwk(key: Any, alg: str = "RS384", kid: str = "test-key") -> dict[str, Any]:
    pub = key.public_key()
    algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
    jwk = json.loads(algo.to_jwk(pub))
    jwk.update({"alg": alg, "use": "sig", "kid": kid})
    return jwk


def _sekmet_executable() -> str:
    here = Path(sys.executable).parent / "sekmet"
    found = str(here) if here.exists() else shutil.which("sekmet")
    if not found:
        raise RuntimeError("sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1)")
    return found


class PortTakenError(RuntimeError):
    """The chosen port was taken by another process before the server bound it."""


class SekmetServer:
    """One sekmet-fhir process with its own data directory, on a free port of 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth_types: Sequence[str] = ("none",),
        smart_clients: Iterable[Mapping[str, Any]] = (),
        tokens: Iterable[str] = (),
        users: Mapping[str, str] | None = None,
        token_lifetime: int = 3600,
        port: int | None = None,
    ) -> None:
        # Absolute: the server runs with cwd=workdir and is given paths inside it.
        self.workdir = Path(workdir).resolve()
        self._fixed_port = port is not None
        # Names this process in its CapabilityStatement: start() checks it answers, not another
        # server that took the port first (pytest-xdist workers each start their own).
        self.instance = f"fhir-cohort test server {os.getpid()}-{id(self):x}"
        self._set_port(port or free_port())
        self.auth_types = list(auth_types)
        self._enforced = "none" not in self.auth_types
        types = list(self.auth_types)
        if self._enforced and "bearer" not in types:
            types.append("bearer")
        self.settings: dict[str, Any] = {
            "base_url": self.base_url,
            "host": "127.0.0.1",
            "port": self.port,
            "data_dir": str(self.workdir / "data"),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet.pem"),
            "facility_name": self.instance,
            # delay_seconds also holds every $export job open for min(1 s, it) before it
            # completes ("let clients observe in progress"): no artificial wait in tests.
            "simulator": {"enabled": False, "delay_seconds": 0.0},
            "validation": {"inbound": "off"},
            "log_inbound": False,
            "server_auth": {
                "types": types,
                "tokens": [ADMIN_TOKEN, *tokens],
                "users": dict(users or {}),
                "smart_clients": [dict(c) for c in smart_clients],
                "token_lifetime": token_lifetime,
            },
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.workdir / "sekmet.log"
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/fhir+json"})
        if self._enforced:
            self.session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    # -- lifecycle -------------------------------------------------------------------------

    def _set_port(self, port: int) -> None:
        self.port = port
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/fhir"
        if hasattr(self, "settings"):
            self.settings.update(base_url=self.base_url, port=self.port)

    def start(self, timeout: float = 120.0, attempts: int = 3) -> SekmetServer:
        """Start the server; on a free port lost to another process, retry on a new one.

        ``timeout`` only bounds a wait that ends as soon as the server answers (a few seconds
        here); on a loaded 2-core machine sekmet took more than 30 s, failing every test that
        used it."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except PortTakenError:
                if self._fixed_port or attempt == attempts - 1:
                    raise
                self._set_port(free_port())
        raise AssertionError("unreachable")

    def _answers(self) -> bool:
        """Whether this process (not another on the port) serves /metadata."""
        try:
            resp = requests.get(f"{self.base_url}/metadata", timeout=2)
        except requests.ConnectionError:
            return False
        if resp.status_code != 200:
            return False
        description = (resp.json().get("implementation") or {}).get("description") or ""
        if not description.startswith(self.instance):
            raise PortTakenError(f"another server answers on port {self.port}")
        return True

    def _start_once(self, timeout: float) -> SekmetServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "settings.yaml"
        config.write_text(yaml.safe_dump(self.settings, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
        env["SEKMET_CONFIG"] = str(config)
        log = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            [_sekmet_executable(), "serve", "--config", str(config)],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        atexit.register(self.stop)  # no orphaned servers if the session dies early
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    raise PortTakenError(f"port {self.port} was taken:\n{tail}")
                raise RuntimeError(f"sekmet exited with {self._proc.returncode}:\n{tail}")
            try:
                if self._answers():
                    return self
            except PortTakenError:
                self.stop()
                raise
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sekmet did not answer /metadata within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self.session.close()
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> SekmetServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data ------------------------------------------------------------------------------

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        resp = self.session.post(
            self.base_url,
            data=json.dumps(bundle),
            headers={"Content-Type": "application/fhir+json"},
            timeout=120,
        )
        if resp.status_code != 200:
            raise RuntimeError(f"transaction failed: HTTP {resp.status_code}: {resp.text[:2000]}")
        return resp.json()

    def load_bundle(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction/batch Bundle as is."""
        return self.transaction(bundle)

    def load_resources(self, resources: Iterable[Mapping[str, Any]], batch: int = 500) -> int:
        """PUT resources (each with an id) by transaction Bundles of ``batch`` entries."""
        n = 0
        entries: list[dict[str, Any]] = []
        for res in resources:
            rtype, rid = res["resourceType"], res["id"]
            entries.append(
                {
                    "fullUrl": f"{self.base_url}/{rtype}/{rid}",
                    "resource": dict(res),
                    "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
                }
            )
            if len(entries) >= batch:
                n += self._flush(entries)
        return n + self._flush(entries)

    def _flush(self, entries: list[dict[str, Any]]) -> int:
        if not entries:
            return 0
        self.transaction({"resourceType": "Bundle", "type": "transaction", "entry": list(entries)})
        n = len(entries)
        entries.clear()
        return n

    def load_ndjson_dir(self, directory: Path) -> int:
        """Load every ``*.ndjson`` file of a Bulk-style folder."""

        def resources() -> Iterable[dict[str, Any]]:
            for path in sorted(Path(directory).glob("*.ndjson")):
                with path.open(encoding="utf-8") as fh:
                    for line in fh:
                        if line.strip():
                            yield json.loads(line)

        return self.load_resources(resources())

    def delete_all(self, resource_types: Iterable[str]) -> None:
        """Remove every resource of the given types (to reset between tests)."""
        for rtype in resource_types:
            while True:
                resp = self.session.get(
                    f"{self.base_url}/{rtype}",
                    params={"_count": "1000", "_elements": "id"},
                    timeout=60,
                )
                resp.raise_for_status()
                ids = [e["resource"]["id"] for e in resp.json().get("entry", []) if "resource" in e]
                ids = [i for i in ids if i]
                if not ids:
                    break
                self.transaction(
                    {
                        "resourceType": "Bundle",
                        "type": "transaction",
                        "entry": [
                            {"request": {"method": "DELETE", "url": f"{rtype}/{i}"}} for i in ids
                        ],
                    }
                )
