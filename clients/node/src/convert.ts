/**
 * Plain objects to wire messages and back.
 *
 * Requests are checked for types before they are sent: a wrong type (a string where a list
 * belongs, 1.5 as an amount) is an InvalidRequestError naming the field, never a message
 * the serializer silently bends. Limits (lengths, counts, ranges) are the server's to check;
 * it answers INVALID_ARGUMENT naming the field and the limit.
 */
import { randomUUID } from "node:crypto";
import { InvalidRequestError } from "./errors";
import type {
  Approval,
  ApprovalStatus,
  BudgetStatus,
  Decision,
  DecisionName,
  EvaluateRequest,
  Int64Mode,
  Int64Of,
} from "./types";

/** The rule id of a deny the client made itself because Proctor did not answer. */
export const FAIL_CLOSED_RULE_ID = "client.fail_closed";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function invalid(method: string, field: string, what: string): InvalidRequestError {
  return new InvalidRequestError("INVALID_ARGUMENT", `${field}: ${what}`, method);
}

/** Field checks for one method's request. */
export class Check {
  constructor(private readonly method: string) {}

  str(field: string, value: unknown, fallback = ""): string {
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "string")
      throw invalid(this.method, field, `expected a string, got ${typeof value}`);
    return value;
  }

  bool(field: string, value: unknown): boolean {
    if (value === undefined || value === null) return false;
    if (typeof value !== "boolean")
      throw invalid(this.method, field, `expected a boolean, got ${typeof value}`);
    return value;
  }

  strings(field: string, value: unknown): string[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) throw invalid(this.method, field, "expected an array of strings");
    value.forEach((v, i) => {
      if (typeof v !== "string")
        throw invalid(this.method, `${field}[${i}]`, `expected a string, got ${typeof v}`);
    });
    return [...value];
  }

  labels(field: string, value: unknown): Record<string, string> {
    if (value === undefined || value === null) return {};
    if (typeof value !== "object" || Array.isArray(value)) {
      throw invalid(this.method, field, "expected an object of string values");
    }
    // No prototype: a label named "__proto__" stays a label.
    const out: Record<string, string> = Object.create(null);
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== "string")
        throw invalid(this.method, `${field}.${k}`, `expected a string, got ${typeof v}`);
      out[k] = v;
    }
    return out;
  }

  /** An int64 as the decimal string protobufjs encodes exactly. */
  int64(field: string, value: unknown, fallback?: bigint): string {
    if ((value === undefined || value === null) && fallback !== undefined)
      return fallback.toString();
    if (typeof value === "number") {
      if (!Number.isSafeInteger(value)) {
        throw invalid(
          this.method,
          field,
          `expected a whole number within +-(2^53-1) (or a bigint), got ${value}`,
        );
      }
      return value.toString();
    }
    if (typeof value === "bigint") {
      if (value < INT64_MIN || value > INT64_MAX)
        throw invalid(this.method, field, "outside the int64 range");
      return value.toString();
    }
    throw invalid(
      this.method,
      field,
      `expected a number or a bigint, got ${value === null ? "null" : typeof value}`,
    );
  }

  object(value: unknown): Record<string, unknown> {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw invalid(this.method, "request", "expected an object");
    }
    return value as Record<string, unknown>;
  }
}

/** A fresh idempotency key (request and reservation ids). */
export function newId(): string {
  return randomUUID();
}

/** The wire EvaluateRequest for a plain request; generates the request id when absent. */
export function evaluateMessage(
  req: EvaluateRequest,
  method = "Evaluate",
): Record<string, unknown> {
  const c = new Check(method);
  const r = c.object(req);
  const requestId = c.str("requestId", r.requestId) || newId();
  return {
    requestId,
    runId: c.str("runId", r.runId),
    tenant: c.str("tenant", r.tenant),
    delegationPath: c.strings("delegationPath", r.delegationPath),
    topic: c.str("topic", r.topic),
    riskTags: c.strings("riskTags", r.riskTags),
    labels: c.labels("labels", r.labels),
    approvalId: c.str("approvalId", r.approvalId),
    explain: c.bool("explain", r.explain),
  };
}

