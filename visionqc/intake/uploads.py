"""Turning what a user hands us (files, folders, zips) into named byte strings, safely.

Zips are hostile until checked: entries with absolute paths or ``..`` are refused, symlinks are never
followed, nested archives are not unpacked, and limits on entry count, per-file size, total size and
compression ratio stop zip bombs before they are inflated. Each refusal is a :class:`UploadFailure`
with a reason; the rest of the upload goes on.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from visionqc.intake.imaging import has_image_extension


@dataclass(frozen=True)
class UploadLimits:
    max_files: int = 5_000
    max_file_bytes: int = 100 * 1024 * 1024
    max_total_bytes: int = 4 * 1024 * 1024 * 1024
    max_ratio: float = 200.0  # uncompressed / compressed, per entry; JPEGs barely compress at all


@dataclass(frozen=True)
class UploadFile:
    name: str  # display name: the file name, or "archive.zip/inner/path.jpg"
    data: bytes


@dataclass(frozen=True)
class UploadFailure:
    name: str
    reason: str


UploadResult = UploadFile | UploadFailure

_IGNORED_PARTS = ("__MACOSX",)


def _ignored(member: str) -> bool:
    parts = PurePosixPath(member).parts
    return any(p in _IGNORED_PARTS for p in parts) or (bool(parts) and parts[-1].startswith("._"))


def is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


def unpack_zip(
    data: bytes,
    archive_name: str,
    limits: UploadLimits = UploadLimits(),
    accept: Callable[[str], bool] = has_image_extension,
) -> Iterator[UploadResult]:
    """Yield each image inside a zip (by bytes), or a failure with its reason. ``accept`` chooses which member
    names are wanted (default: images; a labelled dataset archive also wants its CSV, JSON and XML files)."""
    import io

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield UploadFailure(archive_name, f"not a readable zip archive ({exc})")
        return
    files = [m for m in members if not m.is_dir() and not _ignored(m.filename)]
    if len(files) > limits.max_files:
        yield UploadFailure(
            archive_name, f"zip holds {len(files)} files, over the limit of {limits.max_files}; split it"
        )
        return
    total = 0
    for info in files:
        name = f"{archive_name}/{info.filename}"
        path = PurePosixPath(info.filename.replace("\\", "/"))
        mode = info.external_attr >> 16
        if info.filename.startswith(("/", "\\")) or (len(info.filename) > 1 and info.filename[1] == ":"):
            yield UploadFailure(name, "refused: absolute path inside the zip")
            continue
        if ".." in path.parts:
            yield UploadFailure(name, "refused: path leaves the archive ('..')")
            continue
        if stat.S_ISLNK(mode):
            yield UploadFailure(name, "refused: symbolic link inside the zip")
            continue
        if is_zip_name(info.filename):
            yield UploadFailure(name, "skipped: nested zip archives are not unpacked")
            continue
        if not accept(info.filename):
            yield UploadFailure(name, f"skipped: not an image file type ({path.suffix or 'no extension'})")
            continue
        if info.file_size > limits.max_file_bytes:
            yield UploadFailure(
                name,
                f"too large: {info.file_size / 1e6:.0f} MB, over the {limits.max_file_bytes / 1e6:.0f} MB limit",
            )
            continue
        if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
            yield UploadFailure(name, "refused: compression ratio is that of a zip bomb")
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            yield UploadFailure(name, "refused: the zip unpacks to more than the total size limit")
            return
        try:
            with archive.open(info) as fh:
                # Read one byte past the declared size: a lying header cannot inflate more than that.
                payload = fh.read(limits.max_file_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            yield UploadFailure(name, f"could not extract from the zip ({exc})")
            continue
        if len(payload) > limits.max_file_bytes:
            yield UploadFailure(name, "too large once unpacked")
            continue
        yield UploadFile(name, payload)


def iter_named_bytes(
    items: Iterable[tuple[str, bytes]], limits: UploadLimits = UploadLimits()
) -> Iterator[UploadResult]:
    """Expand uploaded (name, bytes) pairs: zips are unpacked, images pass through, others are reported."""
    for name, data in items:
        if is_zip_name(name):
            yield from unpack_zip(data, name, limits)
        elif has_image_extension(name):
            yield UploadFile(name, data)
        else:
            yield UploadFailure(name, f"skipped: not an image file type ({Path(name).suffix or 'no extension'})")


SYSTEM_FILES = {".ds_store", "thumbs.db", "desktop.ini"}


def iter_paths(paths: Iterable[str | Path], limits: UploadLimits = UploadLimits()) -> Iterator[UploadResult]:
    """Expand command-line paths: files, folders (recursively) and zips. Every file of a folder that is not an
    image or a zip is reported with its reason (a PDF left among the photos is never skipped in silence)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()):
                if child.is_symlink():
                    yield UploadFailure(str(child), "skipped: a symbolic link (links are not followed)")
                elif has_image_extension(child.name) or is_zip_name(child.name):
                    yield from _read_file(child, str(child), limits)
                elif child.name.lower() in SYSTEM_FILES or child.name.startswith("._"):
                    yield UploadFailure(str(child), "skipped: a system file, not a photo")
                else:
                    yield UploadFailure(
                        str(child), f"skipped: not an image file type ({child.suffix or 'no extension'})"
                    )
        elif path.is_file():
            yield from _read_file(path, str(path), limits)
        else:
            yield UploadFailure(str(path), "not found: no such file or folder")


def _read_file(path: Path, name: str, limits: UploadLimits) -> Iterator[UploadResult]:
    try:
        size = path.stat().st_size
        if size > limits.max_file_bytes and not is_zip_name(path.name):
            yield UploadFailure(name, f"too large: {size / 1e6:.0f} MB, over the limit")
            return
        data = path.read_bytes()
    except OSError as exc:
        yield UploadFailure(name, f"could not read the file ({exc.strerror or exc})")
        return
    yield from iter_named_bytes([(name, data)], limits)
