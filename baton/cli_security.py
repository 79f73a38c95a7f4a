"""CLI commands of Baton's security features (COMMANDS, attached by baton/cli.py).

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

import click

from baton.cli_common import run
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


encryption = click.Group("encryption", help="payload encryption keys")


@encryption.command("new-key", help="print a fresh KEY_ID:BASE64 AES-256 key")
@click.option("--id", required=True, help="key id, e.g. k2 or 2026-11")
def encryption_new_key(**params: Any) -> int:
    return run(cmd_new_key, params)


token = click.Group("token", help="the local dev issuer of signed identity assertions")


@token.command("init", help="create the dev signing key and trust file")
@click.option("--rotate", is_flag=True, help="new signing key; old ones stay trusted")
@click.option(
    "--no-seal",
    is_flag=True,
    help="no workers' seal key (approval tokens then travel in clear in decisions)",
)
def token_init(no_seal: bool, **params: Any) -> int:
    return run(cmd_token_init, params, seal=not no_seal)


@token.command("issue", help="print a signed JWT for a user and roles")
@click.option("--user", required=True)
@click.option("--role", multiple=True, required=True, help="repeat for several roles")
@click.option(
    "--ttl",
    type=int,
    default=None,
    help="seconds until it expires (default 300 for approvals, 3600 for the codec server)",
)
@click.option("--workflow-id", help="approval tokens: the run the decision is for")
@click.option("--request-id", help="approval tokens: the approval request id")
@click.option("--action-digest", help="approval tokens: the action digest reviewed")
@click.option(
    "--audience",
    default="baton-approvals",
    help="baton-approvals (approve/reject) or baton-codec (the codec server)",
)
def token_issue(**params: Any) -> int:
    return run(cmd_token_issue, params)


@click.command("codec-server", help="decrypt payloads for the Web UI (authorised only)")
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=8089)
def codec_server(**params: Any) -> int:
    return run(cmd_codec_server, params)


COMMANDS = [encryption, token, codec_server]
