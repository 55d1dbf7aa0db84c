"""Progressive delivery: rollout strategies per route and environment, rollouts with their stage, share
and lease, the analyses made at each step, user feedback, online quality scores, and the arm (and
shadow flag) of every request in the request log.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("rollout_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("arm", sa.String(10), nullable=True))
        batch.add_column(sa.Column("shadow", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("request_log") as batch:
        batch.alter_column("shadow", server_default=None)
    op.create_index("ix_request_log_rollout", "request_log", ["rollout_id", "created_at"])
    op.create_table(
        "route_strategies",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("route", sa.String(200), primary_key=True),
        sa.Column("environment", sa.String(10), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(10), nullable=False),
        sa.Column("strategy", sa.String(10), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("candidate_release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("baseline_release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("stage_started_at", UTC_TIME, nullable=False),
        sa.Column("candidate_share", sa.Float, nullable=False),
        sa.Column("salt", sa.String(40), nullable=False),
        sa.Column("failures", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_until", UTC_TIME, nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("finished_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_rollouts_route", "rollouts", ["tenant_id", "route", "environment"])
    op.create_index("ix_rollouts_status", "rollouts", ["status"])
    op.create_table(
        "rollout_analyses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.String(40), sa.ForeignKey("rollouts.id"), nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("evidence_id", sa.String(40), nullable=True),
    )
    op.create_index("ix_rollout_analyses_rollout_id", "rollout_analyses", ["rollout_id"])
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "online_scores",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("rollout_id", sa.String(40), nullable=False),
        sa.Column("arm", sa.String(10), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_online_scores_rollout_id", "online_scores", ["rollout_id"])


def downgrade() -> None:
    op.drop_table("online_scores")
    op.drop_table("feedback")
    op.drop_table("rollout_analyses")
    op.drop_table("rollouts")
    op.drop_table("route_strategies")
    op.drop_index("ix_request_log_rollout", "request_log")
    with op.batch_alter_table("request_log") as batch:
        for name in ("shadow", "arm", "rollout_id"):
            batch.drop_column(name)
