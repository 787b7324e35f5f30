"""Web terminals: the open terminal sessions (who, which job and pod, opened, last beat, closed and why).

Revision ID: 0013_terminals
Revises: 0012_borrowing
Create Date: 2026-12-03 02:15:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0013_terminals'
down_revision = '0012_borrowing'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('terminal_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('pod', sa.String(length=253), nullable=False),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.Column('seen_at', sa.DateTime(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('close_reason', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_terminal_sessions_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_terminal_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_terminal_sessions'))
    )
    with op.batch_alter_table('terminal_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_terminal_sessions_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_terminal_sessions_user_id'), ['user_id'], unique=False)


def downgrade():
    op.drop_table('terminal_sessions')  # its indexes go with it (MySQL refuses to drop one a foreign key needs)
