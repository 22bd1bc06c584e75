"""raw payloads: lz4 compression where the server has it, else stored uncompressed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 06:10:00

Storing a ~32 KB payload cost PostgreSQL ~0.48 ms of CPU, ~0.3 of it compressing the value with
pglz, the default TOAST compression (`python -m bench.raw_storage`; bench/README.md, "Raw
payload storage"). lz4 compresses
the same values about as well at a fraction of the CPU, and nearly every packaged PostgreSQL
>= 14 is built with it. A server built without it (the embedded `pgserver` one) stores the
payloads uncompressed instead (out of line, `STORAGE EXTERNAL`): ~2.6x the disk of pglz for
the raw payloads, the same rows and values. Only rows written from now on are affected; an
operator who prefers pglz's disk use runs the `ALTER TABLE` given in docs/schema.md.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("payload", "complete_payload")
_PAYLOAD = (
    "aweme_detail exactly as received (a NUL character or a lone surrogate, which PostgreSQL "
    "cannot store, replaced by U+FFFD). Compressed with lz4 where the server has it, else "
    "stored uncompressed (docs/schema.md)."
)
_OLD_PAYLOAD = "aweme_detail exactly as received (NUL characters removed)."


def has_lz4() -> bool:
    enumvals = op.get_bind().scalar(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    )
    return "lz4" in (enumvals or ())


def upgrade() -> None:
    for column in _COLUMNS:
        if has_lz4():
            op.execute(f"ALTER TABLE raw_payloads ALTER COLUMN {column} SET COMPRESSION lz4")
        else:
            op.execute(f"ALTER TABLE raw_payloads ALTER COLUMN {column} SET STORAGE EXTERNAL")
    op.alter_column(
        "raw_payloads",
        "payload",
        existing_type=postgresql.JSONB(),
        comment=_PAYLOAD,
        existing_comment=_OLD_PAYLOAD,
    )


def downgrade() -> None:
    op.alter_column(
        "raw_payloads",
        "payload",
        existing_type=postgresql.JSONB(),
        comment=_OLD_PAYLOAD,
        existing_comment=_PAYLOAD,
    )
    for column in _COLUMNS:
        op.execute(f"ALTER TABLE raw_payloads ALTER COLUMN {column} SET STORAGE EXTENDED")
        op.execute(f"ALTER TABLE raw_payloads ALTER COLUMN {column} SET COMPRESSION default")
