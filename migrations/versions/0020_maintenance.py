"""Maintenance announcements and drains with a grace period.

Revision ID: 0020_maintenance
Revises: 0019_dav_locks
Create Date: 2026-12-03 08:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0020_maintenance'
down_revision = '0019_dav_locks'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('maintenances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message', sa.String(length=500), nullable=False),
    sa.Column('starts_at', sa.DateTime(), nullable=False),
    sa.Column('ends_at', sa.DateTime(), nullable=False),
    sa.Column('nodes', sa.Text(), nullable=False),
    sa.Column('drain_minutes', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_maintenances_created_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_maintenances'))
    )
    op.create_index('ix_maintenances_ends_at', 'maintenances', ['ends_at'], unique=False)
    op.create_table('node_drains',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=253), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('warn_at', sa.DateTime(), nullable=False),
    sa.Column('stop_at', sa.DateTime(), nullable=False),
    sa.Column('warned_at', sa.DateTime(), nullable=True),
    sa.Column('job_ids', sa.Text(), nullable=False),
    sa.Column('stopped', sa.Text(), nullable=False),
    sa.Column('left_running', sa.Text(), nullable=False),
    sa.Column('maintenance_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('done_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_node_drains_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['maintenance_id'], ['maintenances.id'], name=op.f('fk_node_drains_maintenance_id_maintenances'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_drains'))
    )
    op.create_index('ix_node_drains_state_node', 'node_drains', ['state', 'node'], unique=False)
    with op.batch_alter_table('notifications') as batch_op:
        batch_op.add_column(sa.Column('maintenance_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_notifications_maintenance_id_maintenances'), 'maintenances',
                                    ['maintenance_id'], ['id'], ondelete='CASCADE')


def downgrade():
    with op.batch_alter_table('notifications') as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_notifications_maintenance_id_maintenances'), type_='foreignkey')
        batch_op.drop_column('maintenance_id')
    op.drop_table('node_drains')
    op.drop_table('maintenances')