const DECISIONS: Record<string, DecisionName> = {
  DECISION_ALLOW: "allow",
  DECISION_DENY: "deny",
  DECISION_REQUIRE_APPROVAL: "require_approval",
};

/** The plain Decision for a wire EvaluateResponse (an unknown decision reads as deny). */
export function decisionFrom(msg: any, requestId: string): Decision {
  return {
    decision: DECISIONS[msg.decision] ?? "deny",
    ruleId: msg.ruleId,
    reason: msg.reason,
    policyVersion: msg.policyVersion,
    decisionId: msg.decisionId,
    approvalId: msg.approvalId,
    matchedRuleIds: [...msg.matchedRuleIds],
    derivedTags: [...msg.derivedTags],
    requestId,
    failClosed: false,
  };
}

/** The deny the client answers itself when Proctor did not, and fail-closed is on. */
export function failClosedDecision(why: string, requestId: string): Decision {
  return {
    decision: "deny",
    ruleId: FAIL_CLOSED_RULE_ID,
    reason: `Proctor did not answer, failing closed: ${why}`,
    policyVersion: "",
    decisionId: "",
    approvalId: "",
    matchedRuleIds: [],
    derivedTags: [],
    requestId,
    failClosed: true,
  };
}

/** A wire Timestamp ({seconds: "123", nanos}) as a Date; null when unset. */
export function dateFrom(ts: any): Date | null {
  if (ts === null || ts === undefined) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6));
}

/** A wire int64 (a decimal string) in the client's mode. */
export function int64From<M extends Int64Mode>(mode: M, value: unknown, field: string): Int64Of<M> {
  const big = BigInt(value as string | number);
  if (mode === "bigint") return big as Int64Of<M>;
  const n = Number(big);
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(
      `${field} = ${big} is beyond Number.MAX_SAFE_INTEGER; construct the client with int64: "bigint"`,
    );
  }
  return n as Int64Of<M>;
}

const KINDS: Record<string, BudgetStatus["kind"]> = {
  BUDGET_KIND_SPEND: "spend",
  BUDGET_KIND_CONCURRENCY: "concurrency",
};

/** A wire BudgetStatus as a plain one. */
export function budgetFrom<M extends Int64Mode>(mode: M, s: any): BudgetStatus<Int64Of<M>> {
  const at = (f: string): Int64Of<M> => int64From(mode, s[f], `${s.budgetId}.${f}`);
  return {
    budgetId: s.budgetId,
    unit: s.unit,
    scope: s.scope,
    scopeKey: s.scopeKey,
    kind: KINDS[s.kind] ?? "unspecified",
    limit: at("limit"),
    used: at("used"),
    reserved: at("reserved"),
    remaining: at("remaining"),
    window: s.window,
    windowResetsAt: dateFrom(s.windowResetsAt),
    over: s.over,
  };
}

const STATUSES: Record<string, ApprovalStatus> = {
  APPROVAL_STATUS_PENDING: "pending",
  APPROVAL_STATUS_APPROVED: "approved",
  APPROVAL_STATUS_DENIED: "denied",
  APPROVAL_STATUS_EXPIRED: "expired",
  APPROVAL_STATUS_CONSUMED: "consumed",
};

/** A wire Approval as a plain one. */
export function approvalFrom(a: any): Approval {
  return {
    approvalId: a.approvalId,
    status: STATUSES[a.status] ?? "unspecified",
    requestId: a.requestId,
    runId: a.runId,
    tenant: a.tenant,
    delegationPath: [...a.delegationPath],
    topic: a.topic,
    riskTags: [...a.riskTags],
    derivedTags: [...a.derivedTags],
    labels: { ...a.labels },
    ruleId: a.ruleId,
    reason: a.reason,
    approvers: [...a.approvers],
    policyVersion: a.policyVersion,
    decisionId: a.decisionId,
    actionHash: a.actionHash,
    createdAt: dateFrom(a.createdAt),
    expiresAt: dateFrom(a.expiresAt),
    resolvedAt: dateFrom(a.resolvedAt),
    reviewer: a.reviewer,
    resolutionReason: a.resolutionReason,
  };
}
