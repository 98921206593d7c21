"""The hash chain (SPEC §C4): every audit row is linked as it is written.

A link's hash covers its predecessor's hash, the SHA-256 of the chained row as stored, and the
link's own index fields; `verify.py` recomputes all three. Row content is read back from the
database before hashing, so the hash is of what was stored (rounded decimals, jsonb key order)
rather than of the Python object that was saved.

History rows are linked from simple-history's `post_create_historical_record` signal and the
other audit rows from `post_save`: the chain is infrastructure that must cover every write path,
like simple-history's own signal, not workflow a service could forget to call.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from django.db import connections, models, router, transaction
from django.db.models.signals import post_save
from simple_history.models import HistoricalChanges
from simple_history.signals import post_create_historical_m2m_records, post_create_historical_record

from audit.models import AccessLog, AuditChain, AuditEvent
from audit.scope import scope_of, target_of
from clinic.models import without_unset_additions
from clinic.signatures import canonical_json

HISTORY_ACTIONS = {
    "+": AuditEvent.Action.CREATED,
    "~": AuditEvent.Action.CHANGED,
    "-": AuditEvent.Action.DELETED,
}


ACCESS_ACTIONS = {
    AccessLog.Action.VIEW: AuditEvent.Action.VIEWED,
    AccessLog.Action.EXPORT: AuditEvent.Action.EXPORTED,
    AccessLog.Action.SIGN_IN: AuditEvent.Action.SIGNED_IN,
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def genesis_hash(key: str) -> str:
    """Link 1's predecessor: bound to the chain's key, so links cannot move between chains."""
    return sha256(f"vigil-audit-chain:{key}")


def row_values(model: type[models.Model], pks, using: str = "default") -> dict[int, dict]:
    """Stored column values of rows of `model`, keyed by pk, exactly as the hashes cover them.

    Raw SQL, not the ORM: the values are the database's own, before any field conversion, and
    the same read serves the link at write time and `verify_audit` years later.
    """
    pks = list(pks)
    if not pks:
        return {}
    connection = connections[using]
    quote = connection.ops.quote_name
    columns = [f.column for f in model._meta.concrete_fields]
    pk_column = model._meta.pk.column
    placeholders = ", ".join(["%s"] * len(pks))
    sql = (
        f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(model._meta.db_table)} "  # noqa: S608
        f"WHERE {quote(pk_column)} IN ({placeholders})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, pks)
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    table = model._meta.db_table
    # Columns added after a row was linked count only once they hold a value (clinic.models).
    return {row[pk_column]: without_unset_additions(table, row) for row in rows}


def content_hash(values: dict) -> str:
    return sha256(canonical_json(values))


def link_hash(event: AuditEvent, chain_key: str) -> str:
    return sha256(
        canonical_json(
            {
                "chain": chain_key,
                "seq": event.seq,
                "prev": event.prev_hash,
                "content": event.content_sha256,
                "at": event.occurred_at,
                "action": event.action,
                "source": [event.source, event.source_id],
                "object": [event.object_type, event.object_id],
                "user": event.user_id,
                "site": event.site_id,
                "patient": event.patient_id,
                "reason": event.reason,
            }
        )
    )


class _TransactionMarker:
    """Registered with on_commit: Django drops it when the transaction commits or rolls back,
    so its presence says "still the transaction that chose this chain"."""

    def __call__(self) -> None:
        pass


def _chain_key(connection, site_id: int | None, at: datetime) -> str:
    # One chain per transaction: a transaction that locked one head never waits for a second,
    # so appends cannot deadlock, whatever mix of sites a transaction touches. (The outermost
    # Atomic object cannot tell transactions apart: @transaction.atomic reuses one instance.)
    sticky = getattr(connection, "vigil_audit_chain", None)
    if sticky is not None and any(hook[1] is sticky[0] for hook in connection.run_on_commit):
        return sticky[1]
    day = at.astimezone(UTC).date().isoformat()
    key = f"site-{site_id}/{day}" if site_id else f"clinic/{day}"
    marker = _TransactionMarker()
    transaction.on_commit(marker, using=connection.alias)
    connection.vigil_audit_chain = (marker, key)
    return key


def append(
    *,
    row: models.Model,
    action: str,
    occurred_at: datetime,
    object_type: str,
    object_id,
    user_id: int | None,
    site_id: int | None,
    patient_id: int | None,
    reason: str = "",
) -> AuditEvent:
    """Link `row` (already saved) at the end of its chain, under the chain head's row lock."""
    using = router.db_for_write(AuditEvent)
    # No savepoint: a failure here fails the caller's write, which is what should happen.
    with transaction.atomic(using=using, savepoint=False):
        connection = transaction.get_connection(using)
        key = _chain_key(connection, site_id, occurred_at)
        chains = AuditChain.objects.using(using).select_for_update()
        chain = chains.filter(key=key).first()
        if chain is None:
            AuditChain.objects.using(using).get_or_create(
                key=key, defaults={"genesis": genesis_hash(key), "head": genesis_hash(key)}
            )
            chain = chains.get(key=key)
        model = type(row)
        event = AuditEvent(
            chain=chain,
            seq=chain.length + 1,
            occurred_at=occurred_at,
            action=action,
            source=model._meta.label_lower,
            source_id=row.pk,
            object_type=object_type,
            object_id=str(object_id or ""),
            user_id=user_id,
            site_id=site_id,
            patient_id=patient_id,
            reason=reason or "",
            content_sha256=content_hash(row_values(model, [row.pk], using)[row.pk]),
            prev_hash=chain.head,
        )
        event.hash = link_hash(event, key)
        event.save(using=using, force_insert=True)
        AuditChain.objects.using(using).filter(pk=chain.pk).update(
            length=event.seq, head=event.hash
        )
    return event


