"""Consent scan uploads: type decided from the content, never from the name (SPEC §P3)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from PIL import Image, UnidentifiedImageError

MAX_SCAN_BYTES = 10 * 1024 * 1024
SCAN_TOO_LARGE = "The scan is larger than 10 MB. Scan at a lower resolution and upload again."
SCAN_WRONG_TYPE = "Only PDF, PNG or JPEG scans are accepted; this file is none of those."
SCAN_DAMAGED = "The image could not be read; it may be damaged. Scan it again."

_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def sniff_scan_content_type(upload: UploadedFile) -> str:
    """Return the content type read from the file's bytes, or raise ValidationError."""
    if upload.size is None or upload.size > MAX_SCAN_BYTES:
        raise ValidationError(SCAN_TOO_LARGE, code="too_large")
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    content_type = next((ct for magic, ct in _SIGNATURES if head.startswith(magic)), None)
    if content_type is None:
        raise ValidationError(SCAN_WRONG_TYPE, code="wrong_type")
    if content_type.startswith("image/"):
        try:
            with Image.open(upload) as image:
                image.verify()
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            OSError,
            SyntaxError,
            ValueError,
        ) as exc:
            raise ValidationError(SCAN_DAMAGED, code="damaged") from exc
        finally:
            upload.seek(0)
    return content_type
