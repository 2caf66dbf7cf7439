"""`proctor mcp-gateway` end to end: the real MCP SDK on both sides, a live `proctor serve`.

The upstream (upstream.py, on MCPServer) records every call it receives, so each
test reads what reached it; the caller is the SDK's ClientSession over stdio (as
an MCP client launches the gateway) or streamable HTTP. Each test acts as an
agent of its own, so audit events and approvals are told apart.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from pydantic import TypeAdapter

from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, run_proctor

from .mcp_support import (
    Upstream,
    audit_events,
    gateway_args,
    http_gateway_process,
    http_session,
    pending_approval,
    stdio_gateway,
    text_of,
    upstream_http_process,
    wait_for,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "calls.jsonl")


async def _allowed_denied_listed(session: Any, upstream: Upstream) -> None:
    listed = await session.list_tools()
    names = {t.name for t in listed.tools}
    # wipe is denied by a rule with no tag or label condition: never allowed, so not listed.
    assert names == {"echo", "send", "spend", "crash"}
    echo = next(t for t in listed.tools if t.name == "echo")
    assert set(echo.input_schema["properties"]) == {"text", "env", "big", "n", "nested"}

    ok = await session.call_tool("echo", {"text": "hello"})
    assert not ok.is_error and text_of(ok) == "echo: hello"

    denied = await session.call_tool("wipe", {"target": "everything"})
    assert denied.is_error
    assert "deny-wipe" in text_of(denied) and "wiping is never allowed" in text_of(denied)
    assert [c["tool"] for c in upstream.calls()] == ["echo"]


async def _reviewed_call(session: Any, proctor: ProctorProcess, agent: str, to: str,
                         approve: bool) -> tuple[Any, str]:
    """Call send while a reviewer (the real CLI) approves or denies it; (result, approval id)."""
    result: dict[str, Any] = {}

    async def call() -> None:
        result["r"] = await session.call_tool("send", {"to": to})

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        approval_id = await anyio.to_thread.run_sync(pending_approval, proctor, agent)
        verdict = ["approve", approval_id] if approve else \
            ["deny", approval_id, "--reason", f"not to {to}"]
        done = await anyio.to_thread.run_sync(lambda: run_proctor(
            "approvals", *verdict, "--server", proctor.address, "--reviewer", "dana",
            cwd=proctor.workdir))
        assert done.returncode == 0, done.stderr
    return result["r"], approval_id


async def test_stdio_gateway_governs_every_call(proctor: ProctorProcess, upstream: Upstream,
                                                tmp_path: Path) -> None:
    """Allowed, denied and approval-gated calls, labels, tools/list and pass-through, over the
    stdio transport an MCP client launches the gateway with."""
    agent = "agent-stdio"
    args = gateway_args(proctor, upstream, agent, "--approval-wait", "60")
    async with stdio_gateway(args, tmp_path / "gw.log") as session:
        await _allowed_denied_listed(session, upstream)

        # Arguments become labels within the limits; a label reaches the policy.
        ok = await session.call_tool("echo", {
            "text": "hi", "env": "dev", "n": 3, "big": "x" * 257, "nested": {"a": 1},
            "k" * 65: "too long a key"})
        assert not ok.is_error, text_of(ok)
        prod = await session.call_tool("echo", {"text": "hi", "env": "prod"})
        assert prod.is_error and "deny-prod-echo" in text_of(prod)

        # Approved: the upstream runs the call once, after the reviewer, not before.
        approved, _ = await _reviewed_call(session, proctor, agent, "dana", approve=True)
        assert not approved.is_error and text_of(approved) == "sent to dana"
        # Denied by the reviewer: an error naming the approval and why; never called.
        refused, approval_id = await _reviewed_call(session, proctor, agent, "mallory",
                                                    approve=False)
        assert refused.is_error
        assert approval_id in text_of(refused)
        assert "denied by dana: not to mallory" in text_of(refused)

        # Resources, prompts and a method the gateway does not know pass through.
        memo = await session.read_resource("memo://plans")
        assert memo.contents[0].text == "memo plans"  # type: ignore[union-attr]
        prompt = await session.get_prompt("greet", {"who": "Ana"})
        assert "Say hello to Ana." in prompt.messages[0].content.text  # type: ignore[union-attr]

        class Echo(types.Request[dict[str, Any] | None, str]):
            pass

        echoed = await session.send_request(Echo(method="example/echo", params={"x": [1, None]}),
                                            TypeAdapter(dict[str, Any]))
        assert echoed["echoed"]["x"] == [1, None]

    assert [(c["tool"], c["arguments"].get("to")) for c in upstream.calls()] == [
        ("echo", None), ("echo", None), ("send", "dana")]
    events = wait_for(lambda: (lambda es: es if len(es) >= 6 else None)(
        audit_events(proctor, delegation_path=[agent])), "the audited decisions")
    labelled = [e for e in events if e["labels"].get("env") == "dev"]
    assert labelled[0]["labels"] == {"text": "hi", "env": "dev", "n": "3"}
    assert labelled[0]["outcome"] == "allow"
    outcomes = [(e["topic"], e["outcome"]) for e in events]
    assert ("mcp.up.wipe", "deny") in outcomes and ("mcp.up.send", "allow") in outcomes
    assert all(e["topic"] != "mcp.up.send" or e["outcome"] != "allow"
               or e["approval_id"] for e in events)


async def test_a_retry_after_the_wait_uses_the_approval_granted_meanwhile(
        proctor: ProctorProcess, upstream: Upstream, tmp_path: Path) -> None:
    agent = "agent-retry"
    async with stdio_gateway(gateway_args(proctor, upstream, agent, "--approval-wait", "0"),
                             tmp_path / "gw.log") as session:
        first = await session.call_tool("send", {"to": "erin"})
        assert first.is_error and "still pending" in text_of(first)
        approval_id = pending_approval(proctor, agent)
        assert approval_id in text_of(first)
        assert run_proctor("approvals", "approve", approval_id, "--server", proctor.address,
                           "--reviewer", "dana", cwd=tmp_path).returncode == 0
        again = await session.call_tool("send", {"to": "erin"})
        assert not again.is_error, text_of(again)
        # The grant was for that one call: the next identical call asks again.
        third = await session.call_tool("send", {"to": "erin"})
        assert third.is_error and approval_id not in text_of(third)
    assert len(upstream.calls("send")) == 1


async def test_a_budget_refuses_the_call_past_its_limit(
        proctor: ProctorProcess, upstream: Upstream, tmp_path: Path) -> None:
    args = gateway_args(proctor, upstream, "agent-budget", "--budget-unit", "calls")
    async with stdio_gateway(args, tmp_path / "gw.log") as session:
        for item in ("a", "b"):
            ok = await session.call_tool("spend", {"item": item})
            assert not ok.is_error, text_of(ok)
        refused = await session.call_tool("spend", {"item": "c"})
        assert refused.is_error and "spend-calls" in text_of(refused)
    assert [c["arguments"]["item"] for c in upstream.calls("spend")] == ["a", "b"]


async def test_the_upstream_crashing_is_an_error_and_the_gateway_goes_on(
        proctor: ProctorProcess, upstream: Upstream, tmp_path: Path) -> None:
    async with stdio_gateway(gateway_args(proctor, upstream, "agent-crash"),
                             tmp_path / "gw.log") as session:
        crashed = await session.call_tool("crash", {})
        assert crashed.is_error and "stopped before answering" in text_of(crashed)
        after = await session.call_tool("echo", {"text": "still here"})
        assert not after.is_error and text_of(after) == "echo: still here"
    pids = [c["pid"] for c in upstream.calls()]
    assert len(pids) == 2 and pids[0] != pids[1]  # the upstream was started again


async def test_proctor_unreachable_fails_closed(upstream: Upstream, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    args = gateway_args(nowhere, upstream, "agent-dark", "--timeout", "1")
    async with stdio_gateway(args, tmp_path / "gw.log") as session:
        refused = await session.call_tool("echo", {"text": "hi"})
        assert refused.is_error
        assert "could not be reached" in text_of(refused) and "fail" in text_of(refused)
        with pytest.raises(MCPError, match="fails closed"):
            await session.list_tools()
    assert upstream.calls() == []


async def test_streamable_http_both_ways_with_callers_named_by_their_tokens(
        proctor: ProctorProcess, upstream: Upstream, tmp_path: Path) -> None:
    """The gateway served over streamable HTTP, its upstream reached over streamable HTTP
    (--upstream-url), and each HTTP caller's bearer token naming its agent and tenant."""
    token = "s3cret-token-for-alice"
    principals = tmp_path / "principals.yaml"
    principals.write_text(
        "principals:\n  - id: alice-laptop\n    tenants: [acme]\n"
        f"    tokens: [\"sha256:{hashlib.sha256(token.encode()).hexdigest()}\"]\n")
    with upstream_http_process(upstream, tmp_path) as upstream_url:
        args = ["mcp-gateway", "--server", proctor.address, "--name", "up",
                "--http-principals", str(principals), "--upstream-url", upstream_url]
        with http_gateway_process(args, tmp_path) as url:
            no_token = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                   headers={"accept": "application/json, text/event-stream"})
            assert no_token.status_code == 401
            async with http_session(url, token) as session:
                await _allowed_denied_listed(session, upstream)
    events = wait_for(lambda: audit_events(proctor, delegation_path=["alice-laptop"]),
                      "alice's decisions")
    assert {(e["tenant"], e["topic"], e["outcome"]) for e in events} == {
        ("acme", "mcp.up.echo", "allow"), ("acme", "mcp.up.wipe", "deny")}


