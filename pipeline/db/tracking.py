"""Bookkeeping tables: what each run did, and what became of every input link."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models import Base


class RunKind(StrEnum):
    INGEST = "ingest"
    REFRESH = "refresh"
    REPROCESS = "reprocess"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished; some links invalid or failed
    FAILED = "failed"  # stopped early: the service or the database was gone, or a bug
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM
    OPERATOR_ERROR = "operator_error"  # e.g. an expired upstream cookie
    # The process died without closing its record (SIGKILL, power loss): set by the next run
    # once the heartbeat is stale or the pid is dead on the same host.
    ABANDONED = "abandoned"


class LinkOutcome(StrEnum):
    LOADED = "loaded"
    GONE = "gone"
    INVALID = "invalid"
    FAILED = "failed"


def _in(column: str, values: Iterable[str]) -> str:
    """A CHECK expression generated from the vocabulary, so the two cannot drift apart."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class IngestRun(Base):
    __tablename__ = "ingest_runs"
    __table_args__ = (
        CheckConstraint(_in("kind", RunKind), name="kind_known"),
        CheckConstraint(_in("status", RunStatus), name="status_known"),
        {"comment": "One row per `ingest`, `ingest refresh` or `ingest reprocess` run."},
    )

    run_id: Mapped[int] = mapped_column(Identity(), primary_key=True, comment="Run number.")
    kind: Mapped[str] = mapped_column(comment="ingest | refresh | reprocess.")
    status: Mapped[str] = mapped_column(
        comment=(
            "running | succeeded | partial (some links failed) | failed | interrupted "
            "(Ctrl-C/SIGTERM) | operator_error (e.g. expired upstream cookie) | abandoned (the "
            "process died without closing the record, e.g. SIGKILL: marked by the next run)."
        )
    )
    started_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When the run started."
    )
    heartbeat_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"),
        comment="Last sign of life: written every ~10 s while the run lives.",
    )
    finished_at: Mapped[datetime | None] = mapped_column(comment="When the run ended, if it did.")
    host: Mapped[str] = mapped_column(comment="Host name of the machine that ran it.")
    pid: Mapped[int] = mapped_column(Integer, comment="Process id of the run.")
    options: Mapped[dict[str, Any]] = mapped_column(
        JSONB, comment="Options the run used (secrets are never recorded)."
    )
    counts: Mapped[dict[str, Any]] = mapped_column(
        JSONB,
        server_default=text("'{}'::jsonb"),
        comment="Counts by outcome, e.g. loaded, duplicate, invalid, gone, failed, skipped_known.",
    )
    message: Mapped[str | None] = mapped_column(
        comment="Why the run stopped early, when it did (secret-free)."
    )


class ShareLinkRecord(Base):
    __tablename__ = "share_links"
    __table_args__ = (
        CheckConstraint(_in("last_outcome", LinkOutcome), name="outcome_known"),
        {"comment": "One row per distinct input link (or rejected input line) and its fate."},
    )

    link_key: Mapped[str] = mapped_column(
        primary_key=True,
        comment=(
            "aweme:<id> when the link carries a work id, url:<normalized link> for short links, "
            "invalid:<hash of file, line and text> for rejected input text (one row per "
            "rejected line)."
        ),
    )
    url: Mapped[str] = mapped_column(
        comment="Normalized link, or the rejected text (truncated) for invalid lines."
    )
    aweme_id: Mapped[int | None] = mapped_column(
        index=True, comment="Work id the link resolved to (NULL until known)."
    )
    last_outcome: Mapped[str] = mapped_column(comment="loaded | gone | invalid | failed.")
    last_reason: Mapped[str | None] = mapped_column(
        comment="Short, secret-free reason for gone/invalid/failed outcomes."
    )
    retryable: Mapped[bool] = mapped_column(
        server_default=false(),
        comment=(
            "True when the link last failed temporarily (timeouts, 5xx, rate limits): worth "
            "retrying, and what `ingest failures --export` writes. False for every other "
            "outcome, and for permanent failures."
        ),
    )
    attempts: Mapped[int] = mapped_column(
        Integer, server_default="0", comment="HTTP attempts spent on this link, over all runs."
    )
    source: Mapped[str | None] = mapped_column(
        comment="Where the link was last read: file name and line number."
    )
    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When the link was first read."
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When the link was last processed."
    )
    last_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_runs.run_id"), index=True, comment="ingest_runs.run_id that last saw it."
    )


# -- coordination between processes (docs/scaling.md) -----------------------------------------
# Claims are leases, not history: a row lives from the claim to the commit of the batch that
# settled it (or its lease end), so the tables stay as small as the work in flight. UNLOGGED:
# nothing in them is worth WAL; a database crash empties them, which at worst lets a work be
# fetched twice, never lost.


class WorkClaim(Base):
    __tablename__ = "work_claims"
    __table_args__ = (
        {
            "comment": "Works a refresh worker has claimed (FOR UPDATE SKIP LOCKED) and not yet "
            "settled: other workers skip them until the lease ends.",
            "prefixes": ["UNLOGGED"],
        },
    )

    aweme_id: Mapped[int] = mapped_column(
        primary_key=True, autoincrement=False, comment="works.aweme_id claimed."
    )
    run_id: Mapped[int | None] = mapped_column(
        comment="ingest_runs.run_id holding the claim; NULL while a work rests after a failed "
        "fetch (not offered again until lease_until).",
    )
    lease_until: Mapped[datetime] = mapped_column(
        comment="The claim holds until then (database clock); the holder renews it while alive."
    )


class LinkClaim(Base):
    __tablename__ = "link_claims"
    __table_args__ = (
        {
            "comment": "Links an `ingest FILE` process is fetching now: another process reading "
            "the same link waits for its fate instead of fetching it again.",
            "prefixes": ["UNLOGGED"],
        },
    )

    link_key: Mapped[str] = mapped_column(primary_key=True, comment="share_links.link_key claimed.")
    run_id: Mapped[int] = mapped_column(comment="ingest_runs.run_id holding the claim.")
    lease_until: Mapped[datetime] = mapped_column(
        comment="The claim holds until then (database clock); the holder renews it while alive."
    )


class UpstreamLimit(Base):
    __tablename__ = "upstream_limits"
    __table_args__ = (
        {
            "comment": "Rate-limit state of each upstream service shared by several processes "
            "(`shared = true`): the start times of its latest requests, on the database clock."
        },
    )

    name: Mapped[str] = mapped_column(primary_key=True, comment="Service name (the pool's name).")
    starts: Mapped[list[datetime]] = mapped_column(
        ARRAY(DateTime(timezone=True)),
        server_default=text("'{}'"),
        comment="Start times of the latest requests (at most the limit's burst), oldest first.",
    )
    paused_until: Mapped[datetime] = mapped_column(
        server_default=text("'-infinity'"),
        comment="No request starts before then (a Retry-After shared by every process).",
    )
