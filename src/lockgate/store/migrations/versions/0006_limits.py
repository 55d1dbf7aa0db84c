"""Quotas, budgets and caching: limit rules and budgets per tenant (by key, team or model), the alerts a
budget has fired per period, the team of an API key, and the team and cache outcome of every request.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("team", sa.String(100), nullable=True))
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("team", sa.String(100), nullable=True))
        batch.add_column(sa.Column("cache", sa.String(10), nullable=True))
    op.create_table(
        "limit_rules",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_limit_rules_tenant_name"),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.UniqueConstraint("tenant_id", "name", name="uq_budgets_tenant_name"),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("budget_id", sa.String(40), sa.ForeignKey("budgets.id"), primary_key=True),
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("period_start", UTC_TIME, primary_key=True),
        sa.Column("fired_at", UTC_TIME, nullable=False),
        sa.Column("spent_usd", sa.Float, nullable=False),
    )
    versions = sa.table("state_versions", sa.column("name", sa.String), sa.column("version", sa.Integer))
    op.bulk_insert(versions, [{"name": "limits", "version": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM state_versions WHERE name = 'limits'")
    op.drop_table("budget_alerts")
    op.drop_table("budgets")
    op.drop_table("limit_rules")
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("cache")
        batch.drop_column("team")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("team")
