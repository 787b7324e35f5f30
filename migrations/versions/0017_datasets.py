"""Datasets and models on the shared storage: who registered them, with whom they are shared, which
jobs mounted them.

Revision ID: 0017_datasets
Revises: 0016_restrictions
Create Date: 2026-12-03 05:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0017_datasets'
down_revision = '0016_restrictions'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('tags', sa.String(length=255), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('files', sa.Integer(), nullable=True),
    sa.Column('sized_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_datasets_owner_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('name', name=op.f('uq_datasets_name'))
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_datasets_owner_id'), ['owner_id'], unique=False)
    op.create_table('dataset_shares',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_dataset_shares_account_id_accounts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_dataset_shares_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_dataset_shares_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_shares')),
    sa.UniqueConstraint('dataset_id', 'user_id', 'account_id', name=op.f('uq_dataset_shares_dataset_id_user_id_account_id'))
    )
    with op.batch_alter_table('dataset_shares', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_shares_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_shares_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_shares_user_id'), ['user_id'], unique=False)
    op.create_table('job_datasets',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_job_datasets_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_datasets_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'dataset_id', name=op.f('pk_job_datasets'))
    )
    with op.batch_alter_table('job_datasets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_datasets_dataset_id'), ['dataset_id'], unique=False)


def downgrade():
    op.drop_table('job_datasets')
    op.drop_table('dataset_shares')
    op.drop_table('datasets')
