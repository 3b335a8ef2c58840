"""The image folder: every inspected photo stored once under the data directory, named by its SHA-256, with a
small JPEG thumbnail beside it. Paths in the database are relative to the data directory."""

from __future__ import annotations

import os
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


def save_image(home: Path, sha: str, data: bytes, decoded: DecodedImage) -> tuple[str, str]:
    """Store the original bytes and a thumbnail under ``home``; returns their relative paths."""
    ext = EXTENSIONS.get(decoded.format, "img")
    image_rel = f"images/{sha[:2]}/{sha}.{ext}"
    thumb_rel = f"thumbs/{sha[:2]}/{sha}.jpg"
    _write_once(home / image_rel, data)
    if not (home / thumb_rel).exists():
        _write_once(home / thumb_rel, thumbnail_jpeg(decoded.image))
    return image_rel, thumb_rel
