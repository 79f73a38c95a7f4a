"""Settings: the one place that reads the environment.

Read once at the composition root (worker.py, the CLI, tests) and passed down. Nothing else in
Baton reads ``os.environ``. Every field has an embedded-stack default, so a fresh clone works
offline; production points each part at a real endpoint with the variable named in the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# Ports of the local stack started by `make up` (temporal-dev/stack.py). Overridable by env.
DEFAULT_TEMPORAL_PORT = 7233
DEFAULT_UI_PORT = 8233
DEFAULT_MODEL_PORT = 8765
DEFAULT_OPA_PORT = 8181
DEFAULT_INBOX_PORT = 8240

#: The local model server answers under this name; it is rule-based, deterministic, NOT an LLM.
LOCAL_MODEL_NAME = "baton-rules-not-an-llm"


@dataclass(frozen=True)
class Settings:
    """Everything Baton needs to know about its environment."""

    temporal_address: str = f"localhost:{DEFAULT_TEMPORAL_PORT}"  # TEMPORAL_ADDRESS
    temporal_namespace: str = "default"  # TEMPORAL_NAMESPACE
    temporal_profile: str | None = None  # TEMPORAL_PROFILE (envconfig TOML profile)
    task_queue: str = "baton"  # BATON_TASK_QUEUE
    ui_url: str = f"http://localhost:{DEFAULT_UI_PORT}"  # BATON_UI_URL
    #: may hold the database password: never printed
    database_url: str = field(  # DATABASE_URL
        default=f"sqlite:///{REPO_ROOT / '.baton' / 'baton.db'}", repr=False
    )
    openai_base_url: str = f"http://127.0.0.1:{DEFAULT_MODEL_PORT}/v1"  # OPENAI_BASE_URL
    openai_api_key: str = field(  # OPENAI_API_KEY: never printed
        default="local-model-server-needs-no-key", repr=False
    )
    model: str = LOCAL_MODEL_NAME  # BATON_MODEL
    #: Embeddings model of the knowledge layer, asked at OPENAI_BASE_URL's /embeddings.
    embedding_model: str = "all-MiniLM-L6-v2"  # BATON_EMBEDDING_MODEL
    #: Where the knowledge layer asks for embeddings when that is not OPENAI_BASE_URL, e.g. a
    #: chat-only server such as llama.cpp's (`make up LLM=local`) next to the local model server.
    embeddings_base_url: str | None = None  # BATON_EMBEDDINGS_BASE_URL (unset: OPENAI_BASE_URL)
    #: USD per 1k prompt / completion tokens, for cost accounting of the configured model.
    price_per_1k_prompt: float = 0.0  # BATON_PRICE_PER_1K_PROMPT
    price_per_1k_completion: float = 0.0  # BATON_PRICE_PER_1K_COMPLETION
    opa_url: str | None = None  # OPA_URL: unset = OPA's evaluator embedded in-process
    policy_dir: Path = REPO_ROOT / "policy"  # BATON_POLICY_DIR
    #: When the policy engine does not answer: ``deny`` (fail closed: the action is denied and
    #: the run compensates) or ``wait`` (fail closed: the run holds before the action and asks
    #: again, for up to ``policy_max_wait_seconds``, then fails and compensates).
    policy_unavailable: str = "deny"  # BATON_POLICY_UNAVAILABLE
    policy_max_wait_seconds: float = 3600.0  # BATON_POLICY_MAX_WAIT_SECONDS
    #: Decision logs (activities/decision_log.py): every decision goes to the ledger's chain in
    #: OPA's format; also POSTed (gzip, batched, retried) to this URL when set.
    decision_log_url: str | None = None  # BATON_DECISION_LOG_URL
    #: JSON pointers erased from logged decisions, comma-separated (e.g. /input/arguments/iban).
    decision_log_mask: tuple[str, ...] = ()  # BATON_DECISION_LOG_MASK
    llm_timeout_seconds: float = 60.0  # BATON_LLM_TIMEOUT_SECONDS
    #: Region of the model endpoint at OPENAI_BASE_URL, for the tenants' data residency (the
    #: local rule-based model server counts as this region too).
    model_region: str = "eu"  # BATON_MODEL_REGION
    #: Approval notifications: POSTed here when set, else queued in the database outbox.
    notify_webhook_url: str | None = None  # BATON_NOTIFY_WEBHOOK_URL
    #: BATON_NOTIFY_WEBHOOK_SECRET: HMAC-SHA256 key of the webhook's X-Baton-Signature header.
    notify_webhook_secret: str | None = field(default=None, repr=False)  # never printed
    #: The model catalogue of the router (activities/router.py): models, tiers, task classes.
    model_catalogue: Path = REPO_ROOT / "config" / "models.json"  # BATON_MODEL_CATALOGUE
    #: Support articles the L2 researcher reads until the knowledge layer is wired in.
    support_articles: Path = REPO_ROOT / "config" / "support_articles.json"
    #: JSON file of throttle limits (activities/throttle.py); unset = no limits.
    throttles_file: Path | None = None  # BATON_THROTTLES_FILE
    #: Worker Deployment Versioning (code canaries): both set = this worker is build
    #: ``build_id`` of deployment ``deployment_name`` and its workflows are pinned to it.
    deployment_name: str | None = None  # BATON_DEPLOYMENT_NAME
    build_id: str | None = None  # BATON_BUILD_ID
    #: Payload encryption (opt-in; off on the local stack): ``KEY_ID:BASE64,...`` AES-256 keys,
    #: and which id encrypts new payloads (default: the first listed). docs/security.md.
    encryption_keys: str | None = field(default=None, repr=False)  # BATON_ENCRYPTION_KEYS
    encryption_key_id: str | None = None  # BATON_ENCRYPTION_KEY_ID
    #: Signed approvals (opt-in): the issuer's trust file (issuer, audience, public keys by key
    #: id). When set, approvals without a valid JWT from that issuer are refused.
    approval_trust_file: Path | None = None  # BATON_APPROVAL_TRUST
    #: The workers' X25519 private key that opens sealed approval tokens (PEM, mode 0600);
    #: required on workers when the trust file names a ``seal_key``.
    approval_seal_key_file: Path | None = None  # BATON_APPROVAL_SEAL_KEY
    #: The JWT the CLI attaches to approve/reject/amend (or pass --token).
    approval_token: str | None = field(default=None, repr=False)  # BATON_APPROVAL_TOKEN
    #: Where the local dev issuer keeps its signing key and trust file.
    issuer_dir: Path = REPO_ROOT / ".baton" / "issuer"  # BATON_ISSUER_DIR
    #: Audit checkpoints (docs/security.md): the Ed25519 key that signs them (PEM, outside the
    #: database), where they are appended (a file path or an http(s) URL), how often the worker
    #: writes one, and the public key an auditor verifies them with.
    audit_checkpoint_key_file: Path | None = None  # BATON_AUDIT_CHECKPOINT_KEY
    audit_checkpoint_log: str = str(REPO_ROOT / ".baton" / "audit-checkpoints.jsonl")
    audit_checkpoint_seconds: float = 60.0  # BATON_AUDIT_CHECKPOINT_SECONDS
    audit_checkpoint_public_key: str | None = None  # BATON_AUDIT_CHECKPOINT_PUBLIC_KEY
    #: Codec server: Web UI origins allowed by CORS, and the roles that may see decrypted data.
    codec_cors_origins: tuple[str, ...] = ()  # BATON_CODEC_CORS_ORIGINS (default: BATON_UI_URL)
    codec_roles: tuple[str, ...] = ("payload-reader",)  # BATON_CODEC_ROLES
    #: host:port of the worker's Prometheus endpoint (baton/telemetry.py); unset = no endpoint.
    metrics_bind: str | None = None  # BATON_METRICS_BIND
    #: OpenTelemetry tracing over OTLP/HTTP (baton/telemetry.py); both unset = no tracing.
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces)
    otlp_traces_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as given)
    otel_service_name: str = "baton-worker"  # OTEL_SERVICE_NAME
    #: the approver inbox (`baton inbox serve`, baton/inbox/): its port, and the URL people
    #: reach it at (notifications carry deep links under it)
    inbox_port: int = DEFAULT_INBOX_PORT  # BATON_INBOX_PORT
    inbox_url: str = f"http://localhost:{DEFAULT_INBOX_PORT}"  # BATON_INBOX_URL
    #: production sign-in for decisions: the identity provider's RFC 8693 token exchange that
    #: turns an inbox identity token into a bound approval token (unset: the local dev issuer)
    inbox_token_exchange_url: str | None = None  # BATON_INBOX_TOKEN_EXCHANGE_URL
    #: MCP servers whose tools agents may call (activities/mcp_tools.py); unset = none. Their
    #: credentials are ${ENV} references resolved from the worker's environment.
    mcp_config: Path | None = None  # BATON_MCP_CONFIG
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy_unavailable not in ("deny", "wait"):
            raise ValueError(
                "BATON_POLICY_UNAVAILABLE must be 'deny' or 'wait', "
                f"got {self.policy_unavailable!r}"
            )
        if not self.policy_max_wait_seconds > 0:
            raise ValueError(
                "BATON_POLICY_MAX_WAIT_SECONDS must be a number of seconds > 0, "
                f"got {self.policy_max_wait_seconds!r}"
            )
        if self.notify_webhook_url is not None:
            check_http_url("BATON_NOTIFY_WEBHOOK_URL", self.notify_webhook_url)
        if self.notify_webhook_secret and not self.notify_webhook_url:
            raise ValueError(
                "BATON_NOTIFY_WEBHOOK_SECRET is set but BATON_NOTIFY_WEBHOOK_URL is not: "
                "set the webhook URL too, or unset the secret to use the database outbox"
            )
        for variable, url in (
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp_endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", self.otlp_traces_endpoint),
        ):
            if url is not None:
                check_http_url(variable, url)
        if self.embeddings_base_url is not None:
            check_http_url("BATON_EMBEDDINGS_BASE_URL", self.embeddings_base_url)
        if self.metrics_bind is not None:
            from baton.bind import check_bind_address

            check_bind_address("BATON_METRICS_BIND", self.metrics_bind)
        if not self.audit_checkpoint_seconds > 0:
            raise ValueError(
                "BATON_AUDIT_CHECKPOINT_SECONDS must be a number of seconds > 0, "
                f"got {self.audit_checkpoint_seconds!r}"
            )
        if not 1 <= self.inbox_port <= 65535:
            raise ValueError(f"BATON_INBOX_PORT must be a port number, got {self.inbox_port!r}")
        check_http_url("BATON_INBOX_URL", self.inbox_url)
        if self.inbox_token_exchange_url is not None:
            check_http_url("BATON_INBOX_TOKEN_EXCHANGE_URL", self.inbox_token_exchange_url)
        if bool(self.deployment_name) != bool(self.build_id):
            raise ValueError(
                "BATON_DEPLOYMENT_NAME and BATON_BUILD_ID go together (Worker Deployment "
                "Versioning): set both, or neither for an unversioned worker"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        base = cls()

        def get(name: str, default: Any) -> Any:
            value = env.get(name)
            return default if value in (None, "") else value

        def get_float(name: str, default: float) -> float:
            raw = get(name, default)
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None

        return replace(
            base,
            temporal_address=get("TEMPORAL_ADDRESS", base.temporal_address),
            temporal_namespace=get("TEMPORAL_NAMESPACE", base.temporal_namespace),
            temporal_profile=get("TEMPORAL_PROFILE", None),
            task_queue=get("BATON_TASK_QUEUE", base.task_queue),
            ui_url=get("BATON_UI_URL", base.ui_url).rstrip("/"),
            database_url=get("DATABASE_URL", base.database_url),
            openai_base_url=get("OPENAI_BASE_URL", base.openai_base_url),
            openai_api_key=get("OPENAI_API_KEY", base.openai_api_key),
            model=get("BATON_MODEL", base.model),
            embedding_model=get("BATON_EMBEDDING_MODEL", base.embedding_model),
            embeddings_base_url=get("BATON_EMBEDDINGS_BASE_URL", None),
            price_per_1k_prompt=get_float("BATON_PRICE_PER_1K_PROMPT", base.price_per_1k_prompt),
            price_per_1k_completion=get_float(
                "BATON_PRICE_PER_1K_COMPLETION", base.price_per_1k_completion
            ),
            opa_url=get("OPA_URL", None),
            policy_dir=Path(get("BATON_POLICY_DIR", str(base.policy_dir))),
            policy_unavailable=get("BATON_POLICY_UNAVAILABLE", base.policy_unavailable).strip(),
            policy_max_wait_seconds=get_float(
                "BATON_POLICY_MAX_WAIT_SECONDS", base.policy_max_wait_seconds
            ),
            decision_log_url=get("BATON_DECISION_LOG_URL", None),
            decision_log_mask=tuple(
                p.strip() for p in get("BATON_DECISION_LOG_MASK", "").split(",") if p.strip()
            ),
            llm_timeout_seconds=get_float("BATON_LLM_TIMEOUT_SECONDS", base.llm_timeout_seconds),
            model_region=get("BATON_MODEL_REGION", base.model_region).strip(),
            notify_webhook_url=get("BATON_NOTIFY_WEBHOOK_URL", None),
            notify_webhook_secret=get("BATON_NOTIFY_WEBHOOK_SECRET", None),
            model_catalogue=Path(get("BATON_MODEL_CATALOGUE", str(base.model_catalogue))),
            throttles_file=(
                Path(env["BATON_THROTTLES_FILE"]) if env.get("BATON_THROTTLES_FILE") else None
            ),
            deployment_name=get("BATON_DEPLOYMENT_NAME", None),
            build_id=get("BATON_BUILD_ID", None),
            encryption_keys=get("BATON_ENCRYPTION_KEYS", None),
            encryption_key_id=get("BATON_ENCRYPTION_KEY_ID", None),
            approval_trust_file=(
                Path(env["BATON_APPROVAL_TRUST"]) if env.get("BATON_APPROVAL_TRUST") else None
            ),
            approval_seal_key_file=(
                Path(env["BATON_APPROVAL_SEAL_KEY"]) if env.get("BATON_APPROVAL_SEAL_KEY") else None
            ),
            approval_token=get("BATON_APPROVAL_TOKEN", None),
            issuer_dir=Path(get("BATON_ISSUER_DIR", str(base.issuer_dir))),
            audit_checkpoint_key_file=(
                Path(env["BATON_AUDIT_CHECKPOINT_KEY"])
                if env.get("BATON_AUDIT_CHECKPOINT_KEY")
                else None
            ),
            audit_checkpoint_log=get("BATON_AUDIT_CHECKPOINT_LOG", base.audit_checkpoint_log),
            audit_checkpoint_seconds=get_float(
                "BATON_AUDIT_CHECKPOINT_SECONDS", base.audit_checkpoint_seconds
            ),
            audit_checkpoint_public_key=get("BATON_AUDIT_CHECKPOINT_PUBLIC_KEY", None),
            codec_cors_origins=_words(get("BATON_CODEC_CORS_ORIGINS", "")),
            codec_roles=_words(get("BATON_CODEC_ROLES", "")) or base.codec_roles,
            metrics_bind=get("BATON_METRICS_BIND", None),
            otlp_endpoint=get("OTEL_EXPORTER_OTLP_ENDPOINT", None),
            otlp_traces_endpoint=get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None),
            otel_service_name=get("OTEL_SERVICE_NAME", base.otel_service_name),
            inbox_port=_port(get("BATON_INBOX_PORT", base.inbox_port)),
            inbox_url=get(
                "BATON_INBOX_URL",
                f"http://localhost:{_port(get('BATON_INBOX_PORT', base.inbox_port))}",
            ).rstrip("/"),
            inbox_token_exchange_url=get("BATON_INBOX_TOKEN_EXCHANGE_URL", None),
            mcp_config=Path(env["BATON_MCP_CONFIG"]) if env.get("BATON_MCP_CONFIG") else None,
        )

    def decision_log_config(self) -> Any:
        """The DecisionLogConfig of BATON_DECISION_LOG_URL / BATON_DECISION_LOG_MASK."""
        import socket

        from activities.decision_log import DecisionLogConfig

        labels = {"app": "baton", "id": socket.gethostname(), "task_queue": self.task_queue}
        return DecisionLogConfig(
            mask=self.decision_log_mask, url=self.decision_log_url, labels=labels
        )

    def payload_codec(self) -> Any:
        """The AES-GCM codec of BATON_ENCRYPTION_KEYS, or None when encryption is off."""
        if not self.encryption_keys:
            if self.encryption_key_id:
                raise ValueError(
                    "BATON_ENCRYPTION_KEY_ID is set but BATON_ENCRYPTION_KEYS is not: set the keys "
                    "(`baton encryption new-key` makes one), or unset the key id"
                )
            return None
        from baton.encryption import EncryptionCodec, KeyRing

        return EncryptionCodec(KeyRing.parse(self.encryption_keys, self.encryption_key_id))

    def approval_trust(self) -> Any:
        """The approval issuer's trust anchor (BATON_APPROVAL_TRUST), or None when unsigned
        approvals are accepted."""
        if self.approval_trust_file is None:
            return None
        from baton.identity import load_trust

        return load_trust(self.approval_trust_file)

    def approval_seal_key(self) -> Any:
        """The workers' seal key (BATON_APPROVAL_SEAL_KEY), or None. A worker whose trust file
        names a seal key cannot open sealed tokens without it: that is refused here, at start."""
        trust = self.approval_trust()
        if self.approval_seal_key_file is None:
            if trust is not None and trust.seal_key is not None:
                raise ValueError(
                    f"BATON_APPROVAL_TRUST ({self.approval_trust_file}) names a seal_key, so "
                    "clients seal approval tokens to it, but BATON_APPROVAL_SEAL_KEY (the "
                    "private key that opens them) is not set on this worker"
                )
            return None
        from baton.identity import load_seal_key

        key = load_seal_key(self.approval_seal_key_file)
        if trust is not None and trust.seal_key is not None:
            import base64

            public = base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=")
            if public.decode() != trust.seal_key:
                raise ValueError(
                    f"BATON_APPROVAL_SEAL_KEY ({self.approval_seal_key_file}) is not the private "
                    f"half of the seal_key in BATON_APPROVAL_TRUST ({self.approval_trust_file})"
                )
        return key

    def workflow_url(self, workflow_id: str, run_id: str | None = None) -> str:
        """Link to a run in the Temporal Web UI."""
        from urllib.parse import quote

        url = f"{self.ui_url}/namespaces/{quote(self.temporal_namespace)}/workflows/"
        url += quote(workflow_id, safe="")
        return url + (f"/{run_id}/history" if run_id else "")


def _port(raw: Any) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"BATON_INBOX_PORT must be a port number, got {raw!r}") from None


def _words(value: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in value.split(",") if w.strip())


def check_http_url(variable: str, url: str) -> None:
    """Refuse anything but an absolute http(s) URL, naming the variable that holds it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise ValueError(f"{variable} is not a valid URL ({err}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{variable} must be an http:// or https:// URL with a host, "
            f"e.g. https://hooks.example.com/baton, got {url!r}"
        )
