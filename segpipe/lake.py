"""The Parquet lake: one file per asset and partition, written atomically.

Layout: ``{lake_dir}/{asset_name}/{partition_key}.parquet`` for partitioned assets and
``{lake_dir}/{asset_name}.parquet`` otherwise.

The lake root is a local folder (the default) or an object-store URL: ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix`` (also ``abfs[s]://container/prefix`` and
``abfs[s]://container@account.dfs.core.windows.net/prefix``). A location in a local lake is a
:class:`~pathlib.Path`; in an object-store lake it is a ``str`` URL, so one call site serves both:
:func:`asset_path`, :func:`lake_join`, :func:`exists`, :func:`scan_parquet`, :func:`read_parquet`,
:func:`write_atomic`.

Object stores are reached with credentials from the environment only (never from a file; see
:func:`store_settings`): Polars' native cloud I/O reads (``storage_options``), ``pyarrow.fs``
lists, checks and writes.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import polars as pl

TMP_PREFIX = ".tmp-"

#: URL scheme -> object store kind.
REMOTE_SCHEMES: dict[str, str] = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs",
                                  "az": "az", "abfs": "az", "abfss": "az"}

#: Environment variables each kind of object store reads (nothing else configures it).
STORE_ENV: dict[str, tuple[str, ...]] = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
           "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS", "GCS_ENDPOINT", "GCS_ALLOW_HTTP", "GCS_ANONYMOUS"),
    "az": ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ENDPOINT", "AZURE_ALLOW_HTTP"),
}

Location = Path | str


# -- locations ------------------------------------------------------------------------------------
def is_url(value: str | Path) -> bool:
    """``value`` is written as a URL (``scheme://...``), supported or not."""
    return isinstance(value, str) and "://" in value


def is_remote(location: str | Path) -> bool:
    """``location`` is in an object store (a ``str`` URL with a supported scheme)."""
    return is_url(location) and urlsplit(str(location)).scheme.lower() in REMOTE_SCHEMES


@dataclass(frozen=True)
class StoreURL:
    """An object-store URL taken apart: kind (``s3``/``gs``/``az``), bucket (container), key
    (no leading or trailing slash) and, for Azure, the account named in the host."""

    kind: str
    bucket: str
    key: str
    account: str | None = None

    @property
    def fs_path(self) -> str:
        """The ``bucket/key`` path ``pyarrow.fs`` takes."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket


def parse_url(url: str) -> StoreURL:
    """Split an object-store URL; ValueError naming what is wrong (scheme, bucket)."""
    parts = urlsplit(url)
    kind = REMOTE_SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}; expected a local path or "
                         "s3://bucket/prefix, gs://bucket/prefix or az://container/prefix")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query or fragment allowed (credentials come from environment variables)")
    bucket, account = parts.netloc, None
    if kind == "az" and "@" in bucket:
        bucket, host = bucket.split("@", 1)
        account = host.split(".", 1)[0] or None
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (container): expected {parts.scheme}://bucket/prefix")
    return StoreURL(kind, bucket, parts.path.strip("/"), account)


def normalize_url(url: str) -> str:
    """``url`` checked (:func:`parse_url`) and without trailing slashes."""
    parse_url(url)
    scheme, rest = url.split("://", 1)
    return f"{scheme.lower()}://{rest.rstrip('/')}"


def lake_root(lake_dir: str, base_dir: str | Path = ".") -> Location:
    """The lake root of a ``lake_dir`` setting: the normalized URL of an object store, else the
    local folder (relative paths resolved against ``base_dir``, ``~`` expanded)."""
    if is_url(lake_dir):
        return normalize_url(lake_dir)
    p = Path(os.path.expanduser(lake_dir))
    return p if p.is_absolute() else (Path(base_dir) / p).resolve()


def lake_join(base: Location, *parts: str) -> Location:
    """``base / part / ...`` for a folder or a URL."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return Path(base).joinpath(*parts)


def asset_path(lake_dir: Location, asset_name: str, partition_key: str | None = None, *,
               suffix: str = ".parquet") -> Location:
    """Where an asset (partition) lives in the lake: a Path in a local lake, a URL in an object store."""
    if partition_key:
        return lake_join(lake_dir, asset_name, f"{partition_key}{suffix}")
    return lake_join(lake_dir, f"{asset_name}{suffix}")


def split_location(location: Location) -> tuple[Location, str]:
    """(parent folder, file name) of a Path or URL."""
    if is_remote(location):
        parent, _, name = str(location).rpartition("/")
        return parent, name
    path = Path(location)
    return path.parent, path.name


def location_uri(location: Location) -> str:
    """A URI for metadata and links: ``file://`` for local files, the URL itself otherwise."""
    return str(location) if is_remote(location) else Path(location).resolve().as_uri()


# -- object-store settings: environment variables only ---------------------------------------------
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class StoreSettings:
    """How to reach one kind of object store, built from environment variables in one place:
    ``storage_options`` for Polars (object_store keys) and ``fs_kwargs`` for the ``pyarrow.fs``
    filesystem of the same store."""

    kind: str
    storage_options: dict[str, str] = field(default_factory=dict)
    fs_kwargs: dict[str, object] = field(default_factory=dict)


def store_settings(kind: str, env: Mapping[str, str] | None = None, *, account: str | None = None) -> StoreSettings:
    """Settings of an ``s3``, ``gs`` or ``az`` store from ``env`` (default ``os.environ``).

    * S3 (and S3-compatible servers such as MinIO): ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
      ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), ``AWS_ENDPOINT_URL``
      (or ``AWS_ENDPOINT_URL_S3``) for a custom endpoint, ``AWS_ALLOW_HTTP=true`` to allow an
      ``http://`` endpoint. Without keys both libraries fall back to the standard AWS chain
      (profile files, instance or container role).
    * GCS: ``GOOGLE_APPLICATION_CREDENTIALS`` (a credentials JSON file); without it the default
      Google credentials, or none with ``GCS_ANONYMOUS=true`` (unsigned requests: public buckets, an
      emulator such as fake-gcs-server). ``GCS_ENDPOINT`` (``http(s)://host[:port]``) overrides the
      storage endpoint; ``GCS_ALLOW_HTTP=true`` to allow an ``http://`` endpoint.
    * Azure: ``AZURE_STORAGE_ACCOUNT_NAME`` (unless the URL names the account) and
      ``AZURE_STORAGE_ACCOUNT_KEY``; without a key the default Azure credential chain.
      ``AZURE_STORAGE_ENDPOINT`` overrides the blob endpoint (an emulator such as Azurite, a
      sovereign cloud, a private endpoint), see :func:`azure_endpoint`; ``AZURE_ALLOW_HTTP=true``
      to allow an ``http://`` endpoint.
    """
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    opts: dict[str, str] = {}
    fs: dict[str, object] = {}
    if kind == "s3":
        key_id, secret = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
        if bool(key_id) != bool(secret):
            raise ValueError("set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither")
        token = get("AWS_SESSION_TOKEN")
        region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
        endpoint = get("AWS_ENDPOINT_URL_S3") or get("AWS_ENDPOINT_URL")
        allow_http = _truthy(get("AWS_ALLOW_HTTP"))
        if key_id:
            opts |= {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
            fs |= {"access_key": key_id, "secret_key": secret}
        if token:
            opts["aws_session_token"] = token
            fs["session_token"] = token
        if region:
            opts["aws_region"] = region
            fs["region"] = region
        if endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"AWS_ENDPOINT_URL must be http(s)://host[:port], got {endpoint!r}")
            if parts.scheme == "http" and not allow_http:
                raise ValueError(f"AWS_ENDPOINT_URL {endpoint} is plain http: set AWS_ALLOW_HTTP=true to allow "
                                 "unencrypted connections (a local MinIO, a test server)")
            opts["aws_endpoint_url"] = endpoint.rstrip("/")
            fs |= {"endpoint_override": parts.netloc + parts.path.rstrip("/"), "scheme": parts.scheme}
        if allow_http:
            opts["aws_allow_http"] = "true"
    elif kind == "gs":
        creds = get("GOOGLE_APPLICATION_CREDENTIALS")
        anonymous = _truthy(get("GCS_ANONYMOUS"))
        endpoint = get("GCS_ENDPOINT")
        allow_http = _truthy(get("GCS_ALLOW_HTTP"))
        if creds and anonymous:
            raise ValueError("set GOOGLE_APPLICATION_CREDENTIALS or GCS_ANONYMOUS=true, not both")
        if creds:
            opts["google_application_credentials"] = creds
            # pyarrow's GcsFileSystem reads GOOGLE_APPLICATION_CREDENTIALS itself (Google default credentials).
        if anonymous:
            opts["google_skip_signature"] = "true"
            fs["anonymous"] = True
        if endpoint:
            parts = urlsplit(endpoint)
            if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/")
                    or parts.query or parts.fragment):
                raise ValueError(f"GCS_ENDPOINT must be http(s)://host[:port] (no path), got {endpoint!r}")
            if parts.scheme == "http" and not allow_http:
                raise ValueError(f"GCS_ENDPOINT {endpoint} is plain http: set GCS_ALLOW_HTTP=true to allow "
                                 "unencrypted connections (a local fake-gcs-server, a test server)")
            # Polars (object_store) sends its reads to the XML API at this URL, pyarrow its writes and
            # listings to the JSON API (/storage/v1, /upload/storage/v1) of the same host.
            opts["google_base_url"] = f"{parts.scheme}://{parts.netloc}"
            fs |= {"endpoint_override": parts.netloc, "scheme": parts.scheme}
        if allow_http:
            opts["allow_http"] = "true"
    elif kind == "az":
        name = account or get("AZURE_STORAGE_ACCOUNT_NAME")
        if not name:
            raise ValueError("Azure lake: set AZURE_STORAGE_ACCOUNT_NAME or name the account in the URL "
                             "(abfss://container@account.dfs.core.windows.net/prefix)")
        key = get("AZURE_STORAGE_ACCOUNT_KEY")
        opts["azure_storage_account_name"] = name
        fs["account_name"] = name
        if key:
            opts["azure_storage_account_key"] = key
            fs["account_key"] = key
        endpoint = get("AZURE_STORAGE_ENDPOINT")
        allow_http = _truthy(get("AZURE_ALLOW_HTTP"))
        if endpoint:
            url, authorities = azure_endpoint(endpoint, name, allow_http=allow_http)
            opts["azure_endpoint"] = url
            fs |= authorities
        if allow_http:
            opts["azure_allow_http"] = "true"
    else:
        raise ValueError(f"unknown object store kind {kind!r}")
    return StoreSettings(kind, opts, fs)