def test_bad_flags_are_refused_with_a_message(tmp_path: Path) -> None:
    out = run_proctor("mcp-gateway", "--name", "up", "--", "true", cwd=tmp_path)
    assert out.returncode == 2 and "--agent ID is required" in out.stderr
    out = run_proctor("mcp-gateway", "--name", "up", "--agent", "a", "--topic-template",
                      "mcp.{nme}", "--", "true", cwd=tmp_path)
    assert out.returncode == 2 and "unknown field {nme}" in out.stderr
    out = run_proctor("mcp-gateway", "--name", "up", "--agent", "a", "--http-listen",
                      "0.0.0.0:8765", "--", "true", cwd=tmp_path)
    assert out.returncode == 2 and "off loopback" in out.stderr


def test_an_upstream_that_cannot_start_is_reported(tmp_path: Path) -> None:
    out = run_proctor("mcp-gateway", "--name", "up", "--agent", "a", "--",
                      str(tmp_path / "no-such-server"), cwd=tmp_path)
    assert out.returncode == 1 and "cannot start the upstream MCP server" in out.stderr


def test_without_the_mcp_extra_the_command_says_how_to_install_it(tmp_path: Path) -> None:
    # The SDK hidden from this interpreter, as in an install without proctor[mcp].
    code = ("import sys; sys.modules['mcp'] = None; from proctor.server.cli import main; "
            "sys.exit(main(['mcp-gateway', '--name', 'x', '--agent', 'a', '--', 'true']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "pip install 'proctor[mcp]'" in out.stderr
