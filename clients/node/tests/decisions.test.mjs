// Decisions against a live `proctor serve` on the seed policy: the accountability chain, batch
// order, and bad input answered with the server's INVALID_ARGUMENT message.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  FAIL_CLOSED_RULE_ID,
  InvalidRequestError,
  ProctorClient,
  ProctorError,
} from "proctor-client";
import { freePort, proctorCli, startProctor } from "./support/proctor.mjs";

const PATH = ["orchestrator", "agent-b", "agent-c"];

let server;
let proctor;

before(async () => {
  server = await startProctor();
  proctor = new ProctorClient(server.address, { deadlineMs: 10_000 });
});

after(async () => {
  proctor?.close();
  assert.equal(await server.dispose(), 0, "proctor serve exits 0 on SIGTERM");
});

describe("the seed's accountability chain", () => {
  test("a bulk export is denied by its rule, whatever the path", async () => {
    const d = await proctor.evaluate({
      topic: "job.42.export.bulk",
      delegationPath: PATH,
      riskTags: ["bulk-data"],
      tenant: "acme",
    });
    assert.equal(d.decision, "deny");
    assert.equal(d.ruleId, "deny-bulk-export");
    assert.equal(d.reason, "Bulk data export blocked regardless of delegation path");
    assert.match(d.decisionId, /^[0-9A-Z]{26}$/);
    assert.ok(d.policyVersion);
    assert.equal(d.failClosed, false);
  });

  test("internal delegation is allowed", async () => {
    const d = await proctor.evaluate({
      topic: "job.42.delegate.internal",
      delegationPath: ["orchestrator", "agent-b"],
    });
    assert.equal(d.decision, "allow");
    assert.equal(d.ruleId, "allow-internal-delegation");
  });

  test("an external send waits for a reviewer; approved with the CLI, the retry is allowed", async () => {
    const action = {
      topic: "job.42.send.email",
      delegationPath: PATH,
      riskTags: ["external", "pii"],
      tenant: "acme",
      runId: "run-42",
      labels: { data: "customer-emails" },
    };
    const first = await proctor.evaluate(action);
    assert.equal(first.decision, "require_approval");
    assert.equal(first.ruleId, "approve-external-action");
    assert.match(first.approvalId, /^apv_/);

    // The same request id again (the agent retrying) finds the same approval, not a second one.
    const again = await proctor.evaluate({ ...action, requestId: first.requestId });
    assert.equal(again.approvalId, first.approvalId);

    const pending = await proctor.getApproval(first.approvalId);
    assert.equal(pending.status, "pending");
    assert.deepEqual(pending.delegationPath, PATH);
    assert.equal(pending.topic, "job.42.send.email");
    assert.deepEqual(pending.labels, { data: "customer-emails" });

    const cli = await proctorCli(
      server,
      "approvals",
      "approve",
      first.approvalId,
      "--reviewer",
      "dana",
      "--reason",
      "customer asked for it",
    );
    assert.equal(cli.code, 0, cli.stderr);

    const retry = await proctor.evaluate({ ...action, approvalId: first.approvalId });
    assert.equal(retry.decision, "allow");
    assert.equal(retry.ruleId, "approve-external-action");
    assert.equal(retry.approvalId, first.approvalId);
    assert.match(retry.reason, /approved by dana/);

    const used = await proctor.getApproval({ approvalId: first.approvalId });
    assert.equal(used.status, "consumed");
    assert.equal(used.reviewer, "dana");
    assert.equal(used.resolutionReason, "customer asked for it");
  });
});

