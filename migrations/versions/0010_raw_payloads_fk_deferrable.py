"""raw_payloads -> works foreign key DEFERRABLE (INITIALLY IMMEDIATE): the loader defers it in
its own transaction to send a batch's raw payloads first

Every other writer sees the constraint as before (checked per statement); only a transaction
that says `SET CONSTRAINTS ... DEFERRED` (the loader, `pipeline.db.load`) has it checked at
commit, so PostgreSQL parses the batch's payloads while the loader merges the rest.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 06:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_raw_payloads_aweme_id_works"


def upgrade() -> None:
    # ALTER CONSTRAINT changes the flags in place: no re-check of the rows, no table rewrite.
    op.execute(f"ALTER TABLE raw_payloads ALTER CONSTRAINT {_FK} DEFERRABLE INITIALLY IMMEDIATE")


def downgrade() -> None:
    op.execute(f"ALTER TABLE raw_payloads ALTER CONSTRAINT {_FK} NOT DEFERRABLE")
