"""The image store: every inspected photo stored once, named by its SHA-256, with a small JPEG thumbnail beside
it. The database holds each file's *key*, a relative POSIX path (``images/ab/<sha>.jpg``, ``thumbs/ab/<sha>.jpg``).

:class:`ImageStore` is what the store needs from wherever the files live; :class:`LocalImageStore` is a folder
(the data directory on one machine, a mount every station reaches in a plant). Content addressing makes every
write idempotent: stations writing the same photo at once write the same bytes under the same key, so the last
rename wins and nothing is lost. An S3-compatible bucket is one more implementation (``put_once`` as a
conditional PUT, ``exists`` as HEAD, ``read`` as GET, ``local_path`` as a download cache for the pages).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

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


class ImageStore(Protocol):
    """Files by key. Keys are relative POSIX paths named by content: a key that exists holds those bytes."""

    def put_once(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` unless the key exists; atomic (no reader sees half a file)."""

    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> bytes: ...

    def local_path(self, key: str) -> Path:
        """A local file holding the key's bytes (what the pages hand to the browser)."""


class LocalImageStore:
    """An :class:`ImageStore` in a folder: the data directory, or a shared mount in a plant."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def put_once(self, key: str, data: bytes) -> None:
        _write_once(self.root / key, data)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def local_path(self, key: str) -> Path:
        return self.root / key


def thumbnail_file(home: Path, sha: str) -> Path:
    """Where the thumbnail of an image lives (whether it was inspected or imported into a dataset)."""
    return home / "thumbs" / sha[:2] / f"{sha}.jpg"


def store_image_files(
    images: LocalImageStore, sha: str, data: bytes, image_format: str, thumb: Callable[[], bytes]
) -> tuple[str, str]:
    """Store the original bytes and a thumbnail (made by ``thumb`` only when missing) in ``images``
    (``Store.images``); returns their keys.

    A full disk or a folder that cannot be written raises the :class:`~visionqc.store.errors.StoreError`
    that says so."""
    image_rel = f"images/{sha[:2]}/{sha}.{EXTENSIONS.get(image_format, 'img')}"
    thumb_rel = thumbnail_file(Path("."), sha).as_posix()
    try:
        images.put_once(image_rel, data)
        if not images.exists(thumb_rel):
            images.put_once(thumb_rel, thumb())
    except OSError as exc:
        home = images.root
        error = translate(exc, home, home / DB_FILE, doing="saving the photos")
        if error is None:
            raise
        raise error from exc
    return image_rel, thumb_rel


def save_image(images: LocalImageStore, sha: str, data: bytes, decoded: DecodedImage) -> tuple[str, str]:
    """Store the original bytes and a thumbnail in ``images`` (``Store.images``); returns their keys."""
    return store_image_files(images, sha, data, decoded.format, lambda: thumbnail_jpeg(decoded.image))
