// The seed's accountability chain, from a TypeScript/JavaScript agent.
//
// An orchestrator delegates to a research agent, which delegates to a mailer. The mailer asks
// Proctor before each action: a bulk export is denied outright; sending customer emails needs
// a human's approval, so the agent waits while a reviewer approves it with the CLI, then its
// retry is allowed, once. Then the agent spends its run's token budget, one model call at a
// time, until Proctor refuses and names the budget.
//
//   proctor serve --policy clients/node/examples/safety-with-budgets.yaml     # terminal 1
//   node examples/accountability-chain.mjs                                    # terminal 2
//   proctor approvals approve <id> --reviewer dana --reason "..."             # terminal 3
//
// PROCTOR_ADDRESS picks the server (default 127.0.0.1:50051).
import { BudgetRefusedError, ProctorClient } from "proctor-client";

const address = process.env.PROCTOR_ADDRESS ?? "127.0.0.1:50051";
const proctor = new ProctorClient(address, { failClosed: true, deadlineMs: 5_000 });
const path = ["orchestrator", "research-agent", "mailer"];
const runId = `run-${Date.now()}`;

try {
  // 1. A bulk export: denied by rule, whatever the delegation path.
  const bulk = await proctor.evaluate({
    topic: "job.42.export.bulk",
    delegationPath: path,
    riskTags: ["bulk-data"],
    tenant: "acme",
    runId,
  });
  console.log(`export.bulk: ${bulk.decision} (${bulk.ruleId}: ${bulk.reason})`);

  // 2. Customer emails: Proctor opens an approval and the agent waits for a reviewer.
  const send = {
    topic: "job.42.send.email",
    delegationPath: path,
    riskTags: ["external", "pii"],
    tenant: "acme",
    runId,
    labels: { data: "customer-emails" },
  };
  const first = await proctor.evaluate(send);
  console.log(`send.email: ${first.decision} (${first.ruleId}: ${first.reason})`);
  if (first.decision === "require_approval") {
    console.log(
      `waiting for a reviewer: proctor approvals approve ${first.approvalId} --server ${address}`,
    );
    // The same request id, so the wait is on the approval just opened rather than a new one.
    const final = await proctor.evaluateAndWait(
      { ...send, requestId: first.requestId },
      { timeoutMs: 600_000 },
    );
    console.log(`send.email after review: ${final.decision} (${final.reason})`);
    if (final.decision === "allow") console.log("sending the emails");
  }

  // 3. Model calls against the run's token budget until Proctor refuses.
  for (let call = 1; ; call++) {
    try {
      await proctor.reservation(
        { unit: "tokens", amount: 300, tenant: "acme", agentId: "mailer", runId },
        async (held) => {
          held.actual = 250; // what the model really used: committed when this returns
        },
      );
      console.log(`model call ${call}: reserved 300 tokens, committed 250`);
    } catch (error) {
      if (!(error instanceof BudgetRefusedError)) throw error;
      console.log(`model call ${call}: refused by ${error.refusedBy}`);
      break;
    }
  }
  const { budgets } = await proctor.getBudget({ budgetId: "run-tokens", tenant: "acme", runId });
  console.log(
    `run-tokens: used ${budgets[0].used} of ${budgets[0].limit}, ${budgets[0].remaining} left`,
  );
} finally {
  proctor.close();
}
