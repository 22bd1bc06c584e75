"""invalid means invalid: share_links.retryable tells temporary failures from permanent ones

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMMENT = (
    "True when the link last failed temporarily (timeouts, 5xx, rate limits): worth retrying, "
    "and what `ingest failures --export` writes. False for every other outcome, and for "
    "permanent failures."
)


def upgrade() -> None:
    op.add_column(
        "share_links",
        sa.Column(
            "retryable", sa.Boolean(), server_default=sa.false(), nullable=False, comment=_COMMENT
        ),
    )
    # Before this revision every failure was offered for retry; keep offering the old ones.
    op.execute("UPDATE share_links SET retryable = true WHERE last_outcome = 'failed'")


def downgrade() -> None:
    op.drop_column("share_links", "retryable")