def azure_endpoint(endpoint: str, account: str, *, allow_http: bool = False) -> tuple[str, dict[str, str]]:
    """The blob endpoint of ``AZURE_STORAGE_ENDPOINT`` for both libraries: (the URL Polars'
    ``azure_endpoint`` takes, the ``pyarrow.fs.AzureFileSystem`` keyword arguments).

    Two forms, because pyarrow builds the account's URL from an authority in one of two ways:

    * path-style, the account as the only path segment: ``http://127.0.0.1:10000/devstoreaccount1``
      (Azurite and other emulators) -> ``blob_storage_authority="127.0.0.1:10000"``;
    * host-style, the account as the first label of the host: ``https://acct.blob.core.chinacloudapi.cn``
      -> ``blob_storage_authority=".blob.core.chinacloudapi.cn"``.

    The Data Lake (dfs) endpoint pyarrow also calls (to detect a hierarchical namespace) is the same
    authority with ``.blob.`` replaced by ``.dfs.``, or the same authority for an emulator.
    ValueError naming the variable for anything else, and for ``http://`` unless ``allow_http``.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"AZURE_STORAGE_ENDPOINT must be http(s)://host[:port]/{account} (an emulator such as "
                         f"Azurite) or https://{account}.host (the account's blob endpoint), got {endpoint!r}")
    if parts.scheme == "http" and not allow_http:
        raise ValueError(f"AZURE_STORAGE_ENDPOINT {endpoint} is plain http: set AZURE_ALLOW_HTTP=true to allow "
                         "unencrypted connections (a local Azurite, a test server)")
    path = parts.path.strip("/")
    if path:
        if path != account:
            raise ValueError(f"AZURE_STORAGE_ENDPOINT {endpoint}: a path-style endpoint must end with the account "
                             f"name, /{account} (its only path segment), not /{path}")
        blob = dfs = parts.netloc
    else:
        first, dot, rest = parts.netloc.partition(".")
        if first.lower() != account.lower() or not dot or not rest:
            raise ValueError(f"AZURE_STORAGE_ENDPOINT {endpoint} names neither the account {account!r} as its first "
                             f"host label (https://{account}.blob...) nor as its path (http://host:port/{account})")
        blob = "." + rest
        dfs = blob.replace(".blob.", ".dfs.", 1)
    url = f"{parts.scheme}://{parts.netloc}" + (f"/{path}" if path else "")
    return url, {"blob_storage_authority": blob, "blob_storage_scheme": parts.scheme,
                 "dfs_storage_authority": dfs, "dfs_storage_scheme": parts.scheme}


def _env_items(kind: str, env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    env = os.environ if env is None else env
    return tuple((k, env[k]) for k in STORE_ENV[kind] if k in env)


def storage_options(url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Polars ``storage_options`` for ``url`` (from the environment, see :func:`store_settings`)."""
    u = parse_url(url)
    return dict(store_settings(u.kind, env, account=u.account).storage_options)


