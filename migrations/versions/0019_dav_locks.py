"""WebDAV locks in the database (every web worker sees them).

Revision ID: 0019_dav_locks
Revises: 0018_own_images
Create Date: 2026-12-03 06:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0019_dav_locks'
down_revision = '0018_own_images'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dav_locks',
    sa.Column('token', sa.String(length=100), nullable=False),
    sa.Column('root', sa.String(length=1024), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('expire', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('token', name=op.f('pk_dav_locks'))
    )


def downgrade():
    op.drop_table('dav_locks')
