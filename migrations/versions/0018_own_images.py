"""Users' own images: an owner, a visibility (private, an account's, public once approved), and
the result of the last reachability check; a reference is unique per owner.

Revision ID: 0018_own_images
Revises: 0017_datasets
Create Date: 2026-12-03 06:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0018_own_images'
down_revision = '0017_datasets'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('visibility', sa.String(length=16), server_default='public', nullable=False))
        batch_op.add_column(sa.Column('account_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('approved', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('check_state', sa.String(length=16), server_default='', nullable=False))
        batch_op.add_column(sa.Column('check_message', sa.String(length=256), server_default='', nullable=False))
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))
        batch_op.drop_constraint('uq_images_reference', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_images_reference_owner_id'), ['reference', 'owner_id'])
        batch_op.create_index(batch_op.f('ix_images_owner_id'), ['owner_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_images_owner_id_users'), 'users', ['owner_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_images_account_id_accounts'), 'accounts', ['account_id'], ['id'],
                                    ondelete='CASCADE')


def downgrade():
    op.execute("DELETE FROM images WHERE owner_id IS NOT NULL")
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_images_account_id_accounts'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_images_owner_id_users'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_images_owner_id'))
        batch_op.drop_constraint(batch_op.f('uq_images_reference_owner_id'), type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_images_reference'), ['reference'])
        batch_op.drop_column('checked_at')
        batch_op.drop_column('check_message')
        batch_op.drop_column('check_state')
        batch_op.drop_column('approved')
        batch_op.drop_column('account_id')
        batch_op.drop_column('visibility')
        batch_op.drop_column('owner_id')
