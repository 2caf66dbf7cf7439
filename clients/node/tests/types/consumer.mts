// Compiled by `npm run typecheck` (never run): the declarations, as an ES module consumer
// sees them. Each @ts-expect-error marks a mistake the types must catch.
import {
  BudgetRefusedError,
  ProctorClient,
  ProctorError,
  type Decision,
  type Reservation,
} from "proctor-client";

export async function agent(): Promise<void> {
  const proctor = new ProctorClient("127.0.0.1:50051", {
    failClosed: true,
    deadlineMs: 500,
    retries: 3,
  });
  const d: Decision = await proctor.evaluate({
    topic: "job.1.send.email",
    delegationPath: ["a"],
    riskTags: ["external"],
  });
  if (d.decision === "require_approval") {
    const final = await proctor.evaluateAndWait(
      { topic: "t", delegationPath: ["a"] },
      { timeoutMs: 1000 },
    );
    const ok: boolean = final.decision === "allow";
    void ok;
  }
  const stream = proctor.evaluateStream();
  const streamed: Decision = await stream.evaluate({ topic: "job.1.x", delegationPath: ["a"] });
  stream.close();
  void streamed;
  new ProctorClient("127.0.0.1:50051", { stream: true }).close();
  // @ts-expect-error decisions are "allow" | "deny" | "require_approval", not the proto's enum names
  if (d.decision === "DECISION_ALLOW") return;
  // @ts-expect-error a request needs its topic
  await proctor.evaluate({ delegationPath: ["a"] });

  const used: number = (await proctor.getBudget({ tenant: "acme" })).budgets[0]!.used;
  const big = new ProctorClient("127.0.0.1:50051", { int64: "bigint" });
  const limit: bigint = (await big.getBudget()).budgets[0]!.limit;
  // @ts-expect-error a bigint client's figures are bigint
  const wrong: number = (await big.getBudget()).budgets[0]!.limit;
  void [used, limit, wrong];

  const r: Reservation = await proctor.reserveBudget({
    unit: "tokens",
    amount: 10n,
    tenant: "acme",
  });
  await proctor.commitBudget({ reservationId: r.reservationId, actual: 7 });
  await proctor.commitBudget(r.reservationId, 7n);
  const text: string = await proctor.reservation({ unit: "tokens", amount: 100 }, async (held) => {
    held.actual = 42;
    return "reply";
  });
  void text;

  const batch = await proctor.evaluateBatch([{ topic: "t", delegationPath: ["a"] }]);
  for (const item of batch) {
    if (item instanceof ProctorError) console.log(item.code, item.details);
    else console.log(item.ruleId);
  }
  try {
    await proctor.reservation({ unit: "tokens", amount: 1 }, () => 1);
  } catch (e) {
    if (e instanceof BudgetRefusedError) console.log(e.refusedBy);
  }
  const a = await proctor.waitForApproval("apv_1", { timeoutMs: 1000 });
  const pending: boolean = a.status === "pending";
  void pending;
  proctor.close();
  big.close();
}
