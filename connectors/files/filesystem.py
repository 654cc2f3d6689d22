"""Local folders and S3 prefixes through ``pyarrow.fs``: one root, listing by glob, opening and writing files.

A :class:`Root` is a folder (``file:///abs/dir``, ``./dir``) or a bucket and prefix (``s3://bucket/prefix``).
Paths handed out and taken in are relative to it, '/'-separated. S3 settings come from the endpoint's
``options`` (carried in the URL's query by :func:`copyjob.filesets.endpoint_url`), else from the environment
(``AWS_*``).

Nothing is read from outside the root: a pattern may not hold ``..`` or be absolute, and in a local folder a
symbolic link (to a file or a folder) that resolves outside the root is skipped with a warning, when listing
and again when opening (the file actually opened is checked), unless the source allows it
(``follow_symlinks_outside``). Links that stay inside the root are followed; a folder link back into one of
its own parents is not descended twice. Files and folders written to a local root are private
(:mod:`copyjob.core.private`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from copyjob.core.contracts import FileInfo
from copyjob.core.errors import AuthenticationFailed, ConfigurationError, ConnectionFailed, ConnectorError
from copyjob.core.paths import FOLLOW_SYMLINKS_OUTSIDE, pattern_problem
from copyjob.core.private import create_private_file, make_private_folder
from copyjob.core.urls import ConnectionUrl

log = logging.getLogger("copyjob")

S3_OPTIONS = ("endpoint_url", "access_key", "secret_key", "session_token", "region")
URL_OPTIONS = ("format", FOLLOW_SYMLINKS_OUTSIDE)
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
_PROC_FD = "/proc/self/fd"
_WILDCARD = re.compile(r"[*?\[]")
_DENIED = ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "HTTP status 403")
T = TypeVar("T")


@dataclass(frozen=True)
class Root:
    fs: pafs.FileSystem
    base: str
    """The root's path inside ``fs`` ('/'-separated, no trailing '/')."""
    display: str
    """For messages: ``/abs/dir`` or ``s3://bucket/prefix``."""
    follow_outside: bool = False
    """Read symbolic links that resolve outside the root (``follow_symlinks_outside: true``)."""

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @cached_property
    def real(self) -> str:
        """A local root's path with every symbolic link resolved: what "inside" is measured against."""
        return os.path.realpath(self.base)

    def inside(self, real_path: str) -> bool:
        """Whether a resolved local path lies in the root (or is it)."""
        real = self.real
        return real_path == real or real_path.startswith(real.rstrip("/") + "/")

    def full(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    def where(self, relative: str) -> str:
        """A file as people see it in messages."""
        return f"{self.display.rstrip('/')}/{relative}"


def guarded(action: Callable[[], T], where: str) -> T:
    """Run a file-system call, translating pyarrow's OSErrors into copyjob's connector errors."""
    try:
        return action()
    except OSError as exc:
        text = " ".join(str(exc).split())
        if any(m in text for m in _DENIED):
            raise AuthenticationFailed(f"{where}: access denied: {text}") from exc
        if isinstance(exc, FileNotFoundError):
            raise ConnectorError(f"{where}: not found: {text}") from exc
        raise ConnectionFailed(f"{where}: {text}") from exc


# ---------------------------------------------------------------- opening a root


def open_root(url: ConnectionUrl, *, create: bool = False) -> Root:
    """The folder or S3 prefix of ``url``; ``create`` makes a missing local folder (destinations)."""
    unknown = sorted(set(url.query) - set(S3_OPTIONS) - set(URL_OPTIONS))
    if unknown:
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)} for {url} "
                                 f"(known: {', '.join(S3_OPTIONS + URL_OPTIONS)})")
    if url.scheme == "s3":
        return _s3_root(url)
    if url.path is None or str(url.path) == ":memory:":
        raise ConfigurationError(f"{url.scheme}:// needs a folder: {url}")
    follow = url.query.get(FOLLOW_SYMLINKS_OUTSIDE, "").lower() in ("true", "1", "yes")
    root = Root(pafs.LocalFileSystem(), url.path.as_posix().rstrip("/") or "/", str(url.path), follow)
    if create:
        guarded(lambda: make_private_folder(root.base), root.display)
    elif root.fs.get_file_info(root.base).type != pafs.FileType.Directory:
        raise ConnectionFailed(f"folder {root.display} does not exist", retriable=False)
    return root


