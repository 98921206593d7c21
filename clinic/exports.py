"""CSV exports that spreadsheets cannot turn into formulas (SPEC §C5).

A cell a spreadsheet would evaluate (text starting with `=`, `+`, `-`, `@`, tab or carriage
return, as OWASP lists them) is prefixed with an apostrophe. Numbers are not text: a negative
balance or a dose of -0.25 is written as the number it is, so the export still sums.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.http import StreamingHttpResponse

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# A plain decimal number and nothing else (ASCII digits only; fullmatch, so no trailing newline).
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    # NaN and infinities print as text ("-inf", "-Infinity") that a spreadsheet reads as a formula.
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, Decimal):
        return value.is_finite()
    return False


def safe_cell(value) -> str:
    """The cell's text: numbers as they are, formula-like text behind an apostrophe."""
    if value is None:
        return ""
    text = str(value)
    if _is_number(value) or _PLAIN_NUMBER.fullmatch(text):
        return text
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(
    *, filename: str, header: Sequence[str], rows: Iterable[Sequence]
) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow([safe_cell(h) for h in header])
        for row in rows:
            yield writer.writerow([safe_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response
