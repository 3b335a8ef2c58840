"""The image folder: every inspected photo stored once under the data directory, named by its SHA-256, with a
small JPEG thumbnail beside it. Paths in the database are relative to the data directory."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from visionqc.intake.imaging import DecodedImage, thumbnail_jpeg
from visionqc.store.errors import translate
from visionqc.store.schema import DB_FILE

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp", "GIF": "gif"}


def _write_once(path: Path, data: bytes) -> None:
    """Write a content-addressed file atomically; an existing file already holds the same bytes.

    A write that fails (a full disk) leaves no temporary file behind."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # name the file being written, not its temporary name
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def thumbnail_file(home: Path, sha: str) -> Path:
    """Where the thumbnail of an image lives (whether it was inspected or imported into a dataset)."""
    return home / "thumbs" / sha[:2] / f"{sha}.jpg"


def store_image_files(
    home: Path, sha: str, data: bytes, image_format: str, thumb: Callable[[], bytes]
) -> tuple[str, str]:
    """Store the original bytes and a thumbnail (made by ``thumb`` only when missing) under ``home``; returns their
    paths relative to ``home``.

    A full disk or a folder that cannot be written raises the :class:`~visionqc.store.errors.StoreError`
    that says so."""
    image_rel = f"images/{sha[:2]}/{sha}.{EXTENSIONS.get(image_format, 'img')}"
    thumb_rel = thumbnail_file(Path("."), sha).as_posix()
    try:
        _write_once(home / image_rel, data)
        if not (home / thumb_rel).exists():
            _write_once(home / thumb_rel, thumb())
    except OSError as exc:
        error = translate(exc, home, home / DB_FILE, doing="saving the photos")
        if error is None:
            raise
        raise error from exc
    return image_rel, thumb_rel


def save_image(home: Path, sha: str, data: bytes, decoded: DecodedImage) -> tuple[str, str]:
    """Store the original bytes and a thumbnail under ``home``; returns their relative paths."""
    return store_image_files(home, sha, data, decoded.format, lambda: thumbnail_jpeg(decoded.image))
