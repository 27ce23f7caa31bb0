"""Quizzes, cohorts and invitations: invitation use limits, a quiz attempt's questions, deadline and the question on
screen, and the index of an answer's question, unique per attempt (a double submit stores one answer).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 14:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_uses', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('uses', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('items', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('shown_item', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shown_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('item', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_answers_attempt_item', ['attempt_id', 'item'])


def downgrade() -> None:
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.drop_constraint('uq_answers_attempt_item', type_='unique')
        batch_op.drop_column('item')

    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_column('shown_at')
        batch_op.drop_column('shown_item')
        batch_op.drop_column('deadline_at')
        batch_op.drop_column('items')

    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_column('uses')
        batch_op.drop_column('max_uses')
