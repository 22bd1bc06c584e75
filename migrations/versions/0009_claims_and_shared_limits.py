"""many workers, one database: work and link claims with leases, shared upstream limits

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEASE = "The claim holds until then (database clock); the holder renews it while alive."


def upgrade() -> None:
    # Claims are leases of work in flight, nothing worth WAL: UNLOGGED (see tracking.py).
    op.create_table(
        "work_claims",
        sa.Column("aweme_id", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment="works.aweme_id claimed."),
        sa.Column("run_id", sa.BigInteger(), nullable=True,
                  comment="ingest_runs.run_id holding the claim; NULL while a work rests after "
                  "a failed fetch (not offered again until lease_until)."),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False, comment=_LEASE),
        sa.PrimaryKeyConstraint("aweme_id", name=op.f("pk_work_claims")),
        comment="Works a refresh worker has claimed (FOR UPDATE SKIP LOCKED) and not yet "
        "settled: other workers skip them until the lease ends.",
        prefixes=["UNLOGGED"],
    )  # fmt: skip
    op.create_table(
        "link_claims",
        sa.Column("link_key", sa.Text(), nullable=False, comment="share_links.link_key claimed."),
        sa.Column("run_id", sa.BigInteger(), nullable=False,
                  comment="ingest_runs.run_id holding the claim."),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False, comment=_LEASE),
        sa.PrimaryKeyConstraint("link_key", name=op.f("pk_link_claims")),
        comment="Links an `ingest FILE` process is fetching now: another process reading the "
        "same link waits for its fate instead of fetching it again.",
        prefixes=["UNLOGGED"],
    )  # fmt: skip
    op.create_table(
        "upstream_limits",
        sa.Column("name", sa.Text(), nullable=False, comment="Service name (the pool's name)."),
        sa.Column("starts", postgresql.ARRAY(sa.DateTime(timezone=True)),
                  server_default=sa.text("'{}'"), nullable=False,
                  comment="Start times of the latest requests (at most the limit's burst), "
                  "oldest first."),
        sa.Column("paused_until", sa.DateTime(timezone=True),
                  server_default=sa.text("'-infinity'"), nullable=False,
                  comment="No request starts before then (a Retry-After shared by every "
                  "process)."),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_upstream_limits")),
        comment="Rate-limit state of each upstream service shared by several processes "
        "(`shared = true`): the start times of its latest requests, on the database clock.",
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("upstream_limits")
    op.drop_table("link_claims")
    op.drop_table("work_claims")
