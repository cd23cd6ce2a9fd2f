"""Output paths: one checker for every command and function that writes, and staged writes.

* :func:`check_output` refuses, before any work starts, an output that is one of the inputs or lies
  inside an input directory, or an output directory that contains an input, however the paths are
  spelt (symlinks, ``..``, letter case on case-insensitive file systems, hard links).
* :func:`staged_outputs` writes every output of a command to temporary paths on the same file
  system and moves them into place together only when every write succeeded; on any failure all
  of them are removed and the previous files are left as they were.
* A full disk, a read-only file system or a permission error becomes a :class:`DiskError` (one
  line saying what to do), never a traceback or a serializer message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from modprune.exceptions import DiskError, OutputPathError

__all__ = ["Stage", "check_output", "disk_error", "is_within", "same_path", "staged_outputs"]

PathLike = str | os.PathLike[str]

_DISK_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write somewhere else"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space or write somewhere else"),
    errno.EFBIG: ("the file is too large for this file system", "write somewhere else"),
    errno.EROFS: ("the file system is read-only", "choose a writable location"),
    errno.EACCES: ("permission denied", "fix its permissions or choose a location you can write to"),
    errno.EPERM: ("operation not permitted", "fix its permissions or choose a location you can write to"),
}
#: How PyTorch's zip writer reports a failed write (it raises RuntimeError, not OSError).
_WRITER_FAILURES = ("PytorchStreamWriter failed writing", "file write failed", "No space left on device",
                    "inline_container.cc")


def disk_error(exc: BaseException, path: PathLike | None = None) -> DiskError | None:
    """A :class:`DiskError` if ``exc`` (or an exception it was raised from) is a full disk, a
    read-only file system or a permission problem; otherwise None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskError):
            return current
        if isinstance(current, OSError) and current.errno in _DISK_ERRNOS:
            reason, advice = _DISK_ERRNOS[current.errno]
            where = current.filename if current.filename is not None else path
            verb = "cannot access" if current.errno in (errno.EACCES, errno.EPERM) else "cannot write"
            return _make(where, reason, advice, verb)
        if isinstance(current, RuntimeError) and any(s in str(current) for s in _WRITER_FAILURES):
            reason = "no space left on the device" if _full(path) else "the write failed (is the disk full?)"
            return _make(path, reason, "free some space or write somewhere else")
        current = current.__cause__ or current.__context__
    return None


