"""CLI commands of Baton's security features (wired into baton/cli.py by :func:`register`).

baton encryption new-key --id k2        # a KEY_ID:BASE64 item for BATON_ENCRYPTION_KEYS
baton token init [--rotate] [--no-seal]  # the local dev issuer's key, seal key + trust file
baton token issue --user alice --role finance-controller --workflow-id W --request-id R \
    --action-digest D [--ttl 300] [--audience A]   # an approval token bound to one decision
baton codec-server [--port 8089]        # decrypts payloads for the Web UI / temporal CLI
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from baton.settings import Settings


async def cmd_new_key(args: argparse.Namespace, settings: Settings) -> int:
    from baton.encryption import new_key_line

    print(new_key_line(args.id))
    print(
        "add it in front of BATON_ENCRYPTION_KEYS (it becomes current; keep the old keys "
        "listed until no retained history uses them)",
        file=sys.stderr,
    )
    return 0


async def cmd_token_init(args: argparse.Namespace, settings: Settings) -> int:
    from baton.identity import SEAL_KEY_FILE, init_dev_issuer

    issuer = init_dev_issuer(settings.issuer_dir, rotate=args.rotate, seal=args.seal)
    print(f"dev issuer {issuer.trust.issuer}, signing key {issuer.key_id}")
    print(f"trust file: {issuer.trust_file} ({len(issuer.trust.keys)} public key(s))")
    print(f"require signed approvals with: export BATON_APPROVAL_TRUST={issuer.trust_file}")
    if issuer.trust.seal_key:
        print(
            "workers open sealed approval tokens with: export "
            f"BATON_APPROVAL_SEAL_KEY={issuer.directory / SEAL_KEY_FILE}"
        )
    return 0


async def cmd_token_issue(args: argparse.Namespace, settings: Settings) -> int:
    from baton.identity import APPROVAL_AUDIENCE, issue_token

    binding = (args.workflow_id, args.request_id, args.action_digest)
    if args.audience == APPROVAL_AUDIENCE and not all(binding):
        raise ValueError(
            "an approval token is bound to one decision: give --workflow-id, --request-id and "
            "--action-digest (`baton approvals list WORKFLOW_ID` shows the request id and digest)"
        )

    print(
        issue_token(
            settings.issuer_dir,
            user=args.user,
            roles=args.role,
            ttl_seconds=args.ttl,
            audience=args.audience,
            workflow_id=args.workflow_id,
            request_id=args.request_id,
            action_digest=args.action_digest,
        )
    )
    return 0


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    from baton.codec_server import CodecServer

    codec = settings.payload_codec()
    if codec is None:
        raise ValueError("the codec server needs BATON_ENCRYPTION_KEYS (encryption is off)")
    trust = settings.approval_trust()
    if trust is None:
        raise ValueError(
            "the codec server only decrypts for authorised users: set BATON_APPROVAL_TRUST to "
            "the token issuer's trust file (local dev issuer: `baton token init`)"
        )
    server = CodecServer(
        codec,
        trust,
        roles=settings.codec_roles,
        cors_origins=settings.codec_cors_origins or (settings.ui_url,),
        log_requests=True,
    )
    banner = (
        "codec server on {url} (Web UI: Settings -> Codec Server, or "
        "`temporal server start-dev --ui-codec-endpoint {url}`; "
        f"roles allowed: {', '.join(settings.codec_roles)})"
    )
    # blocks this (main) thread until SIGINT/SIGTERM: signal handlers need the main thread
    server.serve_until_signalled(args.host, args.port, banner)
    return 0


def register(sub: Any) -> None:
    """Add the security commands to the CLI's subparsers."""
    enc = sub.add_parser("encryption", help="payload encryption keys")
    enc_sub = enc.add_subparsers(dest="encryption_command", required=True, metavar="ACTION")
    p = enc_sub.add_parser("new-key", help="print a fresh KEY_ID:BASE64 AES-256 key")
    p.add_argument("--id", required=True, help="key id, e.g. k2 or 2026-11")
    p.set_defaults(func=cmd_new_key)

    token = sub.add_parser("token", help="the local dev issuer of signed identity assertions")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = token_sub.add_parser("init", help="create the dev signing key and trust file")
    p.add_argument("--rotate", action="store_true", help="new signing key; old ones stay trusted")
    p.add_argument(
        "--no-seal",
        dest="seal",
        action="store_false",
        help="no workers' seal key (approval tokens then travel in clear in decisions)",
    )
    p.set_defaults(func=cmd_token_init)
    p = token_sub.add_parser("issue", help="print a signed JWT for a user and roles")
    p.add_argument("--user", required=True)
    p.add_argument("--role", action="append", required=True, help="repeat for several roles")
    p.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="seconds until it expires (default 300 for approvals, 3600 for the codec server)",
    )
    p.add_argument("--workflow-id", help="approval tokens: the run the decision is for")
    p.add_argument("--request-id", help="approval tokens: the approval request id")
    p.add_argument("--action-digest", help="approval tokens: the action digest reviewed")
    p.add_argument(
        "--audience",
        default="baton-approvals",
        help="baton-approvals (approve/reject) or baton-codec (the codec server)",
    )
    p.set_defaults(func=cmd_token_issue)

    p = sub.add_parser("codec-server", help="decrypt payloads for the Web UI (authorised only)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.set_defaults(func=cmd_codec_server)
