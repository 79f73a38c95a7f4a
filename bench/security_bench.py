"""What the security features cost: payload encryption and the signed-approval check.

    .venv/bin/python bench/security_bench.py [--rounds 2000]

Prints a markdown table (and the machine's load average): AES-GCM encrypt and decrypt per payload
at the sizes Baton's payloads have (a small signal, a typical agent input, a period's data, a
large memo), the whole payload converter + codec round trip for a FinanceCloseInput, and the
Ed25519 JWT verification the approval gate runs in the Update validator. In-process, no server:
these are the per-payload costs added to every client and worker call when the feature is on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.api.common.v1 import Payload  # noqa: E402

from baton.encryption import EncryptionCodec, KeyRing, new_key_line  # noqa: E402
from baton.identity import SEAL_KEY_FILE, init_dev_issuer, issue_token, load_seal_key  # noqa: E402
from workflows.contracts import FinanceCloseInput  # noqa: E402
from workflows.plugin import baton_data_converter  # noqa: E402
from workflows.signed_approval import seal_assertion, unseal_assertion, verify_assertion  # noqa: E402


def per_call_us(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median and p95 of ``fn`` in microseconds over ``rounds`` calls (after a warm-up)."""
    for _ in range(min(50, rounds)):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()

    codec = EncryptionCodec(KeyRing.parse(new_key_line("k1")))
    rows: list[tuple[str, float, float]] = []
    for label, size in [("1 KB", 1024), ("16 KB", 16 * 1024), ("256 KB", 256 * 1024)]:
        plain = Payload(metadata={"encoding": b"json/plain"}, data=os.urandom(size))
        sealed = codec.encrypt(plain)
        rounds = max(args.rounds // (size // 1024), 50)
        rows.append(
            (f"encrypt {label} payload", *per_call_us(lambda p=plain: codec.encrypt(p), rounds))
        )
        rows.append(
            (f"decrypt {label} payload", *per_call_us(lambda s=sealed: codec.decrypt(s), rounds))
        )

    plain_conv = baton_data_converter()
    enc_conv = baton_data_converter(codec)
    inp = FinanceCloseInput(tenant="acme", period="2026-10", requested_by="alice")

    def round_trip(converter: object) -> Callable[[], object]:
        async def go() -> object:
            payloads = await converter.encode([inp])  # type: ignore[attr-defined]
            return await converter.decode(payloads, [FinanceCloseInput])  # type: ignore[attr-defined]

        loop = asyncio.new_event_loop()
        return lambda: loop.run_until_complete(go())

    rows.append(
        (
            "FinanceCloseInput converter round trip, plain",
            *per_call_us(round_trip(plain_conv), args.rounds),
        )
    )
    rows.append(
        (
            "FinanceCloseInput converter round trip, encrypted",
            *per_call_us(round_trip(enc_conv), args.rounds),
        )
    )

    with tempfile.TemporaryDirectory() as tmp:
        issuer = init_dev_issuer(Path(tmp))
        token = issue_token(Path(tmp), user="carol", roles=["finance-controller"])
        now = datetime.now(UTC)
        rows.append(
            (
                "verify approval JWT (Ed25519, in the validator)",
                *per_call_us(lambda: verify_assertion(token, issuer.trust, now), args.rounds),
            )
        )
        sealing = init_dev_issuer(Path(tmp), seal=True)
        seal_key = load_seal_key(Path(tmp) / SEAL_KEY_FILE)
        assert sealing.trust.seal_key is not None
        public = sealing.trust.seal_key
        sealed = seal_assertion(token, public)
        rows.append(
            (
                "seal approval token (X25519 + AES-GCM, on the client)",
                *per_call_us(lambda: seal_assertion(token, public), args.rounds),
            )
        )
        rows.append(
            (
                "open sealed approval token (in the validator)",
                *per_call_us(lambda: unseal_assertion(sealed, seal_key), args.rounds),
            )
        )

    load = os.getloadavg()
    print(
        f"# Security features: per-call cost ({platform.node()}, {os.cpu_count()} cores, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load[0]:.2f})\n"
    )
    print("| operation | median µs | p95 µs |")
    print("|---|---:|---:|")
    for name, median, p95 in rows:
        print(f"| {name} | {median:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