def _s3_root(url: ConnectionUrl) -> Root:
    if not url.host:
        raise ConfigurationError(f"s3:// needs a bucket: {url}")
    q = url.query
    kwargs: dict[str, object] = {}
    endpoint = q.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, sep, rest = endpoint.partition("://")
        kwargs["endpoint_override"] = rest.rstrip("/") if sep else endpoint
        kwargs["scheme"] = scheme if sep else "https"
    region = q.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if q.get("access_key") or q.get("secret_key"):
        if not (q.get("access_key") and q.get("secret_key")):
            raise ConfigurationError(f"give both access_key and secret_key for {url}")
        kwargs.update(access_key=q["access_key"], secret_key=q["secret_key"], session_token=q.get("session_token"))
    # otherwise pyarrow's default chain: AWS_ACCESS_KEY_ID and friends, profiles, instance roles
    prefix = (url.database or "").strip("/")
    display = f"s3://{url.host}/{prefix}" if prefix else f"s3://{url.host}"
    fs = guarded(lambda: pafs.S3FileSystem(**kwargs), display)
    info = guarded(lambda: fs.get_file_info(url.host or ""), display)
    if info.type == pafs.FileType.NotFound:
        raise ConnectionFailed(f"S3 bucket {url.host} not found ({display})", retriable=False)
    return Root(fs, f"{url.host}/{prefix}".rstrip("/"), display)


# ---------------------------------------------------------------- listing


