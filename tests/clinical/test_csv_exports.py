"""SPEC §C5: "CSV export of every list (cells starting with `=`, `+`, `-`, `@` neutralized)".

Neutralizing is for text a spreadsheet would run as a formula (OWASP adds tab and carriage
return). A number is not a formula: a negative balance (-5), a dose of 3.5 or -0.25 stays a
number the spreadsheet can sum, whether it arrives as int, Decimal, float or as the plain text of
a number. Each edge is tested at, just below and just above the line between the two.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from clinic.exports import csv_response, safe_cell
from monitoring import services

# --- Numbers stay numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (-5, "-5"),
        (0, "0"),
        (5, "5"),
        (Decimal("-5"), "-5"),
        (Decimal("-5.00"), "-5.00"),
        (Decimal("-0.25"), "-0.25"),
        (Decimal("3.5"), "3.5"),
        (-0.25, "-0.25"),
        (3.5, "3.5"),
        (-1e-07, "-1e-07"),
        (Decimal("-1E+3"), "-1E+3"),
    ],
)
def test_c5_a_number_is_written_as_the_number_it_is(value, cell):
    assert safe_cell(value) == cell


@pytest.mark.parametrize(
    "text",
    ["-5", "-0", "-0.25", "3.5", "-123456789.000001", "0.5"],
)
def test_c5_text_that_is_a_plain_number_stays_a_number(text):
    assert safe_cell(text) == text


@pytest.mark.parametrize(
    "text",
    [
        # Just off a plain number: each could be the start of an expression.
        "-",
        "-.5",
        "-5.",
        "-5e3",
        "- 5",
        "--5",
        "-5-",
        "-1+2",
        "-5\n",  # a trailing newline is not part of a number
        "-5\n=1+1",
        "-٣",  # a non-ASCII digit is not a plain number
        "+5",
        "+44 20 7946 0000",
        "=SUM(A1:A9)",
        '=HYPERLINK("http://evil.invalid","x")',
        "@x",
        "@SUM(1)",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_c5_text_starting_like_a_formula_is_neutralized(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (float("-inf"), "'-inf"),
        (Decimal("-Infinity"), "'-Infinity"),
        (float("nan"), "nan"),
        (Decimal("NaN"), "NaN"),
    ],
)
def test_c5_a_non_finite_number_prints_as_a_word_and_is_treated_as_text(value, cell):
    assert safe_cell(value) == cell


@pytest.mark.parametrize(
    "text",
    ["", "5-", "1+2", "a=b", " =1+1", "−5", "Missed: =1+1", "Oxygen given"],
)
def test_c5_text_not_starting_like_a_formula_is_written_as_is(text):
    # " =1+1" and "−5" (U+2212, not ASCII '-') start with characters no spreadsheet evaluates.
    assert safe_cell(text) == text


def test_c5_an_empty_value_is_an_empty_cell_and_booleans_are_words():
    assert (safe_cell(None), safe_cell(True), safe_cell(False)) == ("", "True", "False")


# --- Through the streamed response -----------------------------------------------------------


def _read(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_c5_a_streamed_export_keeps_numbers_and_neutralizes_formula_text():
    response = csv_response(
        filename="x.csv",
        header=("=header", "mg"),
        rows=[
            ("-1+2", Decimal("-5.00")),
            ("+44 20 7946 0000", -0.25),
            ("@x", "-5"),
            ('=HYPERLINK("http://evil.invalid","x")', 3.5),
        ],
    )

    assert _read(response) == [
        ["'=header", "mg"],
        ["'-1+2", "-5.00"],
        ["'+44 20 7946 0000", "-0.25"],
        ["'@x", "-5"],
        ['\'=HYPERLINK("http://evil.invalid","x")', "3.5"],
    ]


@pytest.mark.django_db
def test_c5_m12_a_register_export_keeps_a_negative_balance_numeric(
    client, site, nurse, psychiatrist, administrator, password
):
    """A waste past the lot's balance leaves -5.00 mg: the export shows -5.00, not '-5.00."""
    lot = services.lot_receive(
        site=site,
        acting_user=nurse,
        drug="ketamine",
        lot_number="KET-NEG-1",
        concentration_mg_per_ml=Decimal("10"),
        expires_on=timezone.localdate() + timedelta(days=365),
        received_mg=Decimal("100"),
    )
    services.waste_record(
        lot=lot,
        acting_user=nurse,
        amount_mg=Decimal("105"),
        reason="-1+2 spilt",
        witness=psychiatrist,
        witness_password=password,
    )
    client.force_login(administrator)

    header, *rows = _read(client.get(reverse("monitoring:register_csv")))

    waste = next(r for r in rows if r[header.index("kind")] == "Wasted")
    assert waste[header.index("balance mg")] == "-5.00"
    assert waste[header.index("mg")] == "105.00"
    assert waste[header.index("reason")] == "'-1+2 spilt"
