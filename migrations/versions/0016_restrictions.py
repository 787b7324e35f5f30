"""Admins' restrictions of a user (from submitting, from the portal, from the storage), and a flag on
the user that says whether to look.

Revision ID: 0016_restrictions
Revises: 0015_files_write
Create Date: 2026-12-03 05:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0016_restrictions'
down_revision = '0015_files_write'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('user_restrictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('until', sa.DateTime(), nullable=True),
    sa.Column('stop_running', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('lifted_at', sa.DateTime(), nullable=True),
    sa.Column('lifted_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_restrictions_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_user_restrictions_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['lifted_by'], ['users.id'], name=op.f('fk_user_restrictions_lifted_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_restrictions'))
    )
    with op.batch_alter_table('user_restrictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_restrictions_user_id'), ['user_id'], unique=False)
    # a plain ADD COLUMN, not batch mode (which would rebuild `users` under SQLite)
    op.add_column('users', sa.Column('restricted', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    # a plain DROP COLUMN (SQLite >= 3.35 has one): rebuilding `users` in batch mode would drop
    # a table every other table points at
    op.execute('ALTER TABLE users DROP COLUMN restricted')
    op.drop_table('user_restrictions')  # its index goes with it (MySQL will not drop an index a foreign key needs)
