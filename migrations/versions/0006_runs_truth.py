"""runs tell the truth: 'abandoned' run status, heartbeat and per-line rejection comments

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:58:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = (
    "status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted', 'operator_error')"
)
_NEW_STATUSES = "status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted', 'operator_error', 'abandoned')"

_OLD_STATUS_COMMENT = "running | succeeded | partial (some links failed) | failed | interrupted (Ctrl-C/SIGTERM) | operator_error (e.g. expired upstream cookie). A run killed with SIGKILL stays 'running' with no heartbeat."
_NEW_STATUS_COMMENT = "running | succeeded | partial (some links failed) | failed | interrupted (Ctrl-C/SIGTERM) | operator_error (e.g. expired upstream cookie) | abandoned (the process died without closing the record, e.g. SIGKILL: marked by the next run)."
_OLD_HEARTBEAT_COMMENT = "Last time the run wrote progress."
_NEW_HEARTBEAT_COMMENT = "Last sign of life: written every ~10 s while the run lives."
_OLD_KEY_COMMENT = "aweme:<id> when the link carries a work id, url:<normalized link> for short links, invalid:<hash> for rejected input text."
_NEW_KEY_COMMENT = "aweme:<id> when the link carries a work id, url:<normalized link> for short links, invalid:<hash of file, line and text> for rejected input text (one row per rejected line)."


def _comments(status: str, heartbeat: str, key: str, *, was: tuple[str, str, str]) -> None:
    op.alter_column(
        "ingest_runs",
        "status",
        existing_type=sa.Text(),
        existing_nullable=False,
        comment=status,
        existing_comment=was[0],
    )
    op.alter_column(
        "ingest_runs",
        "heartbeat_at",
        existing_type=sa.DateTime(timezone=True),
        existing_nullable=False,
        existing_server_default=sa.text("now()"),
        comment=heartbeat,
        existing_comment=was[1],
    )
    op.alter_column(
        "share_links",
        "link_key",
        existing_type=sa.Text(),
        existing_nullable=False,
        comment=key,
        existing_comment=was[2],
    )


def upgrade() -> None:
    op.drop_constraint(op.f("ck_ingest_runs_status_known"), "ingest_runs", type_="check")
    op.create_check_constraint(op.f("ck_ingest_runs_status_known"), "ingest_runs", _NEW_STATUSES)
    _comments(
        _NEW_STATUS_COMMENT,
        _NEW_HEARTBEAT_COMMENT,
        _NEW_KEY_COMMENT,
        was=(_OLD_STATUS_COMMENT, _OLD_HEARTBEAT_COMMENT, _OLD_KEY_COMMENT),
    )


def downgrade() -> None:
    # 'abandoned' has no older equivalent: those runs did end without a status, as before.
    op.execute("UPDATE ingest_runs SET status = 'failed' WHERE status = 'abandoned'")
    op.drop_constraint(op.f("ck_ingest_runs_status_known"), "ingest_runs", type_="check")
    op.create_check_constraint(op.f("ck_ingest_runs_status_known"), "ingest_runs", _OLD_STATUSES)
    _comments(
        _OLD_STATUS_COMMENT,
        _OLD_HEARTBEAT_COMMENT,
        _OLD_KEY_COMMENT,
        was=(_NEW_STATUS_COMMENT, _NEW_HEARTBEAT_COMMENT, _NEW_KEY_COMMENT),
    )
