"""Account shares on the shared storage: members a manager grants write.

Revision ID: 0015_files_write
Revises: 0014_job_ports
Create Date: 2026-12-03 05:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0015_files_write'
down_revision = '0014_job_ports'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.add_column(sa.Column('files_write', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_column('files_write')
