"""Table definitions. Migrations in ``migrations/versions`` create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("allowed_models", JSON, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("role", String(20), nullable=False),
    Column("allowed_models", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("environment", String(10), nullable=True),
    Column("team", String(100), nullable=True),
)

request_log = Table(
    "request_log",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("tenant_id", String(40), nullable=True),
    Column("key_id", String(40), nullable=True),
    Column("endpoint", String(40), nullable=False),
    Column("model", String(200), nullable=True),
    Column("deployment", String(200), nullable=True),
    Column("stream", Boolean, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("error_type", String(60), nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("route", String(200), nullable=True),
    Column("release_id", String(80), nullable=True),
    Column("rollout_id", String(40), nullable=True),
    Column("arm", String(10), nullable=True),
    Column("shadow", Boolean, nullable=False, default=False),
    Column("team", String(100), nullable=True),
    Column("cache", String(10), nullable=True),
    Index("ix_request_log_created_at", "created_at"),
    Index("ix_request_log_tenant_created", "tenant_id", "created_at"),
    Index("ix_request_log_rollout", "rollout_id", "created_at"),
)

request_content = Table(
    "request_content",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("request_body", Text, nullable=False),
    Column("response_body", Text, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

state_versions = Table(
    "state_versions",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# --- control plane (migration 0002) ---------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", String(40), ForeignKey("users.id"), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("role", String(20), primary_key=True),
)

control_tokens = Table(
    "control_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False, index=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("name", String(100), nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
)

registry_models = Table(
    "registry_models",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("status", String(20), nullable=False),
    Column("card", JSON, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ux_registry_models_name_version", "tenant_id", "name", "version", unique=True),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version", String(50), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

prompts = Table(
    "prompts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ux_prompts_name_version", "tenant_id", "name", "version", unique=True),
)

releases = Table(
    "releases",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("route", String(200), nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

route_pointers = Table(
    "route_pointers",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("route", String(200), primary_key=True),
    Column("environment", String(10), primary_key=True),
    Column("release_id", String(80), ForeignKey("releases.id"), nullable=False),
    Column("previous_release_id", String(80), ForeignKey("releases.id"), nullable=True),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("release_id", String(80), ForeignKey("releases.id"), nullable=False),
    Column("environment", String(10), nullable=False),
    Column("approver", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ux_approvals_release_env_approver", "release_id", "environment", "approver", unique=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(60), nullable=False),
    Column("resource", String(300), nullable=False),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("source", String(100), nullable=True),
    Column("request_id", String(60), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", String(200), nullable=False),
    Column("public_key", String(100), nullable=False),
    Column("signed_at", UTCDateTime, nullable=False),
)

# --- evals, gates and deployment evidence (migration 0003) ---

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("cases", JSON, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ux_datasets_tenant_name_version", "tenant_id", "name", "version", unique=True),
    Index("ux_datasets_tenant_name_sha", "tenant_id", "name", "sha256", unique=True),
)

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("release_id", String(80), ForeignKey("releases.id"), nullable=False),
    Column("dataset_id", String(40), ForeignKey("datasets.id"), nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("summary", JSON, nullable=True),
    Column("created_by", String(100), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("origin", String(10), nullable=False),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("fingerprint", String(64), nullable=True),
    Column("deployments", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_eval_runs_release_dataset", "release_id", "dataset_id"),
    Index("ix_eval_runs_status", "status"),
)

eval_results = Table(
    "eval_results",
    metadata,
    Column("run_id", String(40), ForeignKey("eval_runs.id"), primary_key=True),
    Column("case_id", String(200), primary_key=True),
    Column("repeat", Integer, primary_key=True),
    Column("output", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deployment", String(200), nullable=True),
)

eval_reports = Table(
    "eval_reports",
    metadata,
    Column("run_id", String(40), ForeignKey("eval_runs.id"), primary_key=True),
    Column("format", String(10), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

route_gates = Table(
    "route_gates",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("route", String(200), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("policy", Text, nullable=False),
    Column("policy_sha256", String(64), nullable=False),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

evidence = Table(
    "evidence",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("route", String(200), nullable=False),
    Column("environment", String(10), nullable=False),
    Column("release_id", String(80), nullable=False),
    Column("decision", String(20), nullable=False),
    Column("record", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signature", String(200), nullable=False),
    Column("public_key", String(100), nullable=False),
    Column("audit_seq", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_evidence_release", "release_id"),
)

# --- the control plane as a service (migration 0004) ----------------------------------------------

invitations = Table(
    "invitations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False, index=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("code_hash", String(64), nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("redeemed_at", UTCDateTime, nullable=True),
)

route_history = Table(
    "route_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("route", String(200), nullable=False),
    Column("environment", String(10), nullable=False),
    Column("release_id", String(80), ForeignKey("releases.id"), nullable=False),
    Column("previous_release_id", String(80), ForeignKey("releases.id"), nullable=True),
    Column("action", String(20), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_route_history_route", "tenant_id", "route", "environment"),
)

# --- progressive delivery (migration 0005) --------------------------------------------------------

route_strategies = Table(
    "route_strategies",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), primary_key=True),
    Column("route", String(200), primary_key=True),
    Column("environment", String(10), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("route", String(200), nullable=False),
    Column("environment", String(10), nullable=False),
    Column("strategy", String(10), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("candidate_release_id", String(80), ForeignKey("releases.id"), nullable=False),
    Column("baseline_release_id", String(80), ForeignKey("releases.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("stage", Integer, nullable=False),
    Column("stage_started_at", UTCDateTime, nullable=False),
    Column("candidate_share", Float, nullable=False),
    Column("salt", String(40), nullable=False),
    Column("failures", JSON, nullable=False),
    Column("reason", Text, nullable=True),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_rollouts_route", "tenant_id", "route", "environment"),
    Index("ix_rollouts_status", "status"),
)

rollout_analyses = Table(
    "rollout_analyses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", String(40), ForeignKey("rollouts.id"), nullable=False, index=True),
    Column("stage", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("verdict", String(20), nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("evidence_id", String(40), nullable=True),
)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("score", Float, nullable=False),
    Column("label", String(100), nullable=True),
    Column("comment", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

online_scores = Table(
    "online_scores",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("rollout_id", String(40), nullable=False, index=True),
    Column("arm", String(10), nullable=False),
    Column("score", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

limit_rules = Table(
    "limit_rules",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_limit_rules_tenant_name"),
)

budgets = Table(
    "budgets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_budgets_tenant_name"),
)

budget_alerts = Table(
    "budget_alerts",
    metadata,
    Column("budget_id", String(40), ForeignKey("budgets.id"), primary_key=True),
    Column("scope", String(200), primary_key=True),
    Column("period_start", UTCDateTime, primary_key=True),
    Column("fired_at", UTCDateTime, nullable=False),
    Column("spent_usd", Float, nullable=False),
)
