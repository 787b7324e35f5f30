"""Job ports (the ports of running jobs their owners opened behind the portal's sign-in) and a node reservation's reason.

Revision ID: 0014_job_ports
Revises: 0013_terminals
Create Date: 2026-12-03 02:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0014_job_ports'
down_revision = '0013_terminals'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('job_ports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('opened_by', sa.Integer(), nullable=True),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_ports_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['opened_by'], ['users.id'], name=op.f('fk_job_ports_opened_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_ports')),
    sa.UniqueConstraint('job_id', 'port', name=op.f('uq_job_ports_job_id'))
    )
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reserve_reason', sa.String(length=500), server_default='', nullable=False))


def downgrade():
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('reserve_reason')
    op.drop_table('job_ports')
