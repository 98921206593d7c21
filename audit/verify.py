"""Walk every hash chain and re-hash every signed record (SPEC §C4).

A link is broken when its sequence number skips, its predecessor hash is not the previous link's
hash, its own hash does not recompute, or the row it covers is missing or no longer hashes to
what was stored. Rows of a chained table that no link covers (inserted behind the application's
back) and chain heads that do not match their last link are reported too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db.models import Exists, OuterRef, Subquery

from audit.chain import chained_models, content_hash, genesis_hash, link_hash, row_values
from audit.models import AuditChain, AuditEvent, Finding
from audit.scope import scope_of
from clinic import signatures
from clinic.models import Signature

BATCH = 2000
Kind = Finding.Kind


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str
    chain_key: str = ""
    seq: int | None = None
    source: str = ""
    source_id: int | None = None
    site_id: int | None = None
    occurred_at: datetime | None = None

    def __str__(self) -> str:
        where = f"chain {self.chain_key} link {self.seq}" if self.chain_key else "outside chains"
        row = f" ({self.source} #{self.source_id})" if self.source else ""
        return f"{Finding.Kind(self.kind).label}: {where}{row}: {self.detail}"


@dataclass
class Report:
    chains: int = 0
    links: int = 0
    signatures: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_break(self) -> Problem | None:
        return self.problems[0] if self.problems else None


Progress = Callable[[int, int], None]


def verify_all(*, progress: Progress | None = None) -> Report:
    report = Report()
    total = AuditEvent.objects.count()
    done = 0
    for chain in AuditChain.objects.order_by("key"):
        report.chains += 1
        done = _verify_chain(chain, report, done, total, progress)
    _find_unchained_rows(report)
    _verify_signatures(report)
    return report


def _verify_chain(chain: AuditChain, report: Report, done: int, total: int, progress) -> int:
    # Read the head first: links appended while we walk lie beyond it and are left for the
    # next run.
    length, head = chain.length, chain.head
    expected_prev = genesis_hash(chain.key)
    if chain.genesis != expected_prev:
        report.problems.append(
            Problem(Kind.BROKEN_LINK, "the chain's genesis hash was changed", chain.key, 0)
        )
    expected_seq = 1
    last_hash = expected_prev
    after = 0
    while after < length:
        events = list(
            AuditEvent.objects.filter(chain=chain, seq__gt=after, seq__lte=length).order_by("seq")[
                :BATCH
            ]
        )
        if not events:
            break
        contents = _stored_contents(events)
        for event in events:
            problem = _check_link(chain.key, event, expected_seq, expected_prev, contents)
            if problem is not None:
                report.problems.append(problem)
            expected_seq = event.seq + 1
            expected_prev = last_hash = event.hash
        after = events[-1].seq
        report.links += len(events)
        done += len(events)
        if progress:
            progress(done, total)
    # A link is written with its head in one transaction, so a committed link past the head
    # (read in the same statement) was put there behind the application's back.
    beyond = AuditEvent.objects.filter(
        chain=chain,
        seq__gt=Subquery(AuditChain.objects.filter(pk=chain.pk).values("length")[:1]),
    ).order_by("seq")
    for event in beyond[:10]:
        report.problems.append(
            Problem(
                Kind.BROKEN_LINK,
                "a link past the chain's head (forged or inserted behind the application)",
                chain.key,
                event.seq,
                event.source,
                event.source_id,
                event.site_id,
                event.occurred_at,
            )
        )
    if expected_seq - 1 != length or last_hash != head:
        report.problems.append(
            Problem(
                Kind.HEAD_MISMATCH,
                f"the head says {length} links ending {head[:12]}…, the chain has "
                f"{expected_seq - 1} ending {last_hash[:12]}…",
                chain.key,
                length,
            )
        )
    return done


def _stored_contents(events: list[AuditEvent]) -> dict[tuple[str, int], dict]:
    by_source: dict[str, list[int]] = defaultdict(list)
    for event in events:
        by_source[event.source].append(event.source_id)
    contents = {}
    for source, pks in by_source.items():
        try:
            model = apps.get_model(source)
        except LookupError:
            continue
        for pk, values in row_values(model, pks).items():
            contents[(source, pk)] = values
    return contents


def _check_link(key, event, expected_seq, expected_prev, contents) -> Problem | None:
    def problem(kind: str, detail: str) -> Problem:
        return Problem(
            kind,
            detail,
            key,
            event.seq,
            event.source,
            event.source_id,
            event.site_id,
            event.occurred_at,
        )

    if event.seq != expected_seq:
        return problem(Kind.BROKEN_LINK, f"link {expected_seq} is missing")
    if event.prev_hash != expected_prev:
        return problem(Kind.BROKEN_LINK, "does not follow its predecessor (moved or replaced)")
    if link_hash(event, key) != event.hash:
        return problem(Kind.BROKEN_LINK, "the link itself was altered")
    values = contents.get((event.source, event.source_id))
    if values is None:
        return problem(Kind.ROW_MISSING, "the row this link covers is gone")
    if content_hash(values) != event.content_sha256:
        return problem(Kind.ROW_ALTERED, "the row no longer matches what was stored")
    return None


def _find_unchained_rows(report: Report) -> None:
    for model in chained_models():
        label = model._meta.label_lower
        linked = AuditEvent.objects.filter(source=label, source_id=OuterRef("pk"))
        for pk in (
            model._base_manager.filter(~Exists(linked)).order_by("pk").values_list("pk", flat=True)
        ):
            report.problems.append(
                Problem(Kind.ROW_UNCHAINED, "no link covers this row", source=label, source_id=pk)
            )


def _verify_signatures(report: Report) -> None:
    after = 0
    while True:
        batch = list(Signature.objects.filter(pk__gt=after).order_by("pk")[:BATCH])
        if not batch:
            return
        after = batch[-1].pk
        by_type: dict[int, list[Signature]] = defaultdict(list)
        for signature in batch:
            by_type[signature.content_type_id].append(signature)
        for content_type_id, group in by_type.items():
            model = ContentType.objects.get_for_id(content_type_id).model_class()
            records = model._base_manager.in_bulk({s.object_id for s in group}) if model else {}
            for signature in group:
                report.signatures += 1
                record = records.get(signature.object_id)
                if record is not None and signatures.verify(signature, record):
                    continue
                site_id = scope_of(record)[0] if record is not None else None
                report.problems.append(
                    Problem(
                        Kind.SIGNATURE_INVALID,
                        f"{signature.get_meaning_display()} signature by {signature.printed_name} "
                        f"on {model._meta.verbose_name if model else '?'} #{signature.object_id} "
                        "no longer matches the record",
                        source="clinic.signature",
                        source_id=signature.pk,
                        site_id=site_id,
                        occurred_at=signature.signed_at,
                    )
                )
