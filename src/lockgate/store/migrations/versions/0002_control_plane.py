"""Control plane: users and roles, control tokens, model registry, prompts, releases, route pointers,
approvals, and the hash-chained audit log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("environment", sa.String(10), nullable=True))
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("route", sa.String(200), nullable=True))
        batch.add_column(sa.Column("release_id", sa.String(80), nullable=True))
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("role", sa.String(20), primary_key=True),
    )
    op.create_table(
        "control_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.UniqueConstraint("prefix", name="uq_control_tokens_prefix"),
    )
    op.create_index("ix_control_tokens_user_id", "control_tokens", ["user_id"])
    op.create_table(
        "registry_models",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("card", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index(
        "ux_registry_models_name_version", "registry_models", ["tenant_id", "name", "version"], unique=True
    )
    op.create_table(
        "model_aliases",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ux_prompts_name_version", "prompts", ["tenant_id", "name", "version"], unique=True)
    op.create_table(
        "releases",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_releases_route", "releases", ["route"])
    op.create_table(
        "route_pointers",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("route", sa.String(200), primary_key=True),
        sa.Column("environment", sa.String(10), primary_key=True),
        sa.Column("release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("previous_release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=True),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("environment", sa.String(10), nullable=False),
        sa.Column("approver", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index(
        "ux_approvals_release_env_approver",
        "approvals",
        ["release_id", "environment", "approver"],
        unique=True,
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("resource", sa.String(300), nullable=False),
        sa.Column("before", sa.Text, nullable=True),
        sa.Column("after", sa.Text, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("source", sa.String(100), nullable=True),
        sa.Column("request_id", sa.String(60), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_heads",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("public_key", sa.String(100), nullable=False),
        sa.Column("signed_at", UTC_TIME, nullable=False),
    )
    op.bulk_insert(
        sa.table("state_versions", sa.column("name", sa.String), sa.column("version", sa.BigInteger)),
        [{"name": "routes", "version": 0}],
    )


def downgrade() -> None:
    for table in (
        "audit_heads",
        "audit_log",
        "approvals",
        "route_pointers",
        "releases",
        "prompts",
        "model_aliases",
        "registry_models",
        "control_tokens",
        "memberships",
        "users",
    ):
        op.drop_table(table)
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("release_id")
        batch.drop_column("route")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("environment")
