"""Policies as OPA bundles: a ``.tar.gz`` with a ``.manifest`` (revision) loads on every engine,
decides exactly as the directory form, is hot-reloaded when the file changes (the revision in
every decision moves with it), and a broken bundle denies until it is fixed."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from activities.policy import (
    EmbeddedOpaEngine,
    OpaRestEngine,
    PolicyBundle,
    PolicyLoadError,
    RegorusEngine,
    build_bundle,
    decide,
    decide_sync,
)
from baton.devstack.opa_server import OpaCompatibleServer
from tests.policy.test_rego import BASE, POSTING_CASES
from tests.support.paths import BATON, POLICY_DIR
from workflows.contracts import PolicyQuery

POSTING = "baton/finance/posting"


def tarball(path: Path, entries: dict[str, str | bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in entries.items():
            raw = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def query(document: dict[str, object]) -> PolicyQuery:
    return PolicyQuery(policy=POSTING, input=document, subject="bundle")


def test_a_built_bundle_decides_like_the_directory(tmp_path: Path) -> None:
    bundle = tmp_path / "baton.tar.gz"
    assert build_bundle(POLICY_DIR, bundle, "2026.12.07-1") == "2026.12.07-1"
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
        manifest = json.loads(archive.extractfile(".manifest").read())  # type: ignore[union-attr]
    assert names[:2] == [".manifest", "data.json"]
    assert "finance/posting.rego" in names
    assert manifest == {"revision": "2026.12.07-1", "roots": ["baton"]}

    directory = EmbeddedOpaEngine(POLICY_DIR)
    packed = EmbeddedOpaEngine(bundle)
    regorus = RegorusEngine(bundle)
    try:
        for case, document in POSTING_CASES.items():
            expected = decide_sync(directory, query(document), case)
            for engine in (packed, regorus):
                got = decide_sync(engine, query(document), case)
                assert (got.verdict, got.reasons, got.obligations) == (
                    expected.verdict,
                    expected.reasons,
                    expected.obligations,
                ), case
                assert got.revision == "2026.12.07-1"
    finally:
        directory.close()
        packed.close()


def test_data_json_merges_at_its_path_and_the_manifest_names_the_revision(tmp_path: Path) -> None:
    bundle = tarball(
        tmp_path / "hand.tar.gz",
        {
            "./.manifest": json.dumps({"revision": "r9", "roots": ["shop"]}),
            "/shop/limits/data.json": json.dumps({"max": 3}),
            "shop/policy.rego": "package shop\n\nimport rego.v1\n\n"
            'decision := {"allow": input.n <= data.shop.limits.max}\n',
            "shop/policy_test.rego": "package shop_test\n\ntest_x := true\n",
            "shop/README.md": "ignored, as OPA ignores it",
        },
    )
    snapshot = PolicyBundle(bundle).current()
    assert snapshot.revision == "r9"
    assert snapshot.data == {"shop": {"limits": {"max": 3}}}
    assert list(snapshot.modules) == ["shop/policy.rego"]
    assert list(snapshot.tests) == ["shop/policy_test.rego"]
    engine = EmbeddedOpaEngine(bundle)
    try:
        assert engine.evaluate_sync("shop/decision", {"n": 3}) == ({"allow": True}, "r9")
    finally:
        engine.close()


def test_without_a_manifest_revision_the_content_digest_is_the_revision(tmp_path: Path) -> None:
    module = 'package p\n\ndecision := {"allow": true}\n'
    one = PolicyBundle(tarball(tmp_path / "a.tar.gz", {"p.rego": module})).current().revision
    same = PolicyBundle(tarball(tmp_path / "b.tgz", {"p.rego": module})).current().revision
    other = PolicyBundle(tarball(tmp_path / "c.tgz", {"p.rego": module + "\nx := 1\n"}))
    assert one == same and len(one) == 12
    assert other.current().revision != one


async def test_a_changed_bundle_is_hot_reloaded_and_a_broken_one_denies(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    import shutil

    shutil.copytree(POLICY_DIR, policies)
    bundle = tmp_path / "live.tar.gz"
    build_bundle(policies, bundle, "v1")
    engine = EmbeddedOpaEngine(bundle, reload_interval=0)
    try:
        amount_1500 = {**BASE, "entry": {**BASE["entry"], "amount": 1500}}
        before = await decide(engine, query(amount_1500), "b1")
        assert (before.verdict, before.revision) == ("require_approval", "v1")

        limits = policies / "data" / "finance_limits.json"
        document = json.loads(limits.read_text())
        document["baton"]["finance"]["limits"]["approval_threshold"] = 2000
        limits.write_text(json.dumps(document))
        build_bundle(policies, bundle, "v2")
        os.utime(bundle, ns=(1, 2_000_000_000_000_000_000))  # a new mtime whatever the clock
        after = await decide(engine, query(amount_1500), "b2")
        assert (after.verdict, after.revision) == ("allow", "v2")

        tarball(bundle, {".manifest": json.dumps({"revision": 7}), "p.rego": "package p\n"})
        broken = await decide(engine, query(amount_1500), "b3")
        assert broken.verdict == "deny"
        assert "manifest revision must be a string" in broken.reasons[0]

        bundle.write_bytes(b"not a tarball")
        corrupt = await decide(engine, query(amount_1500), "b4")
        assert "is not a readable .tar.gz" in corrupt.reasons[0]

        build_bundle(policies, bundle, "v3")
        await asyncio.sleep(0)
        fixed = await decide(engine, query(amount_1500), "b5")
        assert (fixed.verdict, fixed.revision) == ("allow", "v3")
    finally:
        engine.close()


def test_entries_that_escape_the_bundle_are_refused(tmp_path: Path) -> None:
    bundle = tarball(tmp_path / "evil.tar.gz", {"../x.rego": "package x\n"})
    with pytest.raises(PolicyLoadError, match="escapes"):
        PolicyBundle(bundle).current()


async def test_the_local_opa_server_serves_a_bundle_with_its_revision(tmp_path: Path) -> None:
    bundle = tmp_path / "served.tar.gz"
    build_bundle(POLICY_DIR, bundle, "served-1")
    server = OpaCompatibleServer(bundle)
    port = server.start("127.0.0.1", 0)
    engine = OpaRestEngine(f"http://127.0.0.1:{port}", timeout=5)
    try:
        decision = await decide(engine, query(BASE), "rest-bundle")
        assert (decision.verdict, decision.revision) == ("allow", "baton@served-1")
    finally:
        await engine.aclose()
        server.stop()


def test_baton_policy_bundle_writes_one(tmp_path: Path) -> None:
    out = tmp_path / "cli.tar.gz"
    env = {**os.environ, "BATON_POLICY_DIR": str(POLICY_DIR)}
    done = subprocess.run(
        [BATON, "policy", "bundle", "--out", str(out), "--revision", "cli-7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out} (revision cli-7)"
    assert PolicyBundle(out).current().revision == "cli-7"
    bad = subprocess.run(
        [BATON, "policy", "bundle", "--out", str(tmp_path / "x.zip")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--out must name a .tar.gz" in bad.stderr
