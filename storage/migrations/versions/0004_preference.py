"""Preference tuning: reward/log-prob metrics of DPO, KTO and reward runs; blind A/B judgements

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 09:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

METRIC_COLUMNS = ('reward_margin', 'reward_accuracy', 'logps_chosen', 'logps_rejected')


def upgrade() -> None:
    with op.batch_alter_table('run_metrics') as batch:
        for name in METRIC_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table('judgements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('base_model_ref', sa.String(length=512), nullable=False),
    sa.Column('system', sa.Text(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('model_a', sa.String(length=64), nullable=False),
    sa.Column('model_b', sa.String(length=64), nullable=False),
    sa.Column('answer_a', sa.Text(), nullable=False),
    sa.Column('answer_b', sa.Text(), nullable=False),
    sa.Column('pick', sa.String(length=16), nullable=False),
    sa.Column('edited', sa.Text(), nullable=True),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('batch', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_judgements_pair', 'judgements', ['base_model_ref', 'model_a', 'model_b'])


def downgrade() -> None:
    op.drop_index('ix_judgements_pair', table_name='judgements')
    op.drop_table('judgements')
    with op.batch_alter_table('run_metrics') as batch:
        for name in METRIC_COLUMNS:
            batch.drop_column(name)