def filesystem(url: str, env: Mapping[str, str] | None = None):
    """The ``pyarrow.fs`` filesystem of ``url``'s store, from the same settings as
    :func:`storage_options` (cached per store and environment)."""
    u = parse_url(url)
    return _filesystem(u.kind, u.account, _env_items(u.kind, env))


@lru_cache(maxsize=16)
def _filesystem(kind: str, account: str | None, env_items: tuple[tuple[str, str], ...]):
    import pyarrow.fs as pafs

    kwargs = store_settings(kind, dict(env_items), account=account).fs_kwargs
    if kind == "s3":
        return pafs.S3FileSystem(**kwargs)
    if kind == "gs":
        return pafs.GcsFileSystem(**kwargs)
    return pafs.AzureFileSystem(**kwargs)


# -- reading and checking ---------------------------------------------------------------------------
def exists(location: Location) -> bool:
    """``location`` is an existing file (object)."""
    if not is_remote(location):
        return Path(location).is_file()
    import pyarrow.fs as pafs

    return filesystem(str(location)).get_file_info(parse_url(str(location)).fs_path).type == pafs.FileType.File


def scan_parquet(location: Location, **kwargs) -> pl.LazyFrame:
    """``pl.scan_parquet`` of a lake file (Polars' native cloud reader for object stores)."""
    if is_remote(location):
        return pl.scan_parquet(str(location), storage_options=storage_options(str(location)), **kwargs)
    return pl.scan_parquet(location, **kwargs)


