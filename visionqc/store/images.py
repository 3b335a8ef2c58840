"""The image folder: every inspected photo stored once under the data directory, named by its SHA-256, with a
small JPEG thumbnail beside it. Paths in the database are relative to the data directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from visionqc.intake.imaging import DecodedImage, thumbnail_jpeg

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp", "GIF": "gif"}


def _write_once(path: Path, data: bytes) -> None:
    """Write a content-addressed file atomically; an existing file already holds the same bytes."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def thumbnail_file(home: Path, sha: str) -> Path:
    """Where the thumbnail of an image lives (whether it was inspected or imported into a dataset)."""
    return home / "thumbs" / sha[:2] / f"{sha}.jpg"


def store_image_files(
    home: Path, sha: str, data: bytes, image_format: str, thumb: Callable[[], bytes]
) -> tuple[str, str]:
    """Store the original bytes and a thumbnail (made by ``thumb`` only when missing) under ``home``; returns their
    paths relative to ``home``."""
    image_rel = f"images/{sha[:2]}/{sha}.{EXTENSIONS.get(image_format, 'img')}"
    thumb_rel = thumbnail_file(Path("."), sha).as_posix()
    _write_once(home / image_rel, data)
    if not (home / thumb_rel).exists():
        _write_once(home / thumb_rel, thumb())
    return image_rel, thumb_rel


def save_image(home: Path, sha: str, data: bytes, decoded: DecodedImage) -> tuple[str, str]:
    """Store the original bytes and a thumbnail under ``home``; returns their relative paths."""
    return store_image_files(home, sha, data, decoded.format, lambda: thumbnail_jpeg(decoded.image))
