"""Borrowing and reclaim: accounts' borrowing and lending limits, a job's borrow choice and class,
its preemptions and backoff, and the log of preemptions.

Revision ID: 0012_borrowing
Revises: 0011_api_tokens
Create Date: 2026-12-02 22:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0012_borrowing'
down_revision = '0011_api_tokens'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ALTER TABLE ADD COLUMN (SQLite too): no table rebuild, which other tables' foreign keys forbid.
    op.add_column('accounts', sa.Column('borrow_limit', sa.Integer(), nullable=True))
    op.add_column('accounts', sa.Column('lend_limit', sa.Integer(), nullable=True))
    op.add_column('accounts', sa.Column('borrow_jupyter', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('jobs', sa.Column('borrow', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('jobs', sa.Column('borrowed', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('jobs', sa.Column('preemptions', sa.Integer(), server_default='0', nullable=False))
    op.add_column('jobs', sa.Column('preempted_at', sa.DateTime(), nullable=True))
    op.add_column('jobs', sa.Column('not_before', sa.DateTime(), nullable=True))
    op.create_index('ix_jobs_borrowed_state', 'jobs', ['borrowed', 'state'], unique=False)
    for table in ('usage_days', 'usage_rollups', 'usage_model_days'):
        op.add_column(table, sa.Column('borrowed_gpu_seconds', sa.Float(), server_default='0', nullable=False))
    op.create_table('preemptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('account', sa.String(length=63), nullable=False),
    sa.Column('by_job_id', sa.Integer(), nullable=True),
    sa.Column('by_account', sa.String(length=63), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('ran_seconds', sa.Integer(), nullable=False),
    sa.Column('gpu_seconds_lost', sa.Float(), nullable=False),
    sa.Column('grace_seconds', sa.Integer(), nullable=False),
    sa.Column('waited_since', sa.DateTime(), nullable=True),
    sa.Column('bound_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_preemptions_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['by_job_id'], ['jobs.id'], name=op.f('fk_preemptions_by_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_preemptions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preemptions'))
    )
    with op.batch_alter_table('preemptions', schema=None) as batch_op:
        batch_op.create_index('ix_preemptions_at', ['at'], unique=False)
        batch_op.create_index('ix_preemptions_by', ['by_job_id'], unique=False)
        batch_op.create_index('ix_preemptions_job', ['job_id'], unique=False)


def downgrade():
    for table in ('usage_days', 'usage_rollups', 'usage_model_days'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('borrowed_gpu_seconds')
    op.drop_table('preemptions')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_borrowed_state')
        for column in ('not_before', 'preempted_at', 'preemptions', 'borrowed', 'borrow'):
            batch_op.drop_column(column)
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        for column in ('borrow_jupyter', 'lend_limit', 'borrow_limit'):
            batch_op.drop_column(column)
