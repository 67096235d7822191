"""Writing files so that nothing already written is lost, and reading artifacts' JSON.

One mechanism for every file the project writes: :func:`atomic_path` hands out a fresh hidden
name next to the destination (unique per call, so concurrent runs never collide), and renames it
over the destination only once the writer has finished; on any error the temporary is removed and
the old file, if any, is untouched. :func:`write_bytes_atomic`, :func:`write_json_atomic`,
:func:`publish_dir` (a whole directory) and the weights writer in :mod:`specens.core.checkpoint`
are built on it; writers that need a path (``savefig``, ``np.save``, safetensors) use it directly::

    with atomic_path(out / "table4.png") as tmp:
        fig.savefig(tmp, format="png")

The one rule for directories a stage writes is :func:`check_target` (a target holding anything but
the stage's own files is refused) with :func:`publish_dir` (built beside, swapped in whole).
Artifacts are tied to their weights and to each other by fingerprints (:func:`fingerprint` of a
file, :func:`record_fingerprint` of a record's prediction fields).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import CheckpointError

TEMP_GLOB = ".*.tmp"  # what atomic_path's temporaries look like: a killed run's leftovers match it


def temp_suffix(suffix: str = ".tmp") -> str:
    """``.<random token><suffix>``: what makes a temporary name unique (for writers that name
    their own files, like WebDataset's ShardWriter, ``<name><temp_suffix()>`` hidden by a dot)."""
    return f".{secrets.token_hex(6)}{suffix}"


def temp_sibling(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A fresh hidden name next to ``path`` for writing before a rename over it. The caller creates
    it (exclusively: ``open(.., "x")``, ``mkdir``), so it gets the umask's permissions like any new
    file, not ``tempfile``'s owner-only 0600/0700, which other users of a shared run directory (Ray
    workers, a team) could not read."""
    path = Path(path)
    return path.parent / f".{path.name}{temp_suffix(suffix)}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path`` (created empty: a file, or a directory with
    ``directory=True``); when the block ends without error, rename it over ``path`` (a directory
    replaces the old one whole: the old one is first renamed aside, and put back if the swap
    fails). On error the temporary is removed and ``path`` is untouched."""
    path = Path(path)
    if not directory and path.is_dir():
        raise CheckpointError(f"{path}: is a directory, where a file is to be written")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    if directory:
        tmp.mkdir()
    else:
        open(tmp, "xb").close()
    try:
        yield tmp
        if directory:
            replace_dir(tmp, path)
        else:
            _fsync(tmp)
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def replace_dir(new: Path, final: Path) -> None:
    """Put directory ``new`` at ``final``; an old ``final`` is renamed aside first and removed only
    once ``new`` is in place, so at every instant one of the two complete directories exists."""
    if not final.exists():
        os.replace(new, final)
        return
    aside = temp_sibling(final, ".old")
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


LOCK = ".specens.lock"  # held by the process training into a directory (:func:`exclusive`)
LEFTOVERS = (TEMP_GLOB, ".*.old", LOCK)  # what a killed write of this module leaves beside its target


@contextlib.contextmanager
def exclusive(work: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``<work>/.specens.lock`` (created with ``work``) for the block: a second process
    training into the same directory is refused at once, naming it, instead of the two writing,
    pruning and publishing one another's checkpoints. The lock is the kernel's (``flock``), so a
    killed process releases it, and a killed run's empty file is harmless and reused. The lock is
    removed when done, with the directory when this call made it and nothing else was written."""
    work = Path(work)
    created = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    busy = f"{work}: another process is training {what} into it now; wait for it to finish or use another --out"
    try:
        with flocked(work / LOCK, busy, remove=True):
            yield
    finally:  # a run refused before it wrote anything leaves nothing behind
        if created and work.is_dir() and not any(work.iterdir()):
            with contextlib.suppress(OSError):
                work.rmdir()


@contextlib.contextmanager
def flocked(lock: str | os.PathLike, busy: str, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on file ``lock`` (created if absent) for the block; another
    process holding it gets :class:`CheckpointError` ``busy`` at once. A killed holder releases it.
    ``remove``: delete the file when done, so that no lock outlives its holder; a lock taken on a
    file that a finishing holder has just deleted is retaken."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(busy) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was deleted (or replaced) before we held it: take the new one
    try:
        yield
    finally:
        if remove:
            Path(lock).unlink(missing_ok=True)
        os.close(fd)


def check_target(final: str | os.PathLike, own: Sequence[str], what: str, record: str | None = None) -> None:
    """The one rule for a directory a stage writes: ``final`` may be absent, empty, or hold only
    the stage's own files (``own``: names or glob patterns, e.g. ``clusters.json`` or
    ``*.jsonl``, a pattern ending in ``/`` naming a directory such as ``checkpoints/``; plus this
    module's temporaries). A directory holding anything else (a run directory, someone's notes,
    an older layout that put other outputs beside this one), an own name that is a directory
    where a file belongs (or the reverse), and any symbolic link (``final`` itself or inside it:
    a link could send a replacement or a deletion to a directory the stage does not own) are
    refused, never replaced or mixed into. With ``record`` (the stage's record file, such as
    ``evaluation.json``), files of the stage's names count as its own only beside that record
    as specens writes it (a JSON object whose ``format`` is ``specens.*``): a user's
    ``table4.png`` or ``evaluation.json`` of their own is not replaced for its name. Raises
    :class:`CheckpointError` naming the path."""
    final = Path(final)
    if final.is_symlink():
        raise CheckpointError(
            f"{final}: is a symbolic link (to {os.readlink(final)}); refusing to write {what} through it "
            "(give the directory it names, or a new one)"
        )
    if final.exists() and not final.is_dir():
        raise CheckpointError(f"{final}: is a file, not a directory for {what}")
    if not final.is_dir():
        return
    entries = list(final.iterdir())
    others = sorted(_shown(p) for p in entries if not _owned(p, own))
    if others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise CheckpointError(
            f"{final}: holds files that are not {what} ({shown}); refusing to write into it "
            "(choose a new or empty directory)"
        )
    mine = [p for p in entries if not any(fnmatch.fnmatchcase(p.name, pat) for pat in LEFTOVERS)]
    if record is not None and mine and not _is_record(final / record):
        shown = ", ".join(sorted(p.name for p in mine)[:3])
        raise CheckpointError(
            f"{final}: holds {shown} but no {record} that specens wrote: not {what}, so not replaced "
            "(choose a new or empty directory)"
        )


RECORD_MAX_BYTES = 256 * 2**20  # a record specens writes is far smaller; a larger file is not read to find out


def _is_record(path: Path) -> bool:
    """Whether ``path`` is a JSON object with a specens ``format`` header."""
    try:
        if path.stat().st_size > RECORD_MAX_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("format"), str) and data["format"].startswith("specens.")


def _shown(entry: Path) -> str:
    return entry.name + (" (a symbolic link)" if entry.is_symlink() else "/" if entry.is_dir() else "")


def _owned(entry: Path, own: Sequence[str]) -> bool:
    """Whether ``entry`` is one of a stage's own files: its name matches a pattern of ``own`` (a
    directory's pattern ending in ``/``) or a leftover temporary, and it is no symbolic link."""
    if entry.is_symlink():
        return False
    if any(fnmatch.fnmatchcase(entry.name, pat) for pat in LEFTOVERS):
        return True
    is_dir = entry.is_dir()
    return any(fnmatch.fnmatchcase(entry.name, pat.rstrip("/")) and pat.endswith("/") == is_dir for pat in own)


def check_no_links(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path``, which lies under the output directory ``root``, checked to reach no symbolic link
    below ``root`` (``root`` itself, which the user named, may be or lie under one): a link that a
    shared run directory carries could send a stage's writes, replacements or deletions into a
    directory it does not own. Returns ``Path(path)``; raises :class:`CheckpointError` naming the
    link."""
    root, path = Path(root), Path(path)
    rel = path.relative_to(root)
    at = root
    for part in rel.parts:
        at = at / part
        if at.is_symlink():
            raise CheckpointError(
                f"{at}: is a symbolic link (to {os.readlink(at)}); refusing to write through it, "
                f"since it leads out of {root} (remove the link)"
            )
    return path


def check_outside_inputs(out: str | os.PathLike, option: str, **inputs: Any) -> None:
    """Refuse an output directory ``out`` that is, or lies inside, one of the stage's inputs
    (``inputs``: a path, or a sequence of paths, per option naming them, such as ``data=...``),
    links resolved: a stage never writes into what it reads. An input inside the output (a run
    holding its generalist) is fine."""
    real_out = Path(os.path.realpath(out))
    named = [(n, p) for n, v in inputs.items() for p in ([v] if isinstance(v, (str, os.PathLike)) else v or ())]
    for name, path in named:
        if not path:
            continue
        real_in = Path(os.path.realpath(path))
        if real_in.is_file():  # a file input (clusters.json, x.npy): a directory never replaces it
            continue
        if real_out == real_in or real_in in real_out.parents:
            raise CheckpointError(
                f"{option} {out} lies inside the input --{name.replace('_', '-')} {path}; "
                "outputs are never written into an input (choose another directory)"
            )


def publish_dir(
    final: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    own: Sequence[str] | None = None,
    what: str = "an earlier output of this stage",
    record: str | None = None,
) -> None:
    """Create directory ``final`` atomically: ``write(tmp)`` fills a fresh hidden sibling, which
    then replaces ``final``. A crash leaves either the old ``final`` or the new one (plus, at
    worst, a hidden leftover), never a half-written ``final``; on any error the old ``final`` is
    untouched. :func:`check_target` first refuses a ``final`` that is a symbolic link (the
    directory it names is not the stage's to replace) or, with ``own``, one holding anything but
    those files."""
    check_target(final, own if own is not None else ("*", "*/"), what, record)
    with atomic_path(final, directory=True) as tmp:
        write(tmp)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_fingerprint(weights_fingerprint: str, fields: dict[str, Any]) -> str:
    """The fingerprint of an exported model: the first 16 hex digits of the SHA-256 of its weights'
    fingerprint and of the canonical JSON of ``fields``, every recorded field that changes its
    predictions (architecture, classes, group, corrections). Editing any of them, or replacing the
    weights, changes it; artifacts made from the model record this value."""
    h = hashlib.sha256(weights_fingerprint.encode() + b"\0" + _canonical(fields))
    return h.hexdigest()[:16]


def fingerprint(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a file: identifies a trained model's weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def read_json(path: str | os.PathLike, hint: str = "") -> Any:
    """Parse a JSON file; a missing or malformed file is a :class:`CheckpointError` naming it
    (``hint`` is appended when the file is missing)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing{hint}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_artifact_json(path: str | os.PathLike, fmt: str, version: int, hint: str = "") -> dict[str, Any]:
    """Read an artifact's JSON and check its ``format`` and ``format_version``; every problem is a
    :class:`CheckpointError` naming the file."""
    meta = read_json(path, hint)
    check_header(meta, path, fmt, version)
    return meta


def check_header(data: Any, where: str | os.PathLike, fmt: str, version: int) -> None:
    """Refuse ``data`` (a parsed artifact) unless its ``format`` is ``fmt`` and its
    ``format_version`` is ``version``, naming ``where`` and what it holds instead."""
    got = data["format"] if isinstance(data, dict) and "format" in data else None
    if not isinstance(data, dict) or got != fmt:
        got = got if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{where}: 'format' is {got!r}, expected {fmt!r}")
    got = data["format_version"] if "format_version" in data else None
    if got != version or isinstance(got, bool):
        kind = "" if isinstance(got, int) else f" (a {type(got).__name__})"
        raise CheckpointError(f"{where}: 'format_version' is {got!r}{kind}, this specens reads {version}")
