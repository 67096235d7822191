"""Datasets at a URL: ``dataset.json`` and its shards read over HTTP(S) or any fsspec protocol.

A dataset root is a local directory or a URL of the directory that holds ``dataset.json`` and its
shards side by side (``https://host/data/banking77``, ``s3://bucket/banking77``). ``http`` and
``https`` need nothing beyond the standard library; every other protocol goes through fsspec
(``pip install 'specens[remote]'`` plus the protocol's own package: ``s3fs``, ``gcsfs``, …).

Shards are streamed, never copied whole: :func:`open_stream` returns a reader that, when the
connection drops or times out mid-shard, reopens the file at the byte it had reached (an HTTP
``Range`` request, an fsspec ``seek``) and carries on, so the samples come out exactly as from a
local file. It gives up after ``retries`` failures in a row without a byte of progress (with
exponential back-off between them); a resume that makes progress resets the count. Errors that
no retry mends (404, 403, an unknown protocol) are a :class:`DataError` naming the URL at once.

Not fsspec's ``HTTPFileSystem`` for http(s): it needs aiohttp, a streamed HTTP file there cannot
seek, and it does not resume a dropped read (retrying transient failures is an open fsspec pull
request, #2124), which are the guarantees ``tests/test_remote.py`` checks.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from specens.core.errors import DataError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
RETRIES = int(os.environ.get("SPECENS_URL_RETRIES", "5"))  # per stream, after each failure
BACKOFF = 0.25  # seconds before the first retry; doubled each time
TIMEOUT = 60.0  # seconds a read may stall before it counts as a transient error


def is_url(root: str | os.PathLike) -> bool:
    """True for ``scheme://…`` other than ``file://`` (which is a local path)."""
    m = _SCHEME.match(str(root))
    return bool(m) and m.group(1).lower() != "file"


def local_path(root: str | os.PathLike) -> str:
    """A local root as a path (``file:///x`` -> ``/x``)."""
    root = str(root)
    return root[len("file://") :] if root.lower().startswith("file://") else root


def join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


class _Transient(Exception):
    """A failure worth retrying: the connection dropped, stalled, or the server was busy."""


def _http_open(url: str, pos: int):
    req = urllib.request.Request(url, headers={"Range": f"bytes={pos}-"} if pos else {})
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _Transient(f"cannot connect ({reason})") from None
    if pos and resp.status != 206:  # the server ignored Range: skip what was already read
        _skip(resp, pos)
    return resp


def _skip(f, n: int) -> None:
    while n:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            raise _Transient("stream ended while skipping to the resume point")
        n -= len(chunk)


def _fsspec_open(url: str, pos: int):
    try:
        import fsspec
    except ImportError:
        raise DataError(
            f"{url}: reading {_SCHEME.match(url).group(1)}:// needs fsspec "
            "(pip install 'specens[remote]' and the protocol's package, e.g. s3fs)"
        ) from None
    try:
        f = fsspec.open(url, "rb").open()
    except (ImportError, ValueError) as e:  # fsspec: unknown protocol, or its package is missing
        raise DataError(f"{url}: {e}") from None
    except (FileNotFoundError, PermissionError) as e:
        raise DataError(f"{url}: {type(e).__name__} ({e})") from None
    except (OSError, TimeoutError) as e:
        raise _Transient(str(e)) from None
    if pos:
        f.seek(pos)
    return f


class ResumingReader(io.RawIOBase):
    """A read-only stream of one remote file that resumes where it was after a transient error.

    ``open_at(pos)`` opens the file positioned at byte ``pos``; the total size, when the first
    response tells it, turns a connection closed early into a retry rather than a short file.
    """

    def __init__(self, url: str, open_at: Callable[[int], object], retries: int | None = None):
        self.url, self._open_at = url, open_at
        self.retries = RETRIES if retries is None else retries
        self.pos, self.size = 0, None
        self._f = None

    def readable(self) -> bool:
        return True

    def _open(self):
        f = self._open_at(self.pos)
        if self.size is None and self.pos == 0:
            headers = getattr(f, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            self.size = int(length) if length else getattr(f, "size", None)
        self._f = f

    def readinto(self, b) -> int:
        failures = 0
        while True:
            try:
                if self._f is None:
                    self._open()
                n = self._f.readinto(b)
                if not n and self.size is not None and self.pos < self.size and len(b):
                    raise _Transient(f"connection closed at byte {self.pos} of {self.size}")
                self.pos += n
                return n
            except (TimeoutError, _Transient, OSError, http.client.HTTPException) as e:
                if isinstance(e, (FileNotFoundError, PermissionError)):
                    raise DataError(f"{self.url}: {type(e).__name__} ({e})") from None
                self._close_inner()
                if failures == self.retries:
                    raise DataError(
                        f"{self.url}: {e}; gave up after {self.retries} retries at byte {self.pos}"
                    ) from None
                time.sleep(BACKOFF * 2**failures)
                failures += 1

    def _close_inner(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except Exception:  # closing a broken connection may fail too; it is being dropped
                pass
            self._f = None

    def close(self) -> None:
        self._close_inner()
        super().close()


def open_stream(url: str, retries: int | None = None) -> io.BufferedReader:
    """A buffered, resuming read stream of ``url`` (see :class:`ResumingReader`)."""
    opener = _http_open if _is_http(url) else _fsspec_open
    return io.BufferedReader(ResumingReader(url, lambda pos: opener(url, pos), retries), 1 << 20)


def read_bytes(url: str, retries: int | None = None) -> bytes:
    """The whole of a small remote file (``dataset.json``)."""
    with open_stream(url, retries) as f:
        return f.read()
