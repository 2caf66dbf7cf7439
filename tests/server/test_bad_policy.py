"""Hostile policy files (issue 19 section 5): a FIFO, /dev/zero, an anchor bomb, an
oversized and a non-UTF-8 file, at start, at reload and in `proctor check`; reload spam
under load; abandoned reloads; SIGTERM during a slow compile.

Every test drives a real `proctor serve` subprocess over real gRPC and real files.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from proctor.client import ProctorClient
from proctor.v1 import admin_pb2, admin_pb2_grpc
from tests.engine.test_limits import anchor_bomb
from tests.support.proctor import ProctorProcess, run_proctor, start_proctor

from .test_reload import Callers, get_policy, versioned, wait_for, write_atomically

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# What each bad file is, and the words of the error that must name it.
REASONS = {
    "fifo": "a FIFO (named pipe), not a regular file",
    "dev-zero": "a character device, not a regular file",
    "anchor-bomb": "aliases expand the document past the size limit",
    "oversized": "larger than the limit of 67108864 bytes",
    "not-utf8": "not UTF-8 text",
}
KINDS = tuple(REASONS)


def make_bad(path: Path, kind: str) -> None:
    """Put a bad file of `kind` at path (in place of whatever is there)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(tmp)
    elif kind == "dev-zero":
        tmp.symlink_to("/dev/zero")
    elif kind == "anchor-bomb":
        tmp.write_text(anchor_bomb())
    elif kind == "oversized":  # sparse: the size says too big before a byte is read
        with open(tmp, "wb") as f:
            f.truncate(DEFAULT_MAX_BYTES + 1)
    else:
        tmp.write_bytes(b'policy_version: "latin1"\nversion: v1\n# caf\xe9\nrules: []\n')
    os.replace(tmp, path)


def heavy_policy(rules: int, version: str) -> str:
    """A valid policy that takes a long time to compile (seconds per 10,000 rules)."""
    return f'policy_version: "{version}"\nversion: v1\nrules:\n' + "".join(
        f"  - {{id: r{i}, match: {{topics: [a.{i}.**.x, b.*.c{i}]}}, decision: allow}}\n"
        for i in range(rules)
    )


def reload_rpc(address: str, timeout: float) -> admin_pb2.ReloadPolicyResponse:
    with grpc.insecure_channel(address) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        return stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), timeout=timeout)


