// Approvals against a live `proctor serve` on the seed policy, resolved by a reviewer with the
// real CLI (`proctor approvals approve|deny`): waitForApproval and evaluateAndWait.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { NotFoundError, ProctorClient } from "proctor-client";
import { proctorCli, startProctor } from "./support/proctor.mjs";

let server;
let proctor;
let runs = 0;

before(async () => {
  server = await startProctor();
  proctor = new ProctorClient(server.address, { deadlineMs: 10_000 });
});

after(async () => {
  proctor?.close();
  assert.equal(await server.dispose(), 0);
});

/** An external send of customer emails (require_approval), in a run of its own. */
function sendEmails(extra = {}) {
  runs += 1;
  return {
    topic: "job.42.send.email",
    delegationPath: ["orchestrator", "agent-b", "agent-c"],
    riskTags: ["external", "pii"],
    tenant: "acme",
    runId: `run-${runs}`,
    requestId: `req-${runs}`,
    labels: { data: "customer-emails" },
    ...extra,
  };
}

async function review(verb, approvalId, reason) {
  const out = await proctorCli(
    server,
    "approvals",
    verb,
    approvalId,
    "--reviewer",
    "dana",
    "--reason",
    reason,
  );
  assert.equal(out.code, 0, out.stderr);
}

describe("waitForApproval", () => {
  test("returns when a reviewer approves with the CLI", async () => {
    const d = await proctor.evaluate(sendEmails());
    const waiting = proctor.waitForApproval(d.approvalId, { timeoutMs: 60_000 });
    await review("approve", d.approvalId, "ticket 1234");
    const a = await waiting;
    assert.equal(a.status, "approved");
    assert.equal(a.approvalId, d.approvalId);
    assert.equal(a.reviewer, "dana");
    assert.equal(a.resolutionReason, "ticket 1234");
    assert.ok(a.resolvedAt instanceof Date);
  });

  test("returns when a reviewer denies with the CLI", async () => {
    const d = await proctor.evaluate(sendEmails());
    const waiting = proctor.waitForApproval(d.approvalId, { timeoutMs: 60_000 });
    await review("deny", d.approvalId, "PII export outside approved processor list");
    const a = await waiting;
    assert.equal(a.status, "denied");
    assert.equal(a.resolutionReason, "PII export outside approved processor list");
  });

  test("times out cleanly: the approval, still pending", async () => {
    const d = await proctor.evaluate(sendEmails());
    const a = await proctor.waitForApproval(d.approvalId, { timeoutMs: 300 });
    assert.equal(a.status, "pending");
    assert.equal(a.approvalId, d.approvalId);
    assert.equal((await proctor.waitForApproval(d.approvalId, { timeoutMs: 0 })).status, "pending");
  });

  test("an abort signal ends the wait; an unknown id is NotFoundError", async () => {
    const d = await proctor.evaluate(sendEmails());
    const controller = new AbortController();
    const waiting = proctor.waitForApproval(d.approvalId, {
      timeoutMs: 60_000,
      signal: controller.signal,
    });
    controller.abort(new Error("run cancelled"));
    await assert.rejects(waiting, /run cancelled/);
    await assert.rejects(
      proctor.waitForApproval("apv_unknown", { timeoutMs: 1000 }),
      NotFoundError,
    );
    await assert.rejects(proctor.getApproval("apv_unknown"), NotFoundError);
  });
});

describe("evaluateAndWait", () => {
  test("an approved require_approval becomes allow, exactly once", async () => {
    const action = sendEmails();
    const answer = proctor.evaluateAndWait(action, { timeoutMs: 60_000 });
    // The same request id finds the approval the waiting call opened.
    const { approvalId } = await proctor.evaluate(action);
    await review("approve", approvalId, "one send");
    const d = await answer;
    assert.equal(d.decision, "allow");
    assert.equal(d.approvalId, approvalId);
    assert.equal(d.ruleId, "approve-external-action");
    assert.match(d.reason, /approved by dana: one send/);
    assert.equal((await proctor.getApproval(approvalId)).status, "consumed");

    // Used once: presenting it again allows nothing, and opens a fresh approval to wait on.
    const again = await proctor.evaluate({ ...action, approvalId });
    assert.equal(again.decision, "require_approval");
    assert.notEqual(again.approvalId, approvalId);
    assert.match(again.reason, /already used/);
    const waitedAgain = await proctor.evaluateAndWait(
      { ...action, approvalId },
      { timeoutMs: 200 },
    );
    assert.equal(waitedAgain.decision, "require_approval");
  });

  test("a denied approval becomes a deny that says who decided and why", async () => {
    const action = sendEmails();
    const answer = proctor.evaluateAndWait(action, { timeoutMs: 60_000 });
    const { approvalId } = await proctor.evaluate(action);
    await review("deny", approvalId, "not this customer");
    const d = await answer;
    assert.equal(d.decision, "deny");
    assert.equal(d.approvalId, approvalId);
    assert.match(d.reason, /denied by dana: not this customer/);
  });

  test("still pending when the time is up: require_approval, saying so", async () => {
    const d = await proctor.evaluateAndWait(sendEmails(), { timeoutMs: 300 });
    assert.equal(d.decision, "require_approval");
    assert.match(d.reason, /still pending after/);
  });

  test("an answer that needs no approval returns at once", async () => {
    const d = await proctor.evaluateAndWait(
      { topic: "job.42.export.bulk", delegationPath: ["a"], riskTags: ["bulk-data"] },
      { timeoutMs: 60_000 },
    );
    assert.equal(d.decision, "deny");
    assert.equal(d.ruleId, "deny-bulk-export");
  });
});
