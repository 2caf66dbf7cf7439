"""Approval webhooks from a real `proctor serve`: signed JSON to a real local HTTP receiver
on approval created and resolved, retried after a 500, counted in metrics, and a dead
receiver never slows a decision."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from proctor.client import ProctorClient
from tests.inbox.helpers import SEED_POLICY
from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, start_proctor

SECRET = b"hook-secret-\x01-not-logged"
PATH = ["orchestrator", "agent-b", "agent-c"]


@dataclass
class Receiver:
    """A local HTTP server recording every POST; the first `fail_first` answers are 500."""

    fail_first: int = 0
    got: list[tuple[str, dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    status = 500 if len(receiver.got) < receiver.fail_first else 200
                    receiver.got.append((self.path, dict(self.headers.items()), body, status))
                    receiver.lock.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[Any]:
        with self.lock:
            assert self.lock.wait_for(lambda: predicate(self.got), timeout), self.got
            return list(self.got)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1).start()
    try:
        yield r
    finally:
        r.stop()


def start(tmp_path: Path, *hooks: str) -> ProctorProcess:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    args = ["--approval-webhook-secret-file", str(secret_file)]
    for url in hooks:
        args += ["--approval-webhook", url]
    http_port = free_port()
    p = start_proctor(SEED_POLICY, tmp_path / "proctor", "--http-listen",
                      f"127.0.0.1:{http_port}", *args, metrics=True)
    p.http_port = http_port  # type: ignore[attr-defined]
    return p


def verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    low = {k.lower(): v for k, v in headers.items()}
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(low["x-proctor-signature"], expected)
    doc: dict[str, Any] = json.loads(body)
    assert low["x-proctor-timestamp"] == str(doc["timestamp"])
    assert abs(doc["timestamp"] - time.time()) < 120
    assert low["content-type"] == "application/json"
    return doc


def test_signed_created_and_resolved_with_a_retry(tmp_path: Path, receiver: Receiver) -> None:
    p = start(tmp_path, receiver.url + "/first", receiver.url + "/second")
    try:
        with ProctorClient(p.address, timeout=10) as client:
            d = client.evaluate("job.42.send.email", delegation_path=PATH, tenant="acme",
                                run_id="run-hook", risk_tags=["external", "pii"],
                                labels={"data": "<customer-emails>"})
            assert d.approval_id
            # created: one POST to /second, two to /first or /second (the first one got 500)
            got = receiver.wait_for(lambda g: sum(s == 200 for *_, s in g) >= 2)
            url = f"http://127.0.0.1:{p.http_port}"  # type: ignore[attr-defined]
            r = httpx.post(f"{url}/api/v1/approvals/{d.approval_id}/resolve",
                           json={"approve": False, "reason": "use the <approved> processor"})
            assert r.status_code == 200, r.text
            got = receiver.wait_for(lambda g: sum(s == 200 for *_, s in g) >= 4)
        docs = [(path, verified(h, b), s) for path, h, b, s in got]
        assert docs[0][2] == 500
        retried = [doc for _, doc, _ in docs if doc["delivery_id"] == docs[0][1]["delivery_id"]]
        assert len(retried) == 2  # the same delivery, tried again after the 500
        ok = [(path, doc) for path, doc, s in docs if s == 200]
        assert sorted(path for path, _ in ok) == ["/first", "/first", "/second", "/second"]
        created = [doc for _, doc in ok if doc["event"] == "approval.created"]
        resolved = [doc for _, doc in ok if doc["event"] == "approval.resolved"]
        assert len(created) == 2 and len(resolved) == 2
        c, res = created[0], resolved[0]
        assert c["approval"]["approval_id"] == d.approval_id
        assert c["approval"]["delegation_path"] == PATH
        assert c["url"] == f"{url}/approvals/{d.approval_id}"
        assert d.approval_id in c["text"] and "orchestrator → agent-b → agent-c" in c["text"]
        assert res["approval"]["status"] == "denied"
        assert res["approval"]["reviewer"] == "anonymous"
        assert "&lt;approved&gt;" in res["text"] and "<approved>" not in res["text"]
        metrics = httpx.get(p.metrics_url).text
        assert 'proctor_approval_webhooks_total{outcome="retried"} 1.0' in metrics
        assert 'proctor_approval_webhooks_total{outcome="delivered"} 4.0' in metrics
        assert SECRET.decode() not in p.log()
    finally:
        assert p.stop() == 0, p.log()


def test_a_dead_receiver_never_slows_a_decision(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    p = start(tmp_path, dead)
    try:
        with ProctorClient(p.address, timeout=10) as client:
            started = time.monotonic()
            for i in range(20):
                d = client.evaluate("job.42.send.email", delegation_path=PATH, tenant="acme",
                                    run_id=f"run-dead-{i}", risk_tags=["external"])
                assert d.decision == "require_approval" and d.approval_id
            assert time.monotonic() - started < 5.0
    finally:
        assert p.stop() == 0, p.log()


def test_webhooks_need_a_secret(tmp_path: Path) -> None:
    from tests.support.proctor import run_proctor

    r = run_proctor("serve", "--policy", str(SEED_POLICY), "--approval-webhook",
                    "http://127.0.0.1:9/x", cwd=tmp_path)
    assert r.returncode == 2 and "--approval-webhook-secret-file" in r.stderr
    r = run_proctor("serve", "--policy", str(SEED_POLICY), "--approval-webhook", "ftp://x",
                    cwd=tmp_path)
    assert r.returncode == 2 and "http:// or https://" in r.stderr
