"""Azurite, Microsoft's Azure Storage emulator, for the Azure lake tests.

``make install-dev`` installs it from the npm registry into ``.venv/azurite`` (pinned in the
Makefile; it needs Node.js and npm, which ``.ci/run`` installs from Debian where they are missing).
:class:`Azurite` runs its blob service (``azurite-blob``) on 127.0.0.1 and a free port with its
data in a temporary folder, and stops it (process group: SIGTERM, then SIGKILL) afterwards.

:class:`BlobClient` is a small client of the Blob service REST API (Shared Key authorization,
standard library only): the tests create containers and inspect blobs with it, independently of
pyarrow and Polars, which segpipe itself uses.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .browser_support import REPO
from .server_support import LoopbackServer

#: Azurite's well-known development account and key (public, the same in every Azurite).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
API_VERSION = "2021-12-02"


def azurite_blob_binary() -> Path | None:
    """``azurite-blob`` from ``.venv/azurite`` (``make install-dev``) of the running virtualenv or of
    the repo, else from PATH (a global ``npm install -g azurite``); None if there is none."""
    for prefix in (Path(sys.prefix), REPO / ".venv"):
        candidate = prefix / "azurite" / "node_modules" / ".bin" / "azurite-blob"
        if candidate.is_file():
            return candidate
    found = shutil.which("azurite-blob")
    return Path(found) if found else None


def missing_reason() -> str | None:
    """Why Azurite cannot be started here, or None if it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed (`node` not on PATH); install Debian's `nodejs npm` (.ci/run does)"
    if azurite_blob_binary() is None:
        return ("Azurite not found (no .venv/azurite/node_modules/.bin/azurite-blob nor azurite-blob on PATH); "
                "`make install-dev` installs it with npm")
    return None


class Azurite(LoopbackServer):
    """``azurite-blob`` in the foreground on 127.0.0.1 and a free port, data under ``workdir``."""

    name = "azurite"
    port_taken = "EADDRINUSE"
    poll_seconds = 0.2

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint, path-style: ``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def command(self, port: int) -> list[str]:
        binary = azurite_blob_binary()
        assert binary, missing_reason()
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        return [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                str(self.workdir / "data"), "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"]

    def probe(self) -> None:
        BlobClient(self.endpoint).list_containers()


@dataclass(frozen=True)
class Blob:
    """A blob as List Blobs reports it."""

    name: str
    size: int
    content_type: str
    last_modified: dt.datetime


class BlobClient:
    """The Blob service REST API of one account at ``endpoint`` (path-style, as Azurite serves it),
    authorized with the account's Shared Key."""

    def __init__(self, endpoint: str, account: str = ACCOUNT, key: str = ACCOUNT_KEY):
        self.endpoint, self.account, self.key = endpoint.rstrip("/"), account, base64.b64decode(key)

    def request(self, method: str, path: str = "", query: dict[str, str] | None = None, *,
                body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        """Send one request; the response body (AssertionError on an HTTP error)."""
        query = query or {}
        url = self.endpoint + "/" + urllib.parse.quote(path) if path else self.endpoint + "/"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        ms = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": API_VERSION, **(headers or {})}
        content_type = "application/octet-stream" if body is not None else ""
        resource = "/" + self.account + urllib.parse.urlsplit(url).path
        resource += "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        # VERB, Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date, If-Modified-Since,
        # If-Match, If-None-Match, If-Unmodified-Since, Range; then the x-ms-* headers and the resource
        string_to_sign = "\n".join([method, "", "", str(len(body)) if body else "", "", content_type,
                                    *[""] * 6]) + "\n"
        string_to_sign += "".join(f"{k.lower()}:{v}\n" for k, v in sorted(ms.items())) + resource
        signature = base64.b64encode(hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).digest()).decode()
        all_headers = {**ms, "Authorization": f"SharedKey {self.account}:{signature}"}
        if body is not None:
            all_headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {url}: HTTP {exc.code} {exc.read()[:500]!r}") from None

    def list_containers(self) -> list[str]:
        root = ET.fromstring(self.request("GET", query={"comp": "list"}))
        return [e.text or "" for e in root.iter("Name")]

    def create_container(self, name: str) -> str:
        self.request("PUT", name, {"restype": "container"})
        return name

    def blobs(self, container: str, *, uncommitted: bool = False) -> dict[str, Blob]:
        """Every blob of ``container`` (with ``uncommitted``: also blobs that have only uncommitted
        blocks, the Azure counterpart of an unfinished multipart upload)."""
        out: dict[str, Blob] = {}
        marker = ""
        while True:
            query = {"restype": "container", "comp": "list"}
            if uncommitted:
                query["include"] = "uncommittedblobs"
            if marker:
                query["marker"] = marker
            root = ET.fromstring(self.request("GET", container, query))
            for blob in root.iter("Blob"):
                props = blob.find("Properties")
                assert props is not None
                name = blob.findtext("Name") or ""
                out[name] = Blob(name, int(props.findtext("Content-Length") or 0),
                                 props.findtext("Content-Type") or "",
                                 email.utils.parsedate_to_datetime(props.findtext("Last-Modified") or ""))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return out

    def get_blob(self, container: str, name: str) -> bytes:
        return self.request("GET", f"{container}/{name}")

    def put_blob(self, container: str, name: str, data: bytes) -> None:
        self.request("PUT", f"{container}/{name}", body=data, headers={"x-ms-blob-type": "BlockBlob"})