def log_messages(server: ProctorProcess) -> list[str]:
    """The `msg` of every JSON log line of the server, in order."""
    out = []
    for line in server.log().splitlines():
        try:
            out.append(json.loads(line)["msg"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


def reload_steps(server: ProctorProcess) -> list[str]:
    """'start' and 'end' for each reload the log shows, in order."""
    steps = []
    for msg in log_messages(server):
        if msg == "policy reload started":
            steps.append("start")
        elif msg.startswith(("policy reloaded", "policy reload failed", "policy reload skipped",
                             "policy reload abandoned")):
            steps.append("end")
    return steps


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- at start and in proctor check ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_file_is_refused_at_start(tmp_path: Path, kind: str) -> None:
    policy = tmp_path / "policy.yaml"
    make_bad(policy, kind)
    r = run_proctor("serve", "--policy", str(policy), "--listen", "127.0.0.1:0",
                    cwd=tmp_path, timeout=60)
    assert r.returncode != 0
    assert str(policy) in r.stderr, r.stderr
    # A FIFO and a device are refused with the flags, before anything starts.
    reason = "not a regular file" if kind in ("fifo", "dev-zero") else REASONS[kind]
    assert reason in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_max_policy_bytes_is_a_serve_flag(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(versioned("small"))
    r = run_proctor("serve", "--policy", str(policy), "--listen", "127.0.0.1:0",
                    "--max-policy-bytes", "100", cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert f"{policy}: the policy is larger than the limit of 100 bytes" in r.stderr
    r = run_proctor("serve", "--policy", str(policy), "--max-policy-bytes", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--max-policy-bytes must be at least 1" in r.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_proctor_check_refuses_a_bad_file(tmp_path: Path, kind: str) -> None:
    policy = tmp_path / "policy.yaml"
    make_bad(policy, kind)
    r = run_proctor("check", str(policy), cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert str(policy) in r.stdout and REASONS[kind] in r.stdout, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


# -- at reload -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    """A server whose policy file is polled every 0.1 s."""
    work = tmp_path_factory.mktemp("bad-policy")
    policy = work / "policy.yaml"
    policy.write_text(versioned("good-0"))
    server = start_proctor(policy, work, "--reload-poll-seconds", "0.1")
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()
        assert "Traceback" not in server.log()


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_file_at_reload_keeps_the_old_policy_and_the_watch(
    watched: ProctorProcess, kind: str
) -> None:
    before = get_policy(watched.address)
    assert before.last_reload_error == ""
    make_bad(watched.policy, kind)

    # The file watch picks it up: GetPolicy says why, in one clear line.
    wait_for(lambda: REASONS[kind] in get_policy(watched.address).last_reload_error,
             timeout=30, what=f"the {kind} error")
    error = get_policy(watched.address).last_reload_error
    assert str(watched.policy) in error and "\n" not in error and "Traceback" not in error

    # The old policy keeps serving; an explicit reload fails fast with the same reason.
    with ProctorClient(watched.address, timeout=5.0) as c:
        assert c.evaluate("job.1.delegate.internal", delegation_path=["a"]).policy_version == (
            before.policy_version)
    with pytest.raises(grpc.RpcError) as e:
        reload_rpc(watched.address, timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert REASONS[kind] in (e.value.details() or "")
    assert get_policy(watched.address).policy_version == before.policy_version

    # The watch still works: a good file then loads and the error clears.
    write_atomically(watched.policy, versioned(f"after-{kind}"))
    wait_for(lambda: get_policy(watched.address).policy_version == f"after-{kind}",
             timeout=30, what="the good file to load")
    assert get_policy(watched.address).last_reload_error == ""


# -- many triggers -------------------------------------------------------------------------------


def test_reload_spam_under_load_answers_every_call_and_ends_on_the_last_file(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    extra = "".join(f"  - {{id: pad{i}, match: {{topics: [pad.{i}.*]}}, decision: allow}}\n"
                    for i in range(500))

    def text(version: str) -> str:
        return versioned(version) + extra

    policy.write_text(text("spam-start"))
    server = start_proctor(policy, tmp_path, "--reload-poll-seconds", "0.05")
    triggers = 0
    futures: list[Any] = []
    try:
        with Callers(server.address, n=4) as callers:
            wait_for(lambda: callers.latest() == "spam-start", what="first answers")
            with grpc.insecure_channel(server.address) as ch:
                stub = admin_pb2_grpc.AdminStub(ch)
                for i in range(60):
                    write_atomically(policy, text(f"spam-{i}"))
                    if i % 3 == 0:
                        server.send_signal(signal.SIGHUP)
                    else:  # short deadlines: most callers give up while a compile runs
                        futures.append(stub.ReloadPolicy.future(
                            admin_pb2.ReloadPolicyRequest(), timeout=0.05 + 0.05 * (i % 4)))
                    triggers += 1
                write_atomically(policy, text("spam-final"))
                # A reload asked for after the last write reads the last file.
                answer = stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), timeout=60)
                codes = {f.code() for f in futures}  # each one answered or timed out
            assert answer.policy_version == "spam-final"
            wait_for(lambda: callers.latest() == "spam-final", timeout=30, what="the last file")
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, codes
        assert callers.failures == []
        assert callers.calls > 10
        p = get_policy(server.address)
        assert (p.policy_version, p.last_reload_error) == ("spam-final", "")
    finally:
        assert server.stop() == 0, server.log()
    steps = reload_steps(server)
    # One reload at a time: every start is followed by its end before the next start.
    assert steps == ["start", "end"] * (len(steps) // 2), steps
    # Triggers during a reload coalesce: far fewer reloads than triggers.
    assert len(steps) // 2 < triggers, (len(steps), triggers)
    assert "Traceback" not in server.log()


def test_reloads_nobody_waits_for_are_abandoned(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(versioned("light"))
    server = start_proctor(policy, tmp_path, "--reload-poll-seconds", "3600")
    try:
        rss_before = rss_bytes(server.pid)
        write_atomically(policy, heavy_policy(20_000, "heavy"))
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as e:
                reload_rpc(server.address, timeout=0.3)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        # Each compile stops once its caller has gone: as many ends as starts, soon.
        def all_stopped() -> bool:
            steps = reload_steps(server)
            return len(steps) >= 2 and steps.count("start") == steps.count("end")

        wait_for(all_stopped, timeout=60, what="the abandoned compiles to stop")
        assert "policy reloaded" not in log_messages(server)
        assert log_messages(server).count("policy reload abandoned") >= 1
        assert rss_bytes(server.pid) - rss_before < 600 * 1024 * 1024
        assert get_policy(server.address).policy_version == "light"
        with ProctorClient(server.address, timeout=5.0) as c:
            assert c.evaluate("job.1.delegate.internal", delegation_path=["a"]).decision == (
                "allow")

        write_atomically(policy, versioned("light-2"))
        assert reload_rpc(server.address, timeout=60).policy_version == "light-2"
    finally:
        assert server.stop() == 0, server.log()


def test_sigterm_during_a_slow_compile_exits_at_once(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(versioned("before"))
    server = start_proctor(policy, tmp_path, "--reload-poll-seconds", "3600")
    try:
        # 200,000 rules: well over a minute of compiling on the test machines.
        write_atomically(policy, heavy_policy(200_000, "never"))
        server.send_signal(signal.SIGHUP)
        wait_for(lambda: "policy reload started" in log_messages(server), what="the compile")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, server.log()
        took = time.monotonic() - started
    finally:
        server.stop()
    messages = log_messages(server)
    assert "policy reloaded" not in messages and "stopped" in messages
    assert "policy reload abandoned" in messages
    assert took < 20, took

