"""Evals, gates and deployment evidence: datasets, eval runs and their per-case results, stored
reports, per-route gate settings with their Rego policy, and signed evidence records.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("cases", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index(
        "ux_datasets_tenant_name_version", "datasets", ["tenant_id", "name", "version"], unique=True
    )
    op.create_index("ux_datasets_tenant_name_sha", "datasets", ["tenant_id", "name", "sha256"], unique=True)
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("release_id", sa.String(80), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("dataset_id", sa.String(40), sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("repeats", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON, nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("finished_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_eval_runs_release_dataset", "eval_runs", ["release_id", "dataset_id"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("eval_runs.id"), primary_key=True),
        sa.Column("case_id", sa.String(200), primary_key=True),
        sa.Column("repeat", sa.Integer, primary_key=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "eval_reports",
        sa.Column("run_id", sa.String(40), sa.ForeignKey("eval_runs.id"), primary_key=True),
        sa.Column("format", sa.String(10), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "route_gates",
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("route", sa.String(200), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("policy_sha256", sa.String(64), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "evidence",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(10), nullable=False),
        sa.Column("release_id", sa.String(80), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("public_key", sa.String(100), nullable=False),
        sa.Column("audit_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_evidence_release", "evidence", ["release_id"])


def downgrade() -> None:
    op.drop_index("ix_evidence_release", "evidence")
    op.drop_table("evidence")
    op.drop_table("route_gates")
    op.drop_table("eval_reports")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_release_dataset", "eval_runs")
    op.drop_table("eval_runs")
    op.drop_index("ux_datasets_tenant_name_sha", "datasets")
    op.drop_index("ux_datasets_tenant_name_version", "datasets")
    op.drop_table("datasets")
