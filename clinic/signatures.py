"""Electronic signatures (SPEC §S): password re-entry, canonical content hash, verification.

Every signing step of the guideline calls `sign()`; every page that shows a signed record calls
`verify()` (or `signature_states()` for many) and shows *signature invalid* when it fails.
A signable record implements `signed_content() -> dict` (its fields and its children).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.utils import timezone

from clinic.models import Addendum, RecordLocked, Signature, SignatureFailure, User
from clinic.services import attribute

WRONG_PASSWORD = "The password is not correct. Nothing was signed."  # noqa: S105
INACTIVE_SIGNER = "Inactive accounts cannot sign."
SERVICE_ACCOUNT_SIGNER = "The service account cannot sign."


def canonical_json(content: dict) -> str:
    """One serialization for hashing: sorted keys, no whitespace, exact decimals and times."""
    return json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=_canonical_default,
    )


def _canonical_default(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)  # Decimal, date, UUID


def content_hash(
    *, record: models.Model, meaning: str, signer_id: int, printed_name: str, signed_at: datetime
) -> str:
    payload = {
        "model": record._meta.label_lower,
        "pk": record.pk,
        "content": record.signed_content(),
        "meaning": meaning,
        "signer": signer_id,
        "printed_name": printed_name,
        "signed_at": signed_at,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def check_password_for_signing(*, signer: User, password: str, record: models.Model) -> None:
    """Raise unless `signer` may sign now; a wrong password is recorded as a failed attempt.

    Call it before the signing service opens its transaction, so the attempt is kept.
    """
    if signer.is_service_account:
        raise PermissionDenied(SERVICE_ACCOUNT_SIGNER)
    if not signer.is_active:
        raise PermissionDenied(INACTIVE_SIGNER)
    if not password or not signer.check_password(password):
        SignatureFailure.objects.create(
            user=signer,
            content_type=ContentType.objects.get_for_model(record),
            object_id=record.pk,
            reason="wrong password",
        )
        raise ValidationError({"password": WRONG_PASSWORD})


def record_signature(*, record: models.Model, signer: User, meaning: str) -> Signature:
    """Store `signer`'s signature over `record`'s current content.

    Only after `check_password_for_signing` passed; the caller owns the transaction and locks
    the record in it.
    """
    signed_at = timezone.now()
    printed_name = signer.printed_name
    return Signature.objects.create(
        content_type=ContentType.objects.get_for_model(record),
        object_id=record.pk,
        signer=signer,
        printed_name=printed_name,
        signed_at=signed_at,
        meaning=meaning,
        content_sha256=content_hash(
            record=record,
            meaning=meaning,
            signer_id=signer.pk,
            printed_name=printed_name,
            signed_at=signed_at,
        ),
    )


def verify(signature: Signature, record: models.Model) -> bool:
    """True when the record's current content still hashes to what was signed."""
    return signature.content_sha256 == content_hash(
        record=record,
        meaning=signature.meaning,
        signer_id=signature.signer_id,
        printed_name=signature.printed_name,
        signed_at=signature.signed_at,
    )


@dataclass(frozen=True)
class SignatureState:
    signature: Signature
    is_valid: bool


def signatures_for(record: models.Model) -> list[SignatureState]:
    """The record's signatures, each with its verification result."""
    signatures = Signature.objects.filter(
        content_type=ContentType.objects.get_for_model(record), object_id=record.pk
    ).order_by("signed_at", "id")
    return [SignatureState(s, verify(s, record)) for s in signatures]


def signatures_for_many(records: Iterable[models.Model]) -> dict[int, list[SignatureState]]:
    """Signatures of several records of one model, in one query, keyed by record pk."""
    records = list(records)
    if not records:
        return {}
    content_type = ContentType.objects.get_for_model(records[0])
    by_pk = {r.pk: r for r in records}
    states: dict[int, list[SignatureState]] = {pk: [] for pk in by_pk}
    for signature in Signature.objects.filter(
        content_type=content_type, object_id__in=by_pk
    ).order_by("signed_at", "id"):
        record = by_pk[signature.object_id]
        states[signature.object_id].append(SignatureState(signature, verify(signature, record)))
    return states


@dataclass(frozen=True)
class AddendumView:
    addendum: Addendum
    signature: SignatureState | None


def addenda_for(record: models.Model) -> list[AddendumView]:
    content_type = ContentType.objects.get_for_model(record)
    addenda = list(
        Addendum.objects.filter(content_type=content_type, object_id=record.pk).select_related(
            "author"
        )
    )
    signatures = signatures_for_many(addenda)
    return [AddendumView(a, signatures[a.pk][0] if signatures.get(a.pk) else None) for a in addenda]


def addendum_add(
    *, record: models.Model, author: User, password: str, text: str, reason: str
) -> Addendum:
    """Append a signed correction under a signed record; the original stays unchanged."""
    if not getattr(record, "is_locked", False):
        raise ValidationError("Addenda are for signed records; edit the draft instead.")
    text, reason = text.strip(), reason.strip()
    errors = {}
    if not text:
        errors["text"] = "Write the correction."
    if not reason:
        errors["reason"] = "Give the reason for the correction."
    if errors:
        raise ValidationError(errors)
    check_password_for_signing(signer=author, password=password, record=record)
    with transaction.atomic():
        return _addendum_create(record=record, author=author, text=text, reason=reason)


def _addendum_create(*, record: models.Model, author: User, text: str, reason: str) -> Addendum:
    addendum = Addendum(
        content_type=ContentType.objects.get_for_model(record),
        object_id=record.pk,
        text=text,
        reason=reason,
        author=author,
        created_at=timezone.now(),
    )
    addendum.full_clean()
    # Saved once, already locked (locked_at is not part of the signed content), then signed:
    # one history row for one addendum.
    addendum.locked_at = addendum.created_at
    attribute(addendum, acting_user=author, reason="Addendum signed and locked")
    addendum.save()
    record_signature(record=addendum, signer=author, meaning=Signature.Meaning.AUTHORED)
    return addendum


__all__ = [
    "RecordLocked",
    "SignatureState",
    "addenda_for",
    "addendum_add",
    "canonical_json",
    "check_password_for_signing",
    "record_signature",
    "signatures_for",
    "signatures_for_many",
    "verify",
]
