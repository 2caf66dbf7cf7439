// When Proctor does not answer: fail-closed denies, typed errors, deadlines, retries with
// backoff on UNAVAILABLE (shown with a server that starts late), and abort signals.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  BudgetRefusedError,
  FAIL_CLOSED_BUDGET,
  FAIL_CLOSED_RULE_ID,
  ProctorClient,
  ProctorUnavailableError,
} from "proctor-client";
import { eventually, freePort, startProctor } from "./support/proctor.mjs";

const ACTION = { topic: "job.7.delegate.internal", delegationPath: ["planner", "worker"] };
const FAST = { initialBackoffMs: 10, maxBackoffMs: 20 };

let deadAddress;

before(async () => {
  deadAddress = `127.0.0.1:${await freePort()}`;
});

describe("fail-closed with the server down", () => {
  test("evaluate answers a deny whose reason says why", async () => {
    const proctor = new ProctorClient(deadAddress, {
      failClosed: true,
      retries: { max: 2, ...FAST },
    });
    try {
      const d = await proctor.evaluate(ACTION);
      assert.equal(d.decision, "deny");
      assert.equal(d.ruleId, FAIL_CLOSED_RULE_ID);
      assert.equal(d.failClosed, true);
      assert.match(
        d.reason,
        /^Proctor did not answer, failing closed: UNAVAILABLE after 3 attempts: /,
      );
      assert.ok(d.requestId);
    } finally {
      proctor.close();
    }
  });

  test("without fail-closed the call throws ProctorUnavailableError after its retries", async () => {
    const proctor = new ProctorClient(deadAddress, { retries: { max: 1, ...FAST } });
    try {
      await assert.rejects(
        proctor.evaluate(ACTION),
        (e) => e instanceof ProctorUnavailableError && e.code === "UNAVAILABLE" && e.attempts === 2,
      );
      await assert.rejects(proctor.getBudget({ tenant: "acme" }), ProctorUnavailableError);
    } finally {
      proctor.close();
    }
  });

  test("batches, reservations and waits fail closed too; a refused reservation never runs", async () => {
    const proctor = new ProctorClient(deadAddress, { failClosed: true, retries: 0 });
    try {
      const batch = await proctor.evaluateBatch([ACTION, ACTION]);
      assert.deepEqual(
        batch.map((d) => d.ruleId),
        [FAIL_CLOSED_RULE_ID, FAIL_CLOSED_RULE_ID],
      );

      const r = await proctor.reserveBudget({ unit: "tokens", amount: 10, tenant: "acme" });
      assert.equal(r.granted, false);
      assert.equal(r.refusedBy, FAIL_CLOSED_BUDGET);
      assert.match(r.reason, /UNAVAILABLE/);
      assert.ok(r.reservationId, "the generated reservation id is reported");

      let ran = false;
      await assert.rejects(
        proctor.reservation({ unit: "tokens", amount: 10 }, () => {
          ran = true;
        }),
        (e) =>
          e instanceof BudgetRefusedError &&
          e.refusedBy === FAIL_CLOSED_BUDGET &&
          /UNAVAILABLE/.test(e.message),
      );
      assert.equal(ran, false);

      const waited = await proctor.evaluateAndWait(ACTION, { timeoutMs: 1000 });
      assert.equal(waited.ruleId, FAIL_CLOSED_RULE_ID);
    } finally {
      proctor.close();
    }
  });

  test("a server that stops mid-life turns answers into denies", async () => {
    const server = await startProctor();
    const proctor = new ProctorClient(server.address, {
      failClosed: true,
      retries: { max: 2, ...FAST },
    });
    try {
      assert.equal((await proctor.evaluate(ACTION)).decision, "allow");
      assert.equal(await server.dispose(), 0);
      const d = await proctor.evaluate(ACTION);
      assert.equal(d.decision, "deny");
      assert.equal(d.ruleId, FAIL_CLOSED_RULE_ID);
    } finally {
      proctor.close();
      await server.dispose();
    }
  });
});

describe("deadlines", () => {
  let blackHole;
  let sockets;

  before(async () => {
    // Accepts TCP connections and never speaks HTTP/2: every call meets its deadline.
    sockets = new Set();
    blackHole = createServer((s) => {
      sockets.add(s);
      s.on("error", () => {});
    });
    await new Promise((ok) => blackHole.listen(0, "127.0.0.1", ok));
  });

  after(() => {
    for (const s of sockets) s.destroy();
    blackHole.close();
  });

  test("a call that gets no answer ends at its deadline: DEADLINE_EXCEEDED, or a deny", async () => {
    const address = `127.0.0.1:${blackHole.address().port}`;
    const proctor = new ProctorClient(address, { deadlineMs: 300 });
    const closed = new ProctorClient(address, { deadlineMs: 300, failClosed: true });
    try {
      await assert.rejects(
        proctor.evaluate(ACTION),
        (e) => e instanceof ProctorUnavailableError && e.code === "DEADLINE_EXCEEDED",
      );
      const d = await closed.evaluate(ACTION, { deadlineMs: 200 });
      assert.equal(d.ruleId, FAIL_CLOSED_RULE_ID);
      assert.match(d.reason, /DEADLINE_EXCEEDED/);
    } finally {
      proctor.close();
      closed.close();
    }
  });

  test("an abort signal ends a call with the signal's reason", async () => {
    const proctor = new ProctorClient(`127.0.0.1:${blackHole.address().port}`, {
      deadlineMs: null,
      failClosed: true,
    });
    try {
      const controller = new AbortController();
      const call = proctor.evaluate(ACTION, { signal: controller.signal });
      controller.abort(new Error("the agent gave up"));
      await assert.rejects(call, /the agent gave up/);
    } finally {
      proctor.close();
    }
  });
});

describe("retries on UNAVAILABLE", () => {
  test("a server that starts late is reached by the retries, within one call", async () => {
    const port = await freePort();
    const retries = [];
    const proctor = new ProctorClient(`127.0.0.1:${port}`, {
      deadlineMs: 60_000,
      retries: { max: 1000, initialBackoffMs: 50, maxBackoffMs: 250 },
      onRetry: (event) => retries.push(event),
    });
    let server;
    try {
      const answer = proctor.evaluate(ACTION);
      await eventually(() => retries.length >= 2, 20_000, "two failed attempts");
      server = await startProctor({ port });
      const d = await answer;
      assert.equal(d.decision, "allow");
      assert.equal(d.failClosed, false);
      assert.ok(retries.every((e) => e.code === "UNAVAILABLE" && e.method === "Evaluate"));
      assert.deepEqual(
        retries.map((e) => e.attempt),
        retries.map((_, i) => i + 1),
      );
      assert.ok(retries.every((e) => e.delayMs >= 0 && e.delayMs <= 250));
    } finally {
      proctor.close();
      await server?.dispose();
    }
  });

  test("with retries: 0 the same call fails at once", async () => {
    const proctor = new ProctorClient(deadAddress, { retries: 0 });
    try {
      await assert.rejects(
        proctor.evaluate(ACTION),
        (e) => e.code === "UNAVAILABLE" && e.attempts === 1,
      );
    } finally {
      proctor.close();
    }
  });
});
