/**
 * The plain objects the client takes and returns: the proto messages in camelCase, with
 * decisions and statuses as short strings, timestamps as Date and int64 as number or bigint.
 */

/** Proctor's answer to "may this agent take this action?". */
export type DecisionName = "allow" | "deny" | "require_approval";

/** How int64 values (budget amounts, limits, usage) come back: see ProctorClientOptions.int64. */
export type Int64Mode = "number" | "bigint";

/** The JavaScript type of an int64 value in a given mode. */
export type Int64Of<M extends Int64Mode> = M extends "bigint" ? bigint : number;

/** An int64 value sent to the server: a safe integer number, or a bigint. */
export type Int64 = number | bigint;

/** One action to decide (the fields of proctor.v1.EvaluateRequest). */
export interface EvaluateRequest {
  /** Dot-separated action topic, e.g. "job.42.export.bulk". */
  topic: string;
  /** Root first, acting agent last; at least one entry. */
  delegationPath: readonly string[];
  riskTags?: readonly string[];
  tenant?: string;
  runId?: string;
  /**
   * Idempotency key; generated when absent (and kept across the client's retries, so a
   * retried require_approval never opens a second approval).
   */
  requestId?: string;
  labels?: Readonly<Record<string, string>>;
  /** An approval granted earlier for this very action. */
  approvalId?: string;
  /** Fill matchedRuleIds with every matching rule in file order. */
  explain?: boolean;
}

/** Proctor's answer for one action. */
export interface Decision {
  decision: DecisionName;
  ruleId: string;
  reason: string;
  policyVersion: string;
  /** Unique and time-sortable (ULID); empty on a fail-closed deny. */
  decisionId: string;
  /** Set on require_approval (the approval to wait on) and on an allow an approval granted. */
  approvalId: string;
  matchedRuleIds: string[];
  derivedTags: string[];
  /** The request id sent (the caller's, or the one the client generated). */
  requestId: string;
  /** True when the client made this deny itself because Proctor did not answer. */
  failClosed: boolean;
}

/** Options of one call. */
export interface CallOptions {
  /** The call's overall deadline in milliseconds, retries included; null for none. */
  deadlineMs?: number | null;
  /** Abort the call (and its retries); the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** pending | approved | denied | expired | consumed (approved, then used once). */
export type ApprovalStatus =
  "pending" | "approved" | "denied" | "expired" | "consumed" | "unspecified";

/** An approval as the server holds it. */
export interface Approval {
  approvalId: string;
  status: ApprovalStatus;
  requestId: string;
  runId: string;
  tenant: string;
  delegationPath: string[];
  topic: string;
  riskTags: string[];
  derivedTags: string[];
  labels: Record<string, string>;
  ruleId: string;
  reason: string;
  /** Approver groups the rule names; empty: any reviewer. */
  approvers: string[];
  policyVersion: string;
  decisionId: string;
  /** Hash binding the approval to the exact action. */
  actionHash: string;
  createdAt: Date | null;
  expiresAt: Date | null;
  resolvedAt: Date | null;
  reviewer: string;
  resolutionReason: string;
}

/** Options of waitForApproval and evaluateAndWait. */
export interface WaitOptions {
  /** How long to wait for a reviewer, in milliseconds (default 60,000). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Options of evaluateAndWait: the evaluations' deadline, and the wait's timeout. */
export interface EvaluateAndWaitOptions extends WaitOptions {
  /** Each Evaluate call's deadline (the client's default when absent). */
  deadlineMs?: number | null;
}

/** A reservation request (proctor.v1.ReserveBudgetRequest). */
export interface ReserveBudgetRequest {
  /** Which budgets apply: every budget of this unit whose scope matches. */
  unit: string;
  amount: Int64;
  /**
   * Idempotency key; generated when absent and kept across the client's retries, so a retry
   * after a lost answer never reserves twice.
   */
  reservationId?: string;
  tenant?: string;
  agentId?: string;
  runId?: string;
  /** 1..86400; default 300. An unsettled reservation returns to the pool after it. */
  ttlSeconds?: Int64;
}

/** One budget's counter for one scope key. */
export interface BudgetStatus<N = number> {
  budgetId: string;
  unit: string;
  /** fleet | tenant | agent | run */
  scope: string;
  /** The tenant, agent or run the counter belongs to; empty for fleet. */
  scopeKey: string;
  kind: "spend" | "concurrency" | "unspecified";
  limit: N;
  /** Committed spend in the current window (spend) or 0 (concurrency). */
  used: N;
  /** Held by live reservations or leases. */
  reserved: N;
  /** limit - used - reserved; negative when a commit went over. */
  remaining: N;
  /** none | minute | hour | day | month | a fixed span such as 30s */
  window: string;
  /** When the current window ends; null for window none. */
  windowResetsAt: Date | null;
  /** used + reserved exceeds limit (a commit above its reservation). */
  over: boolean;
}

/** The answer to reserveBudget. */
export interface Reservation<N = number> {
  reservationId: string;
  granted: boolean;
  /** The first refusing budget in policy order; "client.fail_closed" when Proctor did not answer. */
  refusedBy: string;
  budgets: BudgetStatus<N>[];
  expiresAt: Date | null;
  /** A concurrency lease: released, never committed. */
  lease: boolean;
  /** True when the client refused it itself because Proctor did not answer. */
  failClosed: boolean;
  /** Why the client refused it (fail-closed only; empty otherwise). */
  reason: string;
}

/** A commit (proctor.v1.CommitBudgetRequest). */
export interface CommitBudgetRequest {
  reservationId: string;
  /** What was really spent; the difference to the reservation is refunded (or goes over). */
  actual: Int64;
}

/** A release (proctor.v1.ReleaseBudgetRequest). */
export interface ReleaseBudgetRequest {
  reservationId: string;
}

/** The answer to commitBudget and releaseBudget. */
export interface Settlement<N = number> {
  reservationId: string;
  budgets: BudgetStatus<N>[];
  /** Some budget is now over its limit (commit only). */
  over: boolean;
}

/** Which counters getBudget reports (proctor.v1.GetBudgetRequest). */
export interface GetBudgetRequest {
  /** Empty: every budget that applies to the scope keys given. */
  budgetId?: string;
  tenant?: string;
  agentId?: string;
  runId?: string;
}

/** The answer to getBudget. */
export interface BudgetReport<N = number> {
  budgets: BudgetStatus<N>[];
}

/** What a reservation(...) callback sees. */
export interface Held<N = number> {
  readonly reservationId: string;
  readonly reservation: Reservation<N>;
  /** What to commit when the callback returns; starts at the reserved amount. */
  actual: Int64;
}