describe("evaluateBatch", () => {
  test("answers come in request order, an invalid item holds its error in its slot", async () => {
    const results = await proctor.evaluateBatch([
      { topic: "job.1.delegate.internal", delegationPath: ["a"], requestId: "r-1" },
      { topic: "job.2.export.bulk", delegationPath: ["a"], riskTags: ["bulk-data"] },
      { topic: "", delegationPath: ["a"] },
      { topic: "job.4.read.pii", delegationPath: ["a", "b"], riskTags: ["pii"] },
      { topic: "job.5.delegate.internal", delegationPath: ["a"], explain: true },
    ]);
    assert.equal(results.length, 5);
    assert.deepEqual(
      results.map((r) => (r instanceof ProctorError ? r.code : r.ruleId)),
      [
        "allow-internal-delegation",
        "deny-bulk-export",
        "INVALID_ARGUMENT",
        "approve-data-access",
        "allow-internal-delegation",
      ],
    );
    assert.equal(results[0].requestId, "r-1");
    assert.ok(results[2] instanceof InvalidRequestError);
    assert.equal(results[2].details, "topic: must not be empty");
    assert.deepEqual(results[4].matchedRuleIds, ["allow-internal-delegation"]);
    const ids = new Set(results.filter((r) => !(r instanceof Error)).map((r) => r.requestId));
    assert.equal(ids.size, 4, "every item gets its own generated request id");
  });

  test("a thousand items keep their order", async () => {
    const reqs = Array.from({ length: 1000 }, (_, i) => ({
      topic: i % 2 ? "job.1.export.bulk" : "job.1.delegate.internal",
      delegationPath: ["a"],
      riskTags: i % 2 ? ["bulk-data"] : [],
      requestId: `req-${i}`,
    }));
    const results = await proctor.evaluateBatch(reqs);
    results.forEach((r, i) => {
      assert.equal(r.requestId, `req-${i}`);
      assert.equal(r.decision, i % 2 ? "deny" : "allow");
    });
  });
});

describe("bad input", () => {
  test("the server's INVALID_ARGUMENT arrives as InvalidRequestError with its message", async () => {
    await assert.rejects(
      proctor.evaluate({ topic: "job.1.read.pii", delegationPath: [] }),
      (e) =>
        e instanceof InvalidRequestError &&
        e.code === "INVALID_ARGUMENT" &&
        e.grpcCode === 3 &&
        /^delegation_path: /.test(e.details) &&
        e.method === "Evaluate",
    );
    await assert.rejects(
      proctor.evaluate({
        topic: "job.1.read.pii",
        delegationPath: ["a"],
        riskTags: ["x".repeat(65)],
      }),
      (e) => e instanceof InvalidRequestError && /risk_tags/.test(e.details),
    );
  });

  test("fail-closed never turns a bad request into a deny", async () => {
    const strict = new ProctorClient(server.address, { failClosed: true, deadlineMs: 10_000 });
    try {
      await assert.rejects(
        strict.evaluate({ topic: "", delegationPath: ["a"] }),
        InvalidRequestError,
      );
      const ok = await strict.evaluate({ topic: "job.1.delegate.internal", delegationPath: ["a"] });
      assert.equal(ok.decision, "allow");
    } finally {
      strict.close();
    }
  });

  test("a value of the wrong type is refused before anything is sent", async () => {
    // Nothing listens there: a request that were sent would come back UNAVAILABLE (a deny).
    const nowhere = new ProctorClient(`127.0.0.1:${await freePort()}`, {
      failClosed: true,
      retries: 0,
    });
    try {
      await assert.rejects(
        nowhere.evaluate({ topic: "job.1.read.pii", delegationPath: ["a"], riskTags: "pii" }),
        (e) =>
          e instanceof InvalidRequestError &&
          e.details === "riskTags: expected an array of strings",
      );
      await assert.rejects(
        nowhere.evaluate({ topic: "job.1.read.pii", delegationPath: ["a"], labels: { n: 1 } }),
        (e) => e instanceof InvalidRequestError && /^labels\.n: /.test(e.details),
      );
      await assert.rejects(
        nowhere.evaluateBatch([
          { topic: "t", delegationPath: ["a"] },
          { topic: 7, delegationPath: ["a"] },
        ]),
        (e) => e instanceof InvalidRequestError && /^requests\[1\]\.topic: /.test(e.details),
      );
      await assert.rejects(
        nowhere.reserveBudget({ unit: "tokens", amount: 1.5 }),
        (e) => e instanceof InvalidRequestError && /^amount: /.test(e.details),
      );
      const d = await nowhere.evaluate({ topic: "job.1.read.pii", delegationPath: ["a"] });
      assert.equal(
        d.ruleId,
        FAIL_CLOSED_RULE_ID,
        "a well-typed request does go out (and fails closed)",
      );
    } finally {
      nowhere.close();
    }
  });
});

describe("close()", () => {
  test("calls after close fail, or deny when failing closed", async () => {
    const action = { topic: "job.7.delegate.internal", delegationPath: ["planner", "worker"] };
    const open = new ProctorClient(server.address);
    const closed = new ProctorClient(server.address, { failClosed: true });
    assert.equal((await open.evaluate(action)).decision, "allow");
    open.close();
    closed.close();
    open.close(); // twice is harmless
    await assert.rejects(open.evaluate(action), /the client is closed/);
    assert.equal((await closed.evaluate(action)).ruleId, FAIL_CLOSED_RULE_ID);
  });
});