def _full(path: PathLike | None) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing folder) has no free block."""
    if path is None:
        return False
    try:
        stats = os.statvfs(_existing_ancestor(Path(path)))
    except (OSError, AttributeError):  # AttributeError: no statvfs on this platform
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 1024


def _make(where: object, reason: str, advice: str, verb: str = "cannot write") -> DiskError:
    subject = f"{verb} {str(where)!r}" if where is not None else f"{verb} the output"
    return DiskError(f"{subject}: {reason}; {advice}", None if where is None else str(where))


def _real(path: PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(os.fspath(path))))


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file or directory (symlinks, ``..``, hard links; the
    paths need not exist)."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def is_within(child: PathLike, parent: PathLike) -> bool:
    """Whether ``child`` is ``parent`` or lies anywhere below it, however either is spelt."""
    real_child, real_parent = Path(_real(child)), Path(_real(parent))
    if real_child == real_parent or real_parent in real_child.parents:
        return True
    if not os.path.isdir(parent):
        return False
    for ancestor in (real_child, *real_child.parents):  # case-insensitive file systems, bind mounts
        if ancestor.exists():
            return same_path(ancestor, parent)
    return False


def check_output(
    output: PathLike,
    inputs: Iterable[PathLike | None] = (),
    *,
    force: bool = False,
    directory: bool = False,
    probe: bool = True,
) -> Path:
    """Check ``output`` before any work starts; return it as a :class:`Path`. Writes nothing.

    :param inputs: every file or directory the command reads (None entries are ignored).
    :param force: allow replacing an existing output file (never an input).
    :param directory: ``output`` is a directory the command writes into (it may exist).
    :param probe: really create and remove a file in the destination to prove it is writable
        (``os.access`` says yes to root on read-only mounts).
    :raises OutputPathError: the output is an input, inside one, or (a directory) contains one; or
        it is of the wrong kind, exists without ``force``, or its folder is missing.
    :raises DiskError: the destination is read-only or not writable by this user.
    """
    if not os.fspath(output):
        raise OutputPathError("output path is empty; give a path", str(output))
    out = Path(output)
    for item in (i for i in inputs if i is not None and os.fspath(i)):
        _check_against(out, Path(item), directory)
    if directory:
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"output {str(out)!r} exists and is not a directory; choose another path", str(out))
        parent = _existing_ancestor(out)
    else:
        if out.is_dir():
            raise OutputPathError(f"output {str(out)!r} is a directory; give a file path", str(out))
        if out.exists() and not force:
            raise OutputPathError(f"output {str(out)!r} exists; pass --force (overwrite=True) to replace it", str(out))
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise OutputPathError(f"output directory {str(parent)!r} does not exist; create it first", str(parent))
    if probe:
        _probe(parent)
    return out


def _check_against(out: Path, item: Path, directory: bool) -> None:
    if same_path(out, item):
        raise OutputPathError(f"output {str(out)!r} is the input {str(item)!r}; choose another path", str(out))
    if os.path.isdir(item) and is_within(out, item):
        raise OutputPathError(
            f"output {str(out)!r} is inside the input directory {str(item)!r}; write it elsewhere", str(out))
    if directory and is_within(item, out):
        raise OutputPathError(
            f"output directory {str(out)!r} contains the input {str(item)!r}; choose a directory that holds none "
            "of the inputs", str(out))


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *Path(os.path.abspath(path)).parents):
        if candidate.is_dir():
            return candidate
    return Path(".")


def _probe(folder: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".modprune-", suffix=".probe", dir=folder)
    except OSError as exc:
        raise disk_error(exc, folder) or OutputPathError(
            f"output directory {str(folder)!r} is not writable: {exc.strerror or exc}", str(folder)) from None
    os.close(fd)
    os.unlink(probe)


class Stage:
    """Temporary paths for a command's outputs; see :func:`staged_outputs`."""

    def __init__(self) -> None:
        self._items: list[tuple[Path, Path, bool]] = []  # (temporary, final, is a directory)
        self._made: list[Path] = []  # parent folders created for staging, deepest last

    def file(self, final: PathLike) -> Path:
        """A new empty temporary file beside ``final``; it replaces ``final`` on success."""
        final = Path(final)
        parent = final.parent if str(final.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        self._items.append((Path(tmp), final, False))
        return Path(tmp)

    def dir(self, final: PathLike) -> Path:
        """A new empty temporary directory beside ``final`` (missing parents are created).

        On success it becomes ``final``; if ``final`` already exists, each entry of the temporary
        directory replaces the entry of the same name in ``final`` (other entries are kept).
        """
        final = Path(os.path.abspath(final))
        missing = [p for p in reversed(final.parents) if not p.exists()]
        for folder in missing:
            folder.mkdir()
            self._made.append(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        self._items.append((tmp, final, True))
        return tmp

    def discard(self) -> None:
        """Remove every temporary path and every folder created for them."""
        for tmp, _final, is_dir in self._items:
            _remove(tmp) if is_dir else Path(tmp).unlink(missing_ok=True)
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._items.clear()
        self._made.clear()

    def commit(self) -> None:
        """Move every temporary path into place; on a failure undo the moves already made."""
        done: list[tuple[Path, Path | None]] = []
        mask = _umask()
        try:
            for tmp, final, is_dir in self._items:
                os.chmod(tmp, (0o777 if is_dir else 0o666) & ~mask)  # mkstemp/mkdtemp make private paths
                if is_dir and final.is_dir():
                    for entry in sorted(tmp.iterdir()):
                        _swap(entry, final / entry.name, done)
                    tmp.rmdir()
                else:
                    _swap(tmp, final, done)
        except BaseException:
            for final, backup in reversed(done):
                _remove(final)
                if backup is not None:
                    os.replace(backup, final)
            raise
        for _final, backup in done:
            if backup is not None:
                _remove(backup)
        self._items.clear()
        self._made.clear()


def _swap(src: Path, dst: Path, done: list[tuple[Path, Path | None]]) -> None:
    backup = None
    if dst.exists() or dst.is_symlink():
        backup = dst.with_name(f".{dst.name}.{os.getpid()}-{len(done)}.bak")
        os.replace(dst, backup)
    try:
        os.replace(src, dst)
    except BaseException:
        if backup is not None:
            os.replace(backup, dst)
        raise
    done.append((dst, backup))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_outputs() -> Iterator[Stage]:
    """Stage a command's outputs so that they land all together or not at all.

    ``with staged_outputs() as stage: write(stage.file(out)); write_dir(stage.dir(report_dir))``.
    When the block raises, every temporary path is removed and the outputs are untouched; a full or
    read-only disk or a permission error is raised as :class:`DiskError`, any other ``OSError`` as
    :class:`OutputPathError`.
    """
    stage = Stage()
    try:
        yield stage
        stage.commit()
    except OSError as exc:
        stage.discard()
        raise disk_error(exc) or OutputPathError(
            f"cannot write {str(exc.filename or 'the output')!r}: {exc.strerror or exc}", exc.filename) from exc
    except BaseException as exc:
        stage.discard()
        if (disk := disk_error(exc)) is not None and disk is not exc:
            raise disk from exc
        raise