def read_parquet(location: Location, **kwargs) -> pl.DataFrame:
    """``pl.read_parquet`` of a lake file (see :func:`scan_parquet`)."""
    if is_remote(location):
        return pl.read_parquet(str(location), storage_options=storage_options(str(location)), **kwargs)
    return pl.read_parquet(location, **kwargs)


def list_files(folder: Location) -> list[str]:
    """Names of the files directly in ``folder`` (none if it does not exist)."""
    if not is_remote(folder):
        try:
            return sorted(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False))
        except FileNotFoundError:
            return []
    return sorted(Path(i.path).name for i in _remote_listing(str(folder)))


def _remote_listing(url: str) -> list:
    return _files_in(filesystem(url), parse_url(url).fs_path)


def _files_in(fs, fs_folder: str) -> list:
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(fs_folder, allow_not_found=True, recursive=False)
    return [i for i in fs.get_file_info(sel) if i.type == pafs.FileType.File]


def check_reachable(url: str) -> None:
    """Raise OSError (or ValueError for bad settings) unless the bucket of ``url`` can be reached
    with the environment's credentials."""
    import pyarrow.fs as pafs

    u = parse_url(url)
    info = filesystem(url).get_file_info(u.bucket)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"bucket (container) {u.bucket!r} does not exist")


