"""runs.attempts: every time a worker ran the run (started, ended, why, from step, to step)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 09:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('attempts', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('attempts')
