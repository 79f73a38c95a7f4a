"""The codec server: decrypts Baton's payloads for the Temporal Web UI and CLI, for authorised
users only.

Implements Temporal's remote codec protocol: ``POST /decode`` and ``POST /encode`` with a JSON
body ``{"payloads": [{"metadata": {...base64...}, "data": "base64"}]}``, answered in the same
shape. The Web UI calls it from the browser (Settings -> "Codec Server", or
``temporal server start-dev --ui-codec-endpoint URL``), so CORS preflights from the allowed UI
origins are answered; the ``temporal`` CLI calls it with ``--codec-endpoint URL --codec-auth
"Bearer TOKEN"``.

Every encode/decode needs ``Authorization: Bearer <JWT>`` from the configured issuer
(BATON_APPROVAL_TRUST), for audience ``baton-codec``, unexpired, with one of the roles in
BATON_CODEC_ROLES (default ``payload-reader``): anything else is 401 (no or bad token) or 403
(valid token, wrong role), and nothing is decrypted.

Must not: hold keys other than the configured key ring, or log payload contents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from baton.devstack.jsonhttp import BackgroundHTTPServer, JsonRequestHandler
from baton.encryption import EncryptionCodec
from baton.identity import CODEC_AUDIENCE
from workflows.contracts.security import ApprovalTrust
from workflows.signed_approval import AssertionRefused, verify_assertion

MAX_BODY_BYTES = 8 * 1024 * 1024


class CodecRequestHandler(JsonRequestHandler):
    def _cors(self) -> dict[str, str]:
        origin = self.headers.get("Origin")
        if not origin or origin.rstrip("/") not in self.owner.cors_origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }

    def do_OPTIONS(self) -> None:  # CORS preflight of the Web UI
        cors = self._cors()
        if not cors:
            self.send_json(403, {"error": "origin not allowed"})
            return
        self.send_response(204)
        for name, value in cors.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        cors = self._cors()
        operation = self.route.rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            self.send_json(404, {"error": "POST /encode or /decode"}, headers=cors)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.send_json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"}, headers=cors)
            return
        body = self.read_body()  # read before answering, so the connection stays usable
        status, problem, user = self.owner.authorise(self.headers.get("Authorization"))
        if problem is not None:
            self.log_note = f"refused: {problem}"
            headers = {**cors, "WWW-Authenticate": 'Bearer realm="baton-codec"'}
            self.send_json(status, {"error": problem}, headers=headers)
            return
        try:
            payloads = _parse(body)
        except ValueError as err:
            self.send_json(400, {"error": str(err)}, headers=cors)
            return
        try:
            result = self.owner.transform(operation, payloads)
        except ValueError as err:
            self.send_json(422, {"error": str(err)}, headers=cors)
            return
        self.log_note = f"{operation} {len(payloads)} payload(s) for {user}"
        answer = json_format.MessageToDict(Payloads(payloads=result))
        self.send_json(200, {"payloads": answer.get("payloads", [])}, headers=cors)


class CodecServer(BackgroundHTTPServer):
    """``EncryptionCodec`` behind HTTP, with bearer-token authorisation and CORS."""

    handler_class = CodecRequestHandler

    def __init__(
        self,
        codec: EncryptionCodec,
        trust: ApprovalTrust,
        *,
        roles: Sequence[str] = ("payload-reader",),
        cors_origins: Sequence[str] = (),
        audience: str = CODEC_AUDIENCE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        log_requests: bool = False,
    ) -> None:
        super().__init__(log_requests=log_requests)
        if not roles:
            raise ValueError("BATON_CODEC_ROLES must name at least one role")
        self.codec = codec
        self.trust = trust.model_copy(update={"audience": audience})
        self.roles = frozenset(roles)
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)
        self.clock = clock

    def authorise(self, header: str | None) -> tuple[int, str | None, str | None]:
        """(HTTP status, why refused or None, the user)."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "an Authorization: Bearer <JWT> header is required", None
        try:
            identity = verify_assertion(token.strip(), self.trust, self.clock())
        except AssertionRefused as err:
            return 401, str(err), None
        if not self.roles & set(identity.roles):
            return (
                403,
                f"{identity.subject} lacks a role allowed to see payloads "
                f"({', '.join(sorted(self.roles))})",
                identity.subject,
            )
        return 200, None, identity.subject

    def transform(self, operation: str, payloads: list[Payload]) -> list[Payload]:
        if operation == "encode":
            return [self.codec.encrypt(p) for p in payloads]
        return [self.codec.decrypt(p) for p in payloads]


def _parse(body: bytes) -> list[Payload]:
    try:
        document: Any = json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"body is not JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
        raise ValueError('body must be {"payloads": [...]}')
    try:
        return list(json_format.ParseDict(document, Payloads()).payloads)
    except json_format.ParseError as err:
        raise ValueError(f"payloads: {err}") from None
