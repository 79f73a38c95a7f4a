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
    database_url: str = f"sqlite:///{REPO_ROOT / '.baton' / 'baton.db'}"  # DATABASE_URL
    openai_base_url: str = f"http://127.0.0.1:{DEFAULT_MODEL_PORT}/v1"  # OPENAI_BASE_URL
    openai_api_key: str = "local-model-server-needs-no-key"  # OPENAI_API_KEY
    model: str = LOCAL_MODEL_NAME  # BATON_MODEL
    #: USD per 1k prompt / completion tokens, for cost accounting of the configured model.
    price_per_1k_prompt: float = 0.0  # BATON_PRICE_PER_1K_PROMPT
    price_per_1k_completion: float = 0.0  # BATON_PRICE_PER_1K_COMPLETION
    opa_url: str | None = None  # OPA_URL: unset = OPA's evaluator embedded in-process
    policy_dir: Path = REPO_ROOT / "policy"  # BATON_POLICY_DIR
    llm_timeout_seconds: float = 60.0  # BATON_LLM_TIMEOUT_SECONDS
    #: Region of the model endpoint at OPENAI_BASE_URL, for the tenants' data residency (the
    #: local rule-based model server counts as this region too).
    model_region: str = "eu"  # BATON_MODEL_REGION
    #: Approval notifications: POSTed here when set, else queued in the database outbox.
    notify_webhook_url: str | None = None  # BATON_NOTIFY_WEBHOOK_URL
    #: BATON_NOTIFY_WEBHOOK_SECRET: HMAC-SHA256 key of the webhook's X-Baton-Signature header.
    notify_webhook_secret: str | None = field(default=None, repr=False)  # never printed
    #: JSON file of throttle limits (activities/throttle.py); unset = no limits.
    throttles_file: Path | None = None  # BATON_THROTTLES_FILE
    #: Worker Deployment Versioning (code canaries): both set = this worker is build
    #: ``build_id`` of deployment ``deployment_name`` and its workflows are pinned to it.
    deployment_name: str | None = None  # BATON_DEPLOYMENT_NAME
    build_id: str | None = None  # BATON_BUILD_ID
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.notify_webhook_url is not None:
            check_http_url("BATON_NOTIFY_WEBHOOK_URL", self.notify_webhook_url)
        if self.notify_webhook_secret and not self.notify_webhook_url:
            raise ValueError(
                "BATON_NOTIFY_WEBHOOK_SECRET is set but BATON_NOTIFY_WEBHOOK_URL is not: "
                "set the webhook URL too, or unset the secret to use the database outbox"
            )
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
            price_per_1k_prompt=get_float("BATON_PRICE_PER_1K_PROMPT", base.price_per_1k_prompt),
            price_per_1k_completion=get_float(
                "BATON_PRICE_PER_1K_COMPLETION", base.price_per_1k_completion
            ),
            opa_url=get("OPA_URL", None),
            policy_dir=Path(get("BATON_POLICY_DIR", str(base.policy_dir))),
            llm_timeout_seconds=get_float("BATON_LLM_TIMEOUT_SECONDS", base.llm_timeout_seconds),
            model_region=get("BATON_MODEL_REGION", base.model_region).strip(),
            notify_webhook_url=get("BATON_NOTIFY_WEBHOOK_URL", None),
            notify_webhook_secret=get("BATON_NOTIFY_WEBHOOK_SECRET", None),
            throttles_file=(
                Path(env["BATON_THROTTLES_FILE"]) if env.get("BATON_THROTTLES_FILE") else None
            ),
            deployment_name=get("BATON_DEPLOYMENT_NAME", None),
            build_id=get("BATON_BUILD_ID", None),
        )

    def workflow_url(self, workflow_id: str, run_id: str | None = None) -> str:
        """Link to a run in the Temporal Web UI."""
        from urllib.parse import quote

        url = f"{self.ui_url}/namespaces/{quote(self.temporal_namespace)}/workflows/"
        url += quote(workflow_id, safe="")
        return url + (f"/{run_id}/history" if run_id else "")


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
