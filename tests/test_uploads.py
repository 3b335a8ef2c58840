"""Hostile zips and folders: every refusal has a reason and the rest of the upload survives."""

from __future__ import annotations

import io
import stat
import zipfile

from PIL import Image

from visionqc.intake.uploads import UploadFailure, UploadFile, UploadLimits, iter_named_bytes, iter_paths, unpack_zip


def jpeg_bytes(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="JPEG")
    return buf.getvalue()


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def split(results):
    results = list(results)
    files = [r for r in results if isinstance(r, UploadFile)]
    failures = {r.name: r.reason for r in results if isinstance(r, UploadFailure)}
    return files, failures


def test_zip_with_traversal_absolute_and_symlink_keeps_the_good_files():
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = make_zip(
        [
            ("good/a.jpg", jpeg_bytes()),
            ("../evil.jpg", jpeg_bytes()),
            ("/etc/abs.jpg", jpeg_bytes()),
            (link, b"/etc/passwd"),
            ("inner.zip", make_zip([("x.jpg", jpeg_bytes())])),
            ("notes.txt", b"hello"),
            ("__MACOSX/good/._a.jpg", b"junk"),
            ("b.png", jpeg_bytes()),
        ]
    )
    files, failures = split(unpack_zip(data, "batch.zip"))
    assert [f.name for f in files] == ["batch.zip/good/a.jpg", "batch.zip/b.png"]
    assert "leaves the archive" in failures["batch.zip/../evil.jpg"]
    assert "absolute path" in failures["batch.zip//etc/abs.jpg"]
    assert "symbolic link" in failures["batch.zip/link.jpg"]
    assert "nested zip" in failures["batch.zip/inner.zip"]
    assert "not an image file type (.txt)" in failures["batch.zip/notes.txt"]
    assert not any("__MACOSX" in name for name in failures)


def test_zip_bomb_ratio_is_refused_without_inflating():
    bomb = make_zip([("bomb.png", b"\0" * 5_000_000)], compression=zipfile.ZIP_DEFLATED)
    files, failures = split(unpack_zip(bomb, "bomb.zip"))
    assert not files
    assert "zip bomb" in failures["bomb.zip/bomb.png"]


def test_too_many_files_is_refused_as_a_whole():
    data = make_zip([(f"{i}.jpg", b"x") for i in range(12)])
    files, failures = split(unpack_zip(data, "many.zip", UploadLimits(max_files=10)))
    assert not files and "over the limit of 10" in failures["many.zip"]


def test_total_size_limit_stops_unpacking():
    data = make_zip([(f"{i}.jpg", jpeg_bytes()) for i in range(5)])
    size = len(jpeg_bytes())
    files, failures = split(unpack_zip(data, "big.zip", UploadLimits(max_total_bytes=size * 2 + 1)))
    assert len(files) == 2 and any("total size" in r for r in failures.values())


def test_not_a_zip_is_reported():
    files, failures = split(unpack_zip(b"PK\x03\x04 not really", "broken.zip"))
    assert not files and "not a readable zip" in failures["broken.zip"]


def test_named_bytes_mix_of_images_zips_and_others():
    items = [("a.jpg", jpeg_bytes()), ("b.zip", make_zip([("c.jpg", jpeg_bytes())])), ("d.docx", b"PK")]
    files, failures = split(iter_named_bytes(items))
    assert [f.name for f in files] == ["a.jpg", "b.zip/c.jpg"]
    assert "not an image file type (.docx)" in failures["d.docx"]


def test_paths_walk_folders_and_report_missing(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "readme.md").write_text("not a photo")
    (tmp_path / "sub" / "drawing.pdf").write_bytes(b"%PDF-1.7\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "y.zip").write_bytes(make_zip([("z.jpg", jpeg_bytes())]))
    (tmp_path / "link.jpg").symlink_to(tmp_path / "sub" / "x.jpg")
    files, failures = split(iter_paths([tmp_path, tmp_path / "missing.jpg"]))
    assert sorted(f.name.replace(str(tmp_path), "") for f in files) == ["/sub/x.jpg", "/y.zip/z.jpg"]
    assert "no such file" in failures[str(tmp_path / "missing.jpg")]
    # Nothing in a folder is skipped in silence: each file not classified is reported with its reason.
    assert "not an image file type (.pdf)" in failures[str(tmp_path / "sub" / "drawing.pdf")]
    assert "not an image file type (.md)" in failures[str(tmp_path / "readme.md")]
    assert "system file" in failures[str(tmp_path / ".DS_Store")]
    assert "symbolic link" in failures[str(tmp_path / "link.jpg")]
