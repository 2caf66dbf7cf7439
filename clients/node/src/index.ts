/**
 * proctor-client: the TypeScript SDK for Proctor, the policy decision point for fleets of
 * AI agents. Ask before every action, keep budgets, wait on approvals.
 *
 * ```ts
 * import { ProctorClient } from "proctor-client";
 *
 * const proctor = new ProctorClient("127.0.0.1:50051", { failClosed: true });
 * const d = await proctor.evaluate({
 *   topic: "job.42.export.bulk",
 *   delegationPath: ["orchestrator", "research-agent", "etl-7"],
 *   riskTags: ["bulk-data"],
 * });
 * console.log(d.decision, d.ruleId, d.reason);
 * proctor.close();
 * ```
 */
export { ProctorClient, DEFAULT_DEADLINE_MS, type ProctorClientOptions } from "./client";
export { DEFAULT_WAIT_MS } from "./approvals";
export { DecisionStream } from "./stream";
export { DEFAULT_TTL_SECONDS, FAIL_CLOSED_BUDGET } from "./budgets";
export { FAIL_CLOSED_RULE_ID } from "./convert";
export type { TlsOptions } from "./credentials";
export {
  AlreadyExistsError,
  BudgetRefusedError,
  FailedPreconditionError,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
  ProctorError,
  ProctorUnavailableError,
  UnauthenticatedError,
  type StatusName,
} from "./errors";
export type { RetryEvent, RetryOptions } from "./retry";
export type {
  Approval,
  ApprovalStatus,
  BudgetReport,
  BudgetStatus,
  CallOptions,
  CommitBudgetRequest,
  Decision,
  DecisionName,
  EvaluateAndWaitOptions,
  EvaluateRequest,
  GetBudgetRequest,
  Held,
  Int64,
  Int64Mode,
  Int64Of,
  ReleaseBudgetRequest,
  Reservation,
  ReserveBudgetRequest,
  Settlement,
  WaitOptions,
} from "./types";
