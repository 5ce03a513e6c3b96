"""The lake in an object store: ``lake_dir: s3://bucket/prefix`` against a real S3-compatible server.

The server is moto's (``moto[server]``), started on a free loopback port for this module and
stopped afterwards: real HTTP, real S3 API, the same requests Polars and pyarrow send to AWS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from segpipe import lake
from segpipe.cli import main
from segpipe.config import ConfigError, load_config, parse_config
from segpipe.locks import lock_path, write_partition_file

from .browser_support import make_instance_home, make_sample_project, materialize

moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")
boto3 = pytest.importorskip("boto3")

BUCKET = "segpipe-test"
LAKE_URL = f"s3://{BUCKET}/lake"
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


def _digest(client, bucket: str, key: str) -> str:
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def _no_partial_uploads(client, bucket: str) -> bool:
    return not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_failed_write_keeps_the_previous_object_and_uploads_nothing(s3_server, monkeypatch):
    bucket = _bucket(s3_server, "segpipe-atomic")
    url = f"s3://{bucket}/lake/numbers/2025-01-01.parquet"
    lake.write_parquet_atomic(pl.DataFrame({"x": [1, 2]}), url)
    assert lake.exists(url) and not lake.exists(url.replace("2025-01", "2025-02"))
    before = _digest(s3_server, bucket, "lake/numbers/2025-01-01.parquet")

    def boom(self, file, **kwargs):
        file.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        lake.write_parquet_atomic(pl.DataFrame({"x": [3]}), url)
    monkeypatch.undo()
    assert lake.read_parquet(url)["x"].to_list() == [1, 2]
    assert _digest(s3_server, bucket, "lake/numbers/2025-01-01.parquet") == before
    assert list(_objects(s3_server, bucket)) == ["lake/numbers/2025-01-01.parquet"]
    assert _no_partial_uploads(s3_server, bucket)
    # a non-Parquet file through the partition writer: no lock file anywhere, a browser-friendly type
    page = f"s3://{bucket}/lake/segment_report/2025-01-01.html"
    assert write_partition_file(f"s3://{bucket}/lake", "segment_report", "2025-01-01", page,
                                lambda fh: fh.write(b"<html>ok</html>")) == []
    head = s3_server.head_object(Bucket=bucket, Key="lake/segment_report/2025-01-01.html")
    assert head["ContentType"] == "text/html" and head["ContentLength"] == len(b"<html>ok</html>")
    assert lake.list_files(f"s3://{bucket}/lake/segment_report") == ["2025-01-01.html"]
    assert not Path("s3:").exists()


def test_staged_write_and_stale_temp_cleanup_on_a_real_store(s3_server):
    """The write-aside-then-copy path Azure lakes use (pyarrow opens Azure blobs truncated), and the
    removal of temp objects a killed writer left, run against the S3 server through pyarrow.fs."""
    bucket = _bucket(s3_server, "segpipe-staged")
    fs = lake.filesystem(f"s3://{bucket}")
    lake.put_staged(fs, f"{bucket}/lake/a/2025-01-01.parquet", b"version 1")
    lake.put_staged(fs, f"{bucket}/lake/a/2025-01-01.parquet", b"version 2")
    assert s3_server.get_object(Bucket=bucket, Key="lake/a/2025-01-01.parquet")["Body"].read() == b"version 2"
    objects = _objects(s3_server, bucket)
    # pyarrow keeps the parent "folder" of a deleted object as an empty marker object; no temp object stays
    assert [k for k in objects if not k.endswith("/")] == ["lake/a/2025-01-01.parquet"]
    assert all(objects[k]["Size"] == 0 for k in objects if k.endswith("/"))
    for name in (".tmp-2025-01-01-dead_beef.part", ".tmp-2025-02-01-dead_beef.part"):
        s3_server.put_object(Bucket=bucket, Key=f"lake/a/{name}", Body=b"PAR1 partial")
    later = dt.datetime.now(dt.timezone.utc).timestamp() + 5
    assert lake.remove_stale_objects(fs, f"{bucket}/lake/a", "2025-01-01", later) == [".tmp-2025-01-01-dead_beef.part"]
    assert sorted(k for k in _objects(s3_server, bucket) if not k.endswith("/")) == [
        "lake/a/.tmp-2025-02-01-dead_beef.part", "lake/a/2025-01-01.parquet"]


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


def test_refresh_job_writes_the_lake_to_s3_like_a_local_lake(s3_server, tmp_path, capsys):
    """The segpipe_refresh job over two months with the lake in S3: every file a local-lake run
    writes is an object under the prefix, the data is equal, nothing partial or temporary is left,
    the CLI reads it back, and re-running month 2 rewrites the same objects with identical bytes."""
    _bucket(s3_server, BUCKET)
    local_config = make_sample_project(tmp_path, customers=200, months=2)
    cfg = yaml.safe_load(local_config.read_text())
    s3_config = tmp_path / "segpipe_s3.yaml"
    s3_config.write_text(yaml.safe_dump({**cfg, "lake_dir": LAKE_URL}, sort_keys=False))
    assert load_config(s3_config).lake_path == LAKE_URL

    result = materialize(s3_config, make_instance_home(tmp_path / "home_s3"), MONTHS[0], MONTHS[-1])
    assert result.success
    reference = materialize(local_config, make_instance_home(tmp_path / "home_local"), MONTHS[0], MONTHS[-1])
    assert reference.success
    assert not (tmp_path / "lake_s3").exists() and not Path("s3:").exists() and not (tmp_path / "s3:").exists()

    objects = _objects(s3_server, BUCKET)
    # The bucket steps' scratch prefixes are emptied by their merge step; the store keeps one empty
    # "folder" marker per bucketed asset (docs/scale.md), nothing else.
    scratch = {k for k in objects if k.startswith(("lake/_buckets/", "lake/_steps/"))}
    assert all(k.endswith("/") and k.count("/") == 3 and objects[k]["Size"] == 0 for k in scratch), scratch
    objects = {k: v for k, v in objects.items() if k not in scratch}
    keys = set(objects)
    for month in MONTHS:
        for asset in ("customer_features", "segment_membership", "segment_profiles", "segment_model"):
            assert f"lake/{asset}/{month}.parquet" in keys, f"{asset} {month} missing"
        assert f"lake/segment_report/{month}.html" in keys
        assert f"lake/exports/rfm/{month}.csv" in keys
    local = _local_files(tmp_path / "lake")
    assert keys == {f"lake/{rel}" for rel in local}  # the same layout, file for file
    assert all(".tmp-" not in k and not k.endswith((".part", "/")) for k in keys)
    assert _no_partial_uploads(s3_server, BUCKET)
    report = s3_server.head_object(Bucket=BUCKET, Key=f"lake/segment_report/{MONTHS[-1]}.html")
    assert report["ContentType"] == "text/html" and report["ContentLength"] > 10_000

    # Read back with Polars' native cloud reader: equal to the local lake, partition by partition.
    for month in MONTHS:
        url = f"{LAKE_URL}/customer_features/{month}.parquet"
        got = pl.read_parquet(url, storage_options=lake.storage_options(url))
        want = pl.read_parquet(local[f"customer_features/{month}.parquet"])
        assert got.height > 100
        assert_frame_equal(got, want)
    for rel, path in local.items():
        if rel.endswith(".parquet"):
            assert_frame_equal(lake.read_parquet(f"{LAKE_URL}/{rel}"), pl.read_parquet(path), check_exact=True)
        elif rel.endswith(".csv"):
            assert s3_server.get_object(Bucket=BUCKET, Key=f"lake/{rel}")["Body"].read() == path.read_bytes()

    # The CLI summary reads the object-store lake.
    capsys.readouterr()
    assert main(["--config", str(s3_config), "show", MONTHS[-1][:7]]) == 0
    out = capsys.readouterr().out
    assert "Ingestion, 2024-12:" in out and "RFM segments, snapshot 2024-12" in out

    # Re-running month 2 rewrites its objects (newer LastModified) with identical bytes; nothing is added.
    before = {k: _digest(s3_server, BUCKET, k) for k in keys}
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rerun = materialize(s3_config, make_instance_home(tmp_path / "home_s3"), MONTHS[-1])
    assert rerun.success
    after_objects = {k: v for k, v in _objects(s3_server, BUCKET).items() if k not in scratch}
    assert set(after_objects) == keys
    assert {k: _digest(s3_server, BUCKET, k) for k in keys} == before
    rewritten = after_objects[f"lake/customer_features/{MONTHS[-1]}.parquet"]["LastModified"]
    untouched = after_objects[f"lake/customer_features/{MONTHS[0]}.parquet"]["LastModified"]
    assert rewritten >= started > untouched
    assert _no_partial_uploads(s3_server, BUCKET)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
