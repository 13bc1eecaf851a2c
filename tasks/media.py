"""Media types from content, not from file names: a `.png` that holds text is not an image."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
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

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/webp": "webp",
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
        return "audio/mp4" if data[8:11] == b"M4A" else "video/mp4"
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
