"""Bookkeeping tables: what each run did, and what became of every input link."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Identity, Integer, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models import Base

RUN_KINDS = ("ingest", "refresh", "reprocess")
RUN_STATUSES = ("running", "succeeded", "partial", "failed", "interrupted", "operator_error")
LINK_OUTCOMES = ("loaded", "gone", "invalid", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class IngestRun(Base):
    __tablename__ = "ingest_runs"
    __table_args__ = (
        CheckConstraint(_in("kind", RUN_KINDS), name="kind_known"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status_known"),
        {"comment": "One row per `ingest`, `ingest refresh` or `ingest reprocess` run."},
    )

    run_id: Mapped[int] = mapped_column(Identity(), primary_key=True, comment="Run number.")
    kind: Mapped[str] = mapped_column(comment="ingest | refresh | reprocess.")
    status: Mapped[str] = mapped_column(
        comment=(
            "running | succeeded | partial (some links failed) | failed | interrupted "
            "(Ctrl-C/SIGTERM) | operator_error (e.g. expired upstream cookie). A run killed "
            "with SIGKILL stays 'running' with no heartbeat."
        )
    )
    started_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When the run started."
    )
    heartbeat_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="Last time the run wrote progress."
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
        CheckConstraint(_in("last_outcome", LINK_OUTCOMES), name="outcome_known"),
        {"comment": "One row per distinct input link (or rejected input line) and its fate."},
    )

    link_key: Mapped[str] = mapped_column(
        primary_key=True,
        comment=(
            "aweme:<id> when the link carries a work id, url:<normalized link> for short links, "
            "invalid:<hash> for rejected input text."
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
