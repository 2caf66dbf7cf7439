// Budgets against a live `proctor serve` (embedded store): reserve and commit until refused,
// refusals that name the budget, reservation() that always settles, leases, idempotent ids,
// typed errors and int64 as number or bigint.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  BudgetRefusedError,
  FailedPreconditionError,
  InvalidRequestError,
  NotFoundError,
  ProctorClient,
} from "proctor-client";
import { BUDGET_POLICY, startProctor } from "./support/proctor.mjs";

let server;
let proctor;

before(async () => {
  server = await startProctor({ policyText: BUDGET_POLICY });
  proctor = new ProctorClient(server.address, { deadlineMs: 10_000 });
});

after(async () => {
  proctor?.close();
  assert.equal(await server.dispose(), 0);
});

async function runTokens(runId) {
  const { budgets } = await proctor.getBudget({ budgetId: "run-tokens", tenant: "acme", runId });
  assert.equal(budgets.length, 1);
  return budgets[0];
}

describe("reserve and commit", () => {
  test("until refused: the refusal names the budget", async () => {
    const req = { unit: "tokens", amount: 300, tenant: "acme", agentId: "etl-7", runId: "run-a" };
    for (let i = 0; i < 3; i++) {
      const r = await proctor.reserveBudget(req);
      assert.equal(r.granted, true);
      assert.equal(r.refusedBy, "");
      assert.ok(r.expiresAt instanceof Date);
      const s = await proctor.commitBudget({ reservationId: r.reservationId, actual: 300 });
      assert.equal(s.reservationId, r.reservationId);
      assert.equal(s.over, false);
    }
    const refused = await proctor.reserveBudget(req);
    assert.equal(refused.granted, false);
    assert.equal(refused.refusedBy, "run-tokens");
    const status = refused.budgets.find((b) => b.budgetId === "run-tokens");
    assert.equal(status.remaining, 100);
    assert.equal(status.used, 900);
    assert.equal(status.scope, "run");
    assert.equal(status.scopeKey, "run-a");

    let ran = false;
    await assert.rejects(
      proctor.reservation(req, () => {
        ran = true;
      }),
      (e) =>
        e instanceof BudgetRefusedError &&
        e.refusedBy === "run-tokens" &&
        e.code === "RESOURCE_EXHAUSTED" &&
        /budget 'run-tokens' refused/.test(e.message),
    );
    assert.equal(ran, false);
  });

  test("commit and release take a reservation id positionally too", async () => {
    const r = await proctor.reserveBudget({
      unit: "tokens",
      amount: 50,
      tenant: "acme",
      runId: "run-p",
    });
    const s = await proctor.commitBudget(r.reservationId, 20);
    assert.equal(s.budgets.find((b) => b.budgetId === "run-tokens").used, 20);
    const r2 = await proctor.reserveBudget({
      unit: "tokens",
      amount: 50,
      tenant: "acme",
      runId: "run-p",
    });
    await proctor.releaseBudget(r2.reservationId);
    assert.equal((await runTokens("run-p")).reserved, 0);
  });
});

describe("reservation()", () => {
  test("settles on success: commits held.actual, or the amount when left alone", async () => {
    const req = { unit: "tokens", amount: 500, tenant: "acme", runId: "run-b" };
    const out = await proctor.reservation(req, async (held) => {
      assert.equal(held.reservation.granted, true);
      assert.equal((await runTokens("run-b")).reserved, 500, "held while the callback runs");
      held.actual = 120;
      return "model reply";
    });
    assert.equal(out, "model reply");
    let b = await runTokens("run-b");
    assert.equal(b.used, 120);
    assert.equal(b.reserved, 0);

    await proctor.reservation({ ...req, amount: 100 }, () => {});
    b = await runTokens("run-b");
    assert.equal(b.used, 220);
  });

  test("releases on a thrown error, and rethrows it", async () => {
    const failure = new Error("the tool failed");
    let id;
    await assert.rejects(
      proctor.reservation(
        { unit: "tokens", amount: 400, tenant: "acme", runId: "run-c" },
        (held) => {
          id = held.reservationId;
          throw failure;
        },
      ),
      (e) => e === failure,
    );
    const b = await runTokens("run-c");
    assert.equal(b.reserved, 0);
    assert.equal(b.used, 0);
    // Released for good: the id is never granted or settled again.
    await assert.rejects(proctor.commitBudget(id, 1), FailedPreconditionError);
  });

  test("a concurrency lease is held during the callback and freed after it", async () => {
    const slot = { unit: "agents", amount: 1, tenant: "acme", agentId: "etl-9" };
    await proctor.reservation(slot, async (held) => {
      assert.equal(held.reservation.lease, true);
      const second = await proctor.reserveBudget(slot);
      assert.equal(second.granted, false);
      assert.equal(second.refusedBy, "agent-slots");
      await assert.rejects(proctor.commitBudget(held.reservationId, 1), FailedPreconditionError);
    });
    const again = await proctor.reserveBudget(slot);
    assert.equal(again.granted, true, "the lease was released");
    await proctor.releaseBudget({ reservationId: again.reservationId });
  });
});

describe("reservation ids", () => {
  test("generated when absent; the same id twice reserves once", async () => {
    const req = { unit: "tokens", amount: 70, tenant: "acme", runId: "run-d" };
    const a = await proctor.reserveBudget(req);
    const b = await proctor.reserveBudget(req);
    assert.match(a.reservationId, /^[0-9a-f-]{36}$/);
    assert.notEqual(a.reservationId, b.reservationId);
    await proctor.releaseBudget(b.reservationId);

    const again = await proctor.reserveBudget({ ...req, reservationId: a.reservationId });
    assert.equal(again.granted, true);
    assert.equal((await runTokens("run-d")).reserved, 70, "reserved once");
    await proctor.commitBudget(a.reservationId, 70);
  });

  test("unknown ids and out-of-range values are typed errors", async () => {
    await assert.rejects(proctor.commitBudget("no-such-reservation", 1), NotFoundError);
    await assert.rejects(
      proctor.reserveBudget({ unit: "tokens", amount: 1, ttlSeconds: 0 }),
      (e) => e instanceof InvalidRequestError && /ttl_seconds/.test(e.details),
    );
  });
});

describe("int64", () => {
  test("number by default, bigint on request, either accepted in", async () => {
    const big = new ProctorClient(server.address, { int64: "bigint", deadlineMs: 10_000 });
    try {
      const r = await big.reserveBudget({
        unit: "tokens",
        amount: 5n,
        tenant: "acme",
        runId: "run-e",
        ttlSeconds: 60n,
      });
      assert.equal(r.granted, true);
      const status = r.budgets.find((b) => b.budgetId === "run-tokens");
      assert.equal(status.limit, 1000n);
      assert.equal(status.reserved, 5n);
      const s = await big.commitBudget(r.reservationId, 4n);
      assert.equal(s.budgets.find((b) => b.budgetId === "run-tokens").used, 4n);
      assert.equal((await runTokens("run-e")).used, 4);
    } finally {
      big.close();
    }
  });
});
