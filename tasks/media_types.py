"""Media types from content, not from file names: a `.png` that holds text is not an image."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),  # little-endian TIFF (scanners, microscopes, cameras' raw previews)
    (b"MM\x00*", "image/tiff"),
    (b"II+\x00", "image/tiff"),  # BigTIFF
    (b"MM\x00+", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "image/jp2"),
    (b"\xff\x4f\xff\x51", "image/jp2"),  # a bare JPEG 2000 codestream
    (b"8BPS", "image/vnd.adobe.photoshop"),
    (b"qoif", "image/qoi"),
    (b"DDS ", "image/vnd-ms.dds"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"%PDF", "application/pdf"),
    (b"\x93NUMPY", "application/x-npy"),
    (b"ply\n", "model/ply"),
    (b"ply\r\n", "model/ply"),
    (b"glTF", "model/gltf-binary"),
)

# Still images in ISO containers, by their brand (HEIC/HEIF from phones, AVIF).
_IMAGE_BRANDS = {b"avif": "image/avif", b"avis": "image/avif", b"heic": "image/heic", b"heix": "image/heic",
                 b"mif1": "image/heif", b"msf1": "image/heif"}

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/webp": "webp",
    "image/tiff": "tif",
    "image/x-icon": "ico",
    "image/jp2": "jp2",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/x-portable-anymap": "pnm",
    "image/vnd.adobe.photoshop": "psd",
    "image/qoi": "qoi",
    "image/vnd-ms.dds": "dds",
    "image/svg+xml": "svg",
    "image/x-tga": "tga",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/x-msvideo": "avi",
    "application/pdf": "pdf",
    "application/json": "json",
    "application/x-npy": "npy",
    "audio/mp4": "m4a",
    "text/plain": "txt",
    "model/ply": "ply",
    "model/gltf-binary": "glb",
}


def sniff_media_type(data: bytes) -> str:
    """The media type that `data` starts like, or a generic one when nothing matches."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _IMAGE_BRANDS:
            return _IMAGE_BRANDS[brand]
        return "audio/mp4" if data[8:11] == b"M4A" else "video/mp4"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n":
        return "image/x-portable-anymap"  # PBM, PGM, PPM
    if data.lstrip()[:5] in (b"<?xml", b"<svg ") and b"<svg" in data[:1024]:
        return "image/svg+xml"
    if data.endswith(b"TRUEVISION-XFILE.\x00"):  # TGA has no magic at its start, only this footer
        return "image/x-tga"
    if data[:2] == b"\xff\xfb" or data[:2] == b"\xff\xf3":
        return "audio/mpeg"
    return "text/plain" if _looks_like_text(data) else "application/octet-stream"


def extension_for(media_type: str) -> str:
    return EXTENSIONS.get(media_type, "bin")


def _looks_like_text(data: bytes) -> bool:
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in data[:4096]