@lru_cache(maxsize=64)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` stay within a folder, ``[abc]`` is a class, a ``**`` segment is any number of folders."""
    parts = pattern.strip("/").split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(out))


def _segment_regex(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        ch = part[i]
        if ch == "*":
            out.append("[^/]*")
            while i + 1 < len(part) and part[i + 1] == "*":
                i += 1
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and part.find("]", i + 2) > 0:  # a class; "[]x]" holds "]"; a lone "[" is literal
            end = part.find("]", i + 2)
            body = part[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def list_files(root: Root, pattern: str) -> list[FileInfo]:
    """The files under ``root`` matching ``pattern``, from one listing of the folder the pattern starts in
    (recursive only when the pattern reaches below it). Names starting with '.' or '_' in the part the pattern
    matches are skipped: temporary and metadata files (as Spark and Arrow datasets do). ``.`` segments and
    empty ones are ignored; a ``..`` segment or an absolute pattern is refused (the job file's check says so
    first). In a local folder, symbolic links resolving outside the root are skipped with a warning."""
    problem = pattern_problem(pattern, root.display)
    if problem:
        raise ConfigurationError(problem)
    parts = [p for p in pattern.split("/") if p not in ("", ".")] or [""]
    pattern = "/".join(parts)
    fixed = 0
    while fixed < len(parts) - 1 and not _WILDCARD.search(parts[fixed]):
        fixed += 1
    recursive = len(parts) - fixed > 1 or "**" in parts[fixed:]
    if root.local:
        return guarded(lambda: _list_local(root, "/".join(parts[:fixed]), recursive, glob_regex(pattern)),
                       root.display)
    start = root.full("/".join(parts[:fixed]))
    selector = pafs.FileSelector(start, recursive=recursive, allow_not_found=True)
    infos = guarded(lambda: root.fs.get_file_info(selector), root.display)
    regex = glob_regex(pattern)
    cut = len(root.base) + 1 if root.base != "/" else 1
    found = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[cut:]
        if any(s.startswith((".", "_")) for s in rel.split("/")[fixed:]) or not regex.fullmatch(rel):
            continue
        found.append(FileInfo(path=rel, mtime_ns=int(info.mtime_ns or 0), size=int(info.size or 0)))
    return found


def _list_local(root: Root, start: str, recursive: bool, regex: re.Pattern[str]) -> list[FileInfo]:
    """A local folder's listing, walked with ``os.scandir``: symbolic links resolving outside the root are
    skipped with a warning unless the root follows them, and a folder link is not descended into a folder
    it is already inside (a link to a parent would loop)."""
    start_full = root.full(start)
    real_start = os.path.realpath(start_full)
    if start and not root.follow_outside and not root.inside(real_start):
        _skipped(root, start, real_start)
        return []
    found: list[FileInfo] = []
    folders: list[tuple[str, str, tuple[str, ...]]] = [(start, start_full, (real_start,))]
    while folders:
        rel_dir, full_dir, parents = folders.pop()
        try:
            entries = list(os.scandir(full_dir))
        except (FileNotFoundError, NotADirectoryError):  # gone meanwhile, or the start is no folder
            continue
        for entry in entries:
            if entry.name.startswith((".", "_")):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            matches = regex.fullmatch(rel) is not None
            try:
                if entry.is_symlink():
                    if not (matches or recursive):
                        continue
                    real = os.path.realpath(entry.path)
                    st = os.stat(entry.path)
                    if not root.follow_outside and not root.inside(real):
                        if matches or stat.S_ISDIR(st.st_mode):
                            _skipped(root, rel, real)
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        _descend(folders, rel, entry.path, parents, real, recursive)
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    _descend(folders, rel, entry.path, parents, os.path.join(parents[-1], entry.name), recursive)
                    continue
                elif matches:
                    st = entry.stat(follow_symlinks=False)
                else:
                    continue
            except OSError:  # a dangling link, a link loop, or gone meanwhile
                continue
            if matches and stat.S_ISREG(st.st_mode):
                found.append(FileInfo(path=rel, mtime_ns=st.st_mtime_ns, size=st.st_size))
    return found


def _descend(folders: list[tuple[str, str, tuple[str, ...]]], rel: str, full: str, parents: tuple[str, ...],
             real: str, recursive: bool) -> None:
    """Walk into a folder later, unless the listing is not recursive or it is one the walk is already inside
    (reached again through a link: it would loop)."""
    if recursive and real not in parents:
        folders.append((rel, full, (*parents, real)))


def _skipped(root: Root, rel: str, real: str) -> None:
    log.warning("%s: skipped: a symbolic link to %s, outside the source folder %s (set "
                "follow_symlinks_outside: true on the source to read it)", root.where(rel), real, root.display)


# ---------------------------------------------------------------- reading and writing


def open_stream(root: Root, rel: str) -> pa.NativeFile:
    """A sequential stream; gzip, bz2, zstd and lz4 files (by suffix) are decompressed on the fly."""
    if not root.local:
        return root.fs.open_input_stream(root.full(rel), compression="detect", buffer_size=1 << 20)
    suffix = os.path.splitext(rel)[1].lower()
    return _open_local(root, rel, lambda path: root.fs.open_input_stream(
        path, compression=_COMPRESSION.get(suffix), buffer_size=1 << 20))


def open_random_access(root: Root, rel: str) -> pa.NativeFile:
    if not root.local:
        return root.fs.open_input_file(root.full(rel))
    return _open_local(root, rel, root.fs.open_input_file)


def _open_local(root: Root, rel: str, opener: Callable[[str], T]) -> T:
    """Open a local file the way a reader does (following links), then check the file actually opened: one
    outside the root (a link, or a folder on its path swapped for one since the listing) raises
    PermissionError unless the root follows such links. A file that is not a regular file (a FIFO, a device)
    is refused too. Where the system shows open files under /proc, the open file itself is handed on, so no
    later swap can change what is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # O_NONBLOCK: a FIFO must not hang us
    fd = os.open(root.full(rel), flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PermissionError(errno.EACCES, "not a regular file")
        proc = f"{_PROC_FD}/{fd}"
        real = os.readlink(proc) if os.path.isdir(_PROC_FD) else os.path.realpath(root.full(rel))
        if not root.follow_outside and not root.inside(real):
            raise PermissionError(errno.EACCES, f"not read: a symbolic link to {real}, outside the source folder "
                                  f"{root.display} (follow_symlinks_outside: true reads it)")
        return opener(proc if os.path.isdir(_PROC_FD) else real)
    finally:
        os.close(fd)


def open_output(root: Root, rel: str) -> pa.NativeFile:
    """A new file for writing; in a local root it is private (0600, folders 0700) from the start."""
    if root.local:
        make_private_folder(root.full(rel.rpartition("/")[0]))
        create_private_file(root.full(rel))
    return root.fs.open_output_stream(root.full(rel))


def temp_name(folder: str, prefix: str, suffix: str) -> str:
    """A dotted name (listings skip it) beside ``folder``'s files."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}{suffix}.tmp"
    return f"{folder}/{name}" if folder else name


def move(root: Root, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``, replacing it: atomic on a local disk; on S3 a copy (whose object appears
    whole) then a delete."""
    if root.local:
        make_private_folder(root.full(dst.rpartition("/")[0]))
    root.fs.move(root.full(src), root.full(dst))


def delete(root: Root, rel: str) -> None:
    try:
        root.fs.delete_file(root.full(rel))
    except FileNotFoundError:
        pass


def files_under(root: Root, folder: str) -> list[str]:
    """Every file below ``folder`` (relative to the root), recursively."""
    selector = pafs.FileSelector(root.full(folder), recursive=True, allow_not_found=True)
    infos = guarded(lambda: root.fs.get_file_info(selector), root.display)
    cut = len(root.base) + 1 if root.base != "/" else 1
    return [i.path[cut:] for i in infos if i.type == pafs.FileType.File]


def read_text(root: Root, rel: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        with root.fs.open_input_stream(root.full(rel)) as f:
            return bytes(f.read()).decode("utf-8")
    except FileNotFoundError:
        return None


def write_text_atomically(root: Root, rel: str, text: str) -> None:
    """Write a temporary file beside ``rel`` and move it over ``rel``: readers see the old or the new text."""
    tmp = temp_name(rel.rpartition("/")[0], ".", "")
    with open_output(root, tmp) as f:
        f.write(text.encode("utf-8"))
    move(root, tmp, rel)
