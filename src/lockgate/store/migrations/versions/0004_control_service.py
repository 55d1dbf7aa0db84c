"""The control plane as a service: expiring, named control tokens; invitations; pointer history;
server-executed eval runs with a lease, a deployment fingerprint and the deployment of each result.

Existing control tokens, which never expired, now expire 90 days after this migration. Existing eval
runs were executed by clients and are marked ``origin = 'client'``: gates count only server runs.

Revision ID: 0004
Revises: 0003
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("control_tokens") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("expires_at", UTC_TIME, nullable=True))
    tokens = sa.table("control_tokens", sa.column("expires_at", UTC_TIME))
    op.execute(tokens.update().values(expires_at=datetime.now(UTC) + timedelta(days=90)))

    with op.batch_alter_table("eval_runs") as batch:
        batch.add_column(sa.Column("origin", sa.String(10), nullable=False, server_default="client"))
        batch.add_column(sa.Column("lease_owner", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_until", UTC_TIME, nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("deployments", sa.JSON, nullable=True))
        batch.add_column(sa.Column("error", sa.Text, nullable=True))
    with op.batch_alter_table("eval_runs") as batch:
        batch.alter_column("origin", server_default=None)
    op.create_index("ix_eval_runs_status", "eval_runs", ["status"])
    with op.batch_alter_table("eval_results") as batch:
        batch.add_column(sa.Column("deployment", sa.String(200), nullable=True))

    op.create_table(
        "invitations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.Column("redeemed_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_invitations_user_id", "invitations", ["user_id"])

    op.create_table(
        "route_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(10), nullable=False),
        sa.Column("release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("previous_release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_route_history_route", "route_history", ["tenant_id", "route", "environment"])
    # Seed the history from today's pointers so rollback targets stay valid across the upgrade.
    pointers = sa.table(
        "route_pointers",
        sa.column("tenant_id"),
        sa.column("route"),
        sa.column("environment"),
        sa.column("release_id"),
        sa.column("previous_release_id"),
        sa.column("updated_by"),
        sa.column("updated_at", UTC_TIME),
    )
    history = sa.table(
        "route_history",
        sa.column("tenant_id"),
        sa.column("route"),
        sa.column("environment"),
        sa.column("release_id"),
        sa.column("previous_release_id"),
        sa.column("action"),
        sa.column("actor"),
        sa.column("at", UTC_TIME),
    )
    connection = op.get_bind()
    for row in connection.execute(sa.select(pointers)).all():
        base = {"tenant_id": row.tenant_id, "route": row.route, "environment": row.environment}
        if row.previous_release_id is not None:
            connection.execute(
                history.insert().values(
                    **base,
                    release_id=row.previous_release_id,
                    previous_release_id=None,
                    action="migrated",
                    actor=row.updated_by,
                    at=row.updated_at,
                )
            )
        connection.execute(
            history.insert().values(
                **base,
                release_id=row.release_id,
                previous_release_id=row.previous_release_id,
                action="migrated",
                actor=row.updated_by,
                at=row.updated_at,
            )
        )


def downgrade() -> None:
    op.drop_table("route_history")
    op.drop_table("invitations")
    op.drop_index("ix_eval_runs_status", "eval_runs")
    with op.batch_alter_table("eval_results") as batch:
        batch.drop_column("deployment")
    with op.batch_alter_table("eval_runs") as batch:
        for name in ("error", "deployments", "fingerprint", "lease_until", "lease_owner", "origin"):
            batch.drop_column(name)
    with op.batch_alter_table("control_tokens") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("name")