def remove(location: Location) -> None:
    """Delete a lake file (object) if it exists."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    fs = filesystem(str(location))
    path = parse_url(str(location)).fs_path
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def remove_folder(location: Location) -> None:
    """Delete a lake folder (prefix) and everything in it, if it exists: one recursive delete, not
    one call per file (in an object store each call is a request)."""
    if not is_remote(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    try:
        filesystem(str(location)).delete_dir(parse_url(str(location)).fs_path)
    except OSError:  # not there (FileNotFoundError), or nothing under the prefix
        pass


def read_bytes(location: Location) -> bytes:
    """The content of a lake file (object)."""
    if not is_remote(location):
        return Path(location).read_bytes()
    with filesystem(str(location)).open_input_stream(parse_url(str(location)).fs_path) as fh:
        return fh.read()


# -- writing ----------------------------------------------------------------------------------------
def write_atomic(path: Location, write: Callable[[BinaryIO], object]) -> Location:
    """Write a file so that readers see the old version or the new one, never a part.

    Local: ``write(fh)`` writes to a temporary file in the same folder (name starts with ``.tmp-``
    and ends with ``.part``, so no data glob picks it up), which is flushed to disk and then renamed
    over ``path``. On any error the temporary file is removed and the old version stays.

    Object store: ``write(fh)`` writes to memory; only a complete object is then uploaded
    (:func:`put_object`), so an error while writing uploads nothing.
    """
    if is_remote(path):
        buffer = io.BytesIO()
        write(buffer)
        put_object(str(path), buffer.getvalue())
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.stem + "-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def put_object(url: str, data: bytes) -> None:
    """Upload ``data`` as the object at ``url`` so that it appears whole or not at all.

    S3 and GCS: one output stream, one write, then close. The object becomes visible only when
    the upload completes (a single PUT, or the completion of an S3 multipart / GCS resumable upload);
    an upload that fails or is killed leaves the previous version. Azure: ``pyarrow``'s Azure
    output stream creates (truncates) the blob when it is opened, so the data goes to a blob in
    a hidden ``.tmp-*.part/`` folder beside the target first and is then copied over it
    server-side; the temp folder is deleted (or, if that fails, by the next write of the target).
    See :func:`put_staged`.
    """
    u = parse_url(url)
    fs = filesystem(url)
    metadata = {"Content-Type": content_type(u.key)}
    if u.kind == "az":
        put_staged(fs, u.fs_path, data, metadata=metadata)
    else:
        _upload(fs, u.fs_path, data, metadata=metadata)


def put_staged(fs, path: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
    """Upload ``data`` to ``{folder}/.tmp-{stem}-{token}.part/{name}`` beside ``path`` (in
    ``pyarrow.fs`` filesystem ``fs``), copy it over ``path`` server-side, then delete that temp
    folder. A failure before the copy leaves the previous version; a temp folder left behind is
    removed by :func:`remove_stale_temp_files` on the next write of ``path``. ``metadata`` (the
    Content-Type) is set on the temp object; the server-side copy carries it to ``path``.

    The temp object has a folder of its own because deleting a folder is a listing and one batch
    delete on Azure, while pyarrow deletes a single blob under a lease that it then releases, and
    leaves an empty "folder" marker blob beside the target. (Azurite answers that release with a
    404 that the Azure SDK's HTTP client sometimes fails to read, and retries for 7 s or more.)"""
    parent, name = path.rsplit("/", 1)
    tmp_dir = f"{parent}/{TMP_PREFIX}{Path(name).stem}-{secrets.token_hex(8)}.part"
    tmp = f"{tmp_dir}/{name}"
    _upload(fs, tmp, data, metadata=metadata)
    try:
        fs.copy_file(tmp, path)
    finally:
        try:
            fs.delete_dir(tmp_dir)
        except (OSError, NotImplementedError):
            pass  # left for remove_stale_temp_files


def content_type(name: str) -> str:
    """The Content-Type an object named ``name`` is stored with (so a browser shows the report)."""
    if name.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _upload(fs, path: str, data: bytes, *, metadata: dict[str, str] | None) -> None:
    with fs.open_output_stream(path, metadata=metadata) as out:
        out.write(data)


def write_parquet_atomic(frame: pl.DataFrame, path: Location) -> Location:
    """:func:`write_atomic` of a Parquet file (zstd, with statistics)."""
    return write_atomic(path, lambda fh: frame.write_parquet(fh, compression="zstd", statistics=True))


def temp_file_pattern(stem: str) -> re.Pattern[str]:
    """Names :func:`write_parquet_atomic` gives the temporary files of ``{stem}.parquet``."""
    return re.compile(rf"^{re.escape(TMP_PREFIX + stem)}-[A-Za-z0-9_]+\.part$")


def remove_stale_temp_files(folder: Location, stem: str, *, older_than: float | None = None) -> list[Location]:
    """Delete leftover temporary files of ``{folder}/{stem}.parquet`` (a writer killed mid-write).

    Only the temp files of that one target are touched, and only those last modified before
    ``older_than`` (seconds since the epoch; default now). Call it while holding the target's
    partition lock (:func:`segpipe.locks.partition_lock`): then no live writer owns such a file.
    In an object store (where only Azure writes use temp objects) the run that owns the partition
    in Dagster is that lock. Returns the removed paths (URLs).
    """
    cutoff = time.time() if older_than is None else older_than
    pattern = temp_file_pattern(stem)
    removed: list[Location] = []
    if is_remote(folder):
        u = parse_url(str(folder))
        if u.kind != "az":
            return removed  # S3 and GCS writes never create temp objects: nothing to list
        return [lake_join(folder, name) for name in remove_stale_objects(filesystem(str(folder)), u.fs_path, stem, cutoff)]
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:
            continue
    return removed


def remove_stale_objects(fs, fs_folder: str, stem: str, older_than: float) -> list[str]:
    """The object-store half of :func:`remove_stale_temp_files`: delete the temp folders of
    ``{stem}`` in ``fs_folder`` (a ``pyarrow.fs`` path; see :func:`put_staged`) whose objects were
    all last modified before ``older_than``, and temp objects of that name; returns their names."""
    import pyarrow.fs as pafs

    pattern = temp_file_pattern(stem)
    removed: list[str] = []
    sel = pafs.FileSelector(fs_folder, allow_not_found=True, recursive=False)
    for info in fs.get_file_info(sel):
        name = Path(info.path).name
        if not pattern.match(name):
            continue
        try:
            if info.type == pafs.FileType.Directory:
                inside = [i for i in fs.get_file_info(pafs.FileSelector(info.path, allow_not_found=True, recursive=True))
                          if i.type == pafs.FileType.File]
                if any(i.mtime is None or i.mtime.timestamp() >= older_than for i in inside):
                    continue
                fs.delete_dir(info.path)
            elif info.type == pafs.FileType.File and info.mtime is not None and info.mtime.timestamp() < older_than:
                fs.delete_file(info.path)
            else:
                continue
        except FileNotFoundError:
            continue
        removed.append(name)
    return removed