# --- what gets linked -------------------------------------------------------------------------


def _on_history_row(sender, instance, history_instance, history_user, **kwargs) -> None:
    site_id, patient_id = scope_of(instance)
    append(
        row=history_instance,
        action=HISTORY_ACTIONS[history_instance.history_type],
        occurred_at=history_instance.history_date,
        object_type=instance._meta.label_lower,
        object_id=instance.pk,
        user_id=history_user.pk if history_user else None,
        site_id=site_id,
        patient_id=patient_id,
        reason=history_instance.history_change_reason or "",
    )


def _on_m2m_history_rows(sender, created_rows, history_instance, instance, field, **kwargs):
    site_id, patient_id = scope_of(instance)
    for row in created_rows:
        append(
            row=row,
            action=AuditEvent.Action.CHANGED,
            occurred_at=history_instance.history_date,
            object_type=instance._meta.label_lower,
            object_id=instance.pk,
            user_id=history_instance.history_user_id,
            site_id=site_id,
            patient_id=patient_id,
            reason=f"{field.verbose_name} at this change",
        )


def _link_about_record(row, *, action: str, occurred_at: datetime, user_id, reason: str) -> None:
    """Link a signature or a refused attempt, indexed under the record it is about."""
    target = target_of(row)
    site_id, patient_id = scope_of(target) if target is not None else (None, None)
    append(
        row=row,
        action=action,
        occurred_at=occurred_at,
        object_type=target._meta.label_lower if target is not None else "",
        object_id=row.object_id,
        user_id=user_id,
        site_id=site_id,
        patient_id=patient_id,
        reason=reason,
    )


def _on_signature(sender, instance, created, raw=False, **kwargs) -> None:
    if created and not raw:
        _link_about_record(
            instance,
            action=AuditEvent.Action.SIGNED,
            occurred_at=instance.signed_at,
            user_id=instance.signer_id,
            reason=instance.get_meaning_display(),
        )


def _on_signature_failure(sender, instance, created, raw=False, **kwargs) -> None:
    if created and not raw:
        _link_about_record(
            instance,
            action=AuditEvent.Action.SIGNING_REFUSED,
            occurred_at=instance.attempted_at,
            user_id=instance.user_id,
            reason=instance.reason,
        )


def _on_register_entry(sender, instance, created, raw=False, **kwargs) -> None:
    if not created or raw:
        return
    site_id, patient_id = scope_of(instance)
    append(
        row=instance,
        action=AuditEvent.Action.RECORDED,
        occurred_at=instance.at,
        object_type=instance._meta.label_lower,
        object_id=instance.pk,
        user_id=instance.by_id,
        site_id=site_id,
        patient_id=patient_id,
        reason=instance.get_kind_display(),
    )


def _on_access(sender, instance, created, raw=False, **kwargs) -> None:
    if not created or raw:
        return
    append(
        row=instance,
        action=ACCESS_ACTIONS[instance.action],
        occurred_at=instance.at,
        object_type=instance.object_type,
        object_id=instance.object_id,
        user_id=instance.user_id,
        site_id=instance.site_id,
        patient_id=instance.patient_id,
        reason=instance.what,
    )


def chained_models() -> list[type[models.Model]]:
    """Every model whose rows are linked: history models (and their m2m tables) and the
    append-only evidence tables."""
    from django.apps import apps

    from clinic.models import Signature, SignatureFailure
    from monitoring.models import ControlledSubstanceEntry

    history = [m for m in apps.get_models() if issubclass(m, HistoricalChanges)]
    return [*history, Signature, SignatureFailure, ControlledSubstanceEntry, AccessLog]


def connect() -> None:
    from clinic.models import Signature, SignatureFailure
    from monitoring.models import ControlledSubstanceEntry

    post_create_historical_record.connect(_on_history_row, dispatch_uid="audit-history")
    post_create_historical_m2m_records.connect(_on_m2m_history_rows, dispatch_uid="audit-m2m")
    post_save.connect(_on_signature, sender=Signature, dispatch_uid="audit-signature")
    post_save.connect(
        _on_signature_failure, sender=SignatureFailure, dispatch_uid="audit-signature-failure"
    )
    post_save.connect(
        _on_register_entry, sender=ControlledSubstanceEntry, dispatch_uid="audit-register"
    )
    post_save.connect(_on_access, sender=AccessLog, dispatch_uid="audit-access")
