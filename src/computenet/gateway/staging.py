"""Data staging for task runners: TES inputs in, outputs out, through fsspec.

Every copy is streamed in :data:`CHUNK_BYTES` pieces (a file is never held in memory whole)
and hashed on the way; outputs are read back from where they landed and their SHA-256 must
match what was sent. URLs may be ``file://`` (or a bare absolute path), ``http(s)://``
(inputs only: HTTP has no standard upload), or ``s3://`` (endpoint and keys from the usual
AWS variables or ``FSSPEC_S3_ENDPOINT_URL``). Any failure raises :class:`StagingError`
with a reason meant for the task's system logs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import fsspec
from fsspec.core import url_to_fs

from computenet.errors import ComputeNetError
from computenet.gateway.beneath import TaskDir
from computenet.gateway.safehttp import http_filesystem, refusal
from computenet.model.task import INPUT_SCHEMES, OUTPUT_SCHEMES
from computenet.model.urlpolicy import UrlPolicy

CHUNK_BYTES = 1 << 20
# S3 multipart parts must be at least 5 MiB; a write buffers one part, never the whole file.
WRITE_BLOCK_BYTES = 5 << 20


class StagingError(Exception):
    """An input could not be fetched or an output could not be stored."""


@dataclass(frozen=True)
class OutputFile:
    """One file stored for a TES output (its ``outputFileLog``, plus the checksum)."""

    url: str
    path: str
    size_bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON for the runner's result file."""
        return asdict(self)


def scheme(url: str) -> str:
    """The URL's scheme; a bare path counts as ``file``."""
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def _fs(url: str, allowed: tuple[str, ...]) -> tuple[fsspec.AbstractFileSystem, str]:
    proto = scheme(url)
    if proto not in allowed:
        raise StagingError(f"{url}: scheme {proto!r} is not supported here (use {allowed})")
    try:
        fs, path = url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StagingError(f"{url}: {exc}") from None
    return fs, path


def copy_stream(src: BinaryIO, dst: BinaryIO) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` chunk by chunk; return the size and SHA-256 hex digest."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_BYTES):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _hash_remote(fs: fsspec.AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb", block_size=CHUNK_BYTES) as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _why(exc: BaseException) -> str:
    if (refused := refusal(exc)) is not None:
        return str(refused)
    if isinstance(exc, FileNotFoundError):
        return "not found"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def allowed(url: str, policy: UrlPolicy | None, what: str) -> None:
    """Check ``url`` against this gateway's policy just before it is opened: the node
    checked it at submit, from its own network and possibly with another DNS answer."""
    if policy is None:
        return
    try:
        policy.check(url)
    except ComputeNetError as exc:
        raise StagingError(f"{what} {url}: refused by this gateway: {exc.message}") from None


def _input_fs(url: str, policy: UrlPolicy | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system to fetch an input from: over HTTP(S), one that checks every redirect
    and connects only to the addresses the policy judged (no second DNS answer)."""
    if policy is not None and scheme(url) in ("http", "https"):
        return http_filesystem(policy), url
    return _fs(url, INPUT_SCHEMES)


def stage_input(item: dict[str, Any], target: Path, policy: UrlPolicy | None = None) -> None:
    """Fetch one TES input (``content``, a file or a directory) to ``target``, if
    ``policy`` (when given) allows its URL."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if item.get("content") is not None:
        target.write_text(item["content"])
        return
    url = str(item["url"])
    allowed(url, policy, "input")
    fs, root = _input_fs(url, policy)
    try:
        if item.get("type") == "DIRECTORY":
            files = fs.find(root)
            if not files and not fs.isdir(root):
                raise FileNotFoundError(root)
            base = root.rstrip("/")
            for path in files:
                rel = path[len(base) :].lstrip("/") if path.startswith(base) else Path(path).name
                _fetch(fs, path, target / rel)
            target.mkdir(parents=True, exist_ok=True)
        else:
            _fetch(fs, root, target)
    except StagingError:
        raise
    except Exception as exc:  # fsspec backends raise their own error types
        raise StagingError(f"input {url}: {_why(exc)}") from None


def _fetch(fs: fsspec.AbstractFileSystem, path: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = None
    info = fs.info(path)
    if isinstance(info.get("size"), int):
        expected = info["size"]
    with fs.open(path, "rb", block_size=CHUNK_BYTES) as src, target.open("wb") as dst:
        size, _ = copy_stream(src, dst)
    if expected is not None and size != expected:
        raise StagingError(f"input {path}: got {size} bytes, the source says {expected}")


def _matches(item: dict[str, Any], task: TaskDir) -> list[str]:
    """Task paths of the files an output names; a wildcard path is a glob (``**`` too).
    Nothing is followed: a symlink the task made is never an output, nor a way out."""
    path = str(item["path"])
    if any(c in path for c in "*?["):
        return ["/" + f for f in task.glob(path)]
    kind = task.kind(path)
    if item.get("type") == "DIRECTORY":
        if kind != "dir":
            raise StagingError(f"output {path}: not a directory after the task ran")
        return ["/" + f for f in task.files(path)]
    if kind != "file":
        raise StagingError(f"output {path}: the task did not produce it (as a regular file)")
    return [path]


def stage_outputs(
    item: dict[str, Any], task: TaskDir, policy: UrlPolicy | None = None
) -> list[OutputFile]:
    """Upload one TES output, if ``policy`` (when given) allows its URL, from the task's
    directory ``task`` (whose root holds the task's ``/``)."""
    url = str(item["url"])
    allowed(url, policy, "output")
    fs, root = _fs(url, OUTPUT_SCHEMES)
    wildcard = any(c in str(item["path"]) for c in "*?[")
    directory = item.get("type") == "DIRECTORY"
    base = "/" + str((item.get("path_prefix") or "") if wildcard else item["path"]).lstrip("/")
    stored = []
    try:
        for task_path in _matches(item, task):
            if wildcard or directory:
                rel = (
                    task_path[len(base) :].lstrip("/")
                    if task_path.startswith(base)
                    else PurePosixPath(task_path).name
                )
                dest, dest_url = root.rstrip("/") + "/" + rel, url.rstrip("/") + "/" + rel
            else:
                dest, dest_url = root, url
            parent = dest.rsplit("/", 1)[0]
            if scheme(url) == "file" and parent:
                fs.makedirs(parent, exist_ok=True)
            with (
                task.open_read(task_path) as src,
                fs.open(dest, "wb", block_size=WRITE_BLOCK_BYTES) as dst,
            ):
                size, sha = copy_stream(src, dst)
            if _hash_remote(fs, dest) != sha:
                raise StagingError(f"output {dest_url}: checksum differs after upload")
            stored.append(OutputFile(url=dest_url, path=task_path, size_bytes=size, sha256=sha))
    except StagingError:
        raise
    except Exception as exc:
        raise StagingError(f"output {url}: {_why(exc)}") from None
    return stored
