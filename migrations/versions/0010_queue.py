"""The queue: queued jobs' admission time, place, blocker, estimate and reservation, and members' decayed GPU usage per account.

Revision ID: 0010_queue
Revises: 0009_fair_use
Create Date: 2026-12-01 15:00:00.089315

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010_queue'
down_revision = '0009_fair_use'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('queue_usage',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('gpu_seconds', sa.Float(), nullable=False),
    sa.Column('as_of', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_queue_usage_account_id_accounts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_queue_usage_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'user_id', name=op.f('pk_queue_usage'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admitted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('queue_position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('queue_blocker', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('queue_estimate', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('queue_reserved_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('queue_first_wait', sa.Integer(), nullable=True))



def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('queue_first_wait')
        batch_op.drop_column('queue_reserved_at')
        batch_op.drop_column('queue_estimate')
        batch_op.drop_column('queue_blocker')
        batch_op.drop_column('queue_position')
        batch_op.drop_column('admitted_at')

    op.drop_table('queue_usage')
