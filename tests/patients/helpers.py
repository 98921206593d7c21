"""Plain helpers for the patients tests: valid form data and real scan files."""

from __future__ import annotations

import io

from PIL import Image

# The smallest document that PDF readers open: one empty page.
MINIMAL_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n"
    b"%%EOF\n"
)


def image_bytes(image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color=(200, 30, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


def patient_form_data(**overrides) -> dict:
    """A registration form that validates; override one field to test it."""
    data = {
        "mrn": "N-2001",
        "given_name": "Amelia",
        "family_name": "Hughes",
        "date_of_birth": "1984-03-02",
        "sex": "female",
        "phone": "0113 496 0000",
        "email": "amelia@example.org",
        "address": "12 North Road\nLeeds",
        "emergency_contact_name": "Tom Hughes",
        "emergency_contact_phone": "0113 496 0001",
        "usual_escort": "Partner, by car",
        "gp_name": "Dr Lee",
        "gp_contact": "Park Surgery",
        "weight_kg": "72.5",
        "weight_measured_on": "2024-06-01",
    }
    data.update(overrides)
    return data
