/**
 * ProctorClient: ask Proctor before every action, keep budgets, wait on approvals.
 */
import type { ChannelOptions } from "@grpc/grpc-js";
import { approvalRequest, settle, waitForApproval } from "./approvals";
import * as budgets from "./budgets";
import { decisionFrom, evaluateMessage, failClosedDecision } from "./convert";
import { channelSecurity, checkTokenTransport, resolveToken, type TlsOptions } from "./credentials";
import { ProctorError, errorFor, statusName } from "./errors";
import { RetryPolicy, type RetryEvent, type RetryOptions } from "./retry";
import { CHANNEL_DEFAULTS, Rpc } from "./rpc";
import { DecisionStream } from "./stream";
import type {
  Approval,
  BudgetReport,
  CallOptions,
  CommitBudgetRequest,
  Decision,
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

export const DEFAULT_DEADLINE_MS = 2_000;

export interface ProctorClientOptions<M extends Int64Mode = "number"> {
  /** Bearer token sent as `authorization: Bearer <token>`; default: $PROCTOR_TOKEN, if set. */
  token?: string;
  /** TLS: true for the system's roots, or CA, client certificate and key (mTLS). */
  tls?: boolean | TlsOptions;
  /**
   * When Proctor does not answer (unreachable, deadline passed, an error status other than
   * INVALID_ARGUMENT): evaluate answers a deny whose reason says why, and reserveBudget a
   * refusal by "client.fail_closed", instead of throwing. Default false: they throw.
   */
  failClosed?: boolean;
  /** Each call's overall deadline in ms, retries included (default 2,000; null: none). */
  deadlineMs?: number | null;
  /** Retries on UNAVAILABLE: how many (default 2), or the whole policy. */
  retries?: number | RetryOptions;
  /** int64 values (budget figures) come back as "number" (default) or "bigint". */
  int64?: M;
  /** More metadata for every call. */
  metadata?: Readonly<Record<string, string>>;
  /** grpc-js channel options, over the client's defaults. */
  channelOptions?: ChannelOptions;
  /** Called before each retry's pause (for logs and metrics). */
  onRetry?: (event: RetryEvent) => void;
  /** Send the token over plaintext to a non-loopback target (a sidecar encrypts the hop). */
  allowInsecureToken?: boolean;
  /**
   * evaluate() goes over one Decisions.EvaluateStream shared by every caller (see
   * evaluateStream()) instead of a unary call each. Default false.
   */
  stream?: boolean;
}

type ItemResult = Decision | ProctorError;

/**
 * A client of one Proctor server (or load balancer). Safe to share: calls run concurrently on
 * one HTTP/2 connection. `close()` when done.
 *
 * ```ts
 * const proctor = new ProctorClient("127.0.0.1:50051", { failClosed: true });
 * const d = await proctor.evaluate({
 *   topic: "job.42.export.bulk",
 *   delegationPath: ["orchestrator", "research-agent", "etl-7"],
 *   riskTags: ["bulk-data"],
 * });
 * if (d.decision === "allow") { ... }
 * ```
 */
export class ProctorClient<M extends Int64Mode = "number"> {
  readonly target: string;
  readonly failClosed: boolean;
  readonly int64: M;
  private readonly rpc: Rpc;
  private readonly streams = new Set<DecisionStream>();
  private shared: DecisionStream | undefined;

  constructor(target: string, options: ProctorClientOptions<M> = {}) {
    if (typeof target !== "string" || target === "") {
      throw new TypeError("target: expected HOST:PORT (or any gRPC target string)");
    }
    const deadlineMs = options.deadlineMs === undefined ? DEFAULT_DEADLINE_MS : options.deadlineMs;
    if (deadlineMs !== null && !(deadlineMs > 0)) {
      throw new TypeError(
        `deadlineMs: expected a positive number of ms or null, got ${deadlineMs}`,
      );
    }
    const security = channelSecurity(options.tls);
    const token = resolveToken(options.token);
    if (token !== undefined) {
      checkTokenTransport(target, security.secure, options.allowInsecureToken ?? false);
    }
    this.target = target;
    this.failClosed = options.failClosed ?? false;
    this.int64 = options.int64 ?? ("number" as M);
    if (this.int64 !== "number" && this.int64 !== "bigint") {
      throw new TypeError(`int64: expected "number" or "bigint", got ${String(this.int64)}`);
    }
    this.rpc = new Rpc({
      target,
      credentials: security.credentials,
      channelOptions: { ...CHANNEL_DEFAULTS, ...security.options, ...options.channelOptions },
      token,
      metadata: options.metadata ?? {},
      retry: new RetryPolicy(options.retries),
      deadlineMs,
      onRetry: options.onRetry,
    });
    if (options.stream) this.shared = this.evaluateStream();
  }

  /** Close the channel and its streams; later calls fail (or, fail-closed, deny). */
  close(): void {
    for (const stream of this.streams) stream.close();
    this.streams.clear();
    this.rpc.close();
  }

  /**
   * A Decisions.EvaluateStream for many decisions: `await stream.evaluate(req)` from any
   * number of concurrent callers; each message on the open stream costs less than a unary
   * call. Answers match callers in order; deadlines, retries (a broken stream is reopened)
   * and fail-closed are the client's. `stream.close()` when done (close() closes it too).
   *
   * ```ts
   * const stream = proctor.evaluateStream();
   * const d = await stream.evaluate({ topic: "job.7.delegate.internal", delegationPath: ["a"] });
   * stream.close();
   * ```
   */
  evaluateStream(): DecisionStream {
    const stream = new DecisionStream(this.rpc, this.failClosed);
    this.streams.add(stream);
    return stream;
  }

  // -- Decisions ------------------------------------------------------------------------

  /** Decide one action. See ProctorClientOptions for deadlines, retries and fail-closed. */
  async evaluate(req: EvaluateRequest, options: CallOptions = {}): Promise<Decision> {
    if (this.shared !== undefined) return this.shared.evaluate(req, options);
    const message = evaluateMessage(req);
    const requestId = message.requestId as string;
    try {
      return decisionFrom(
        await this.rpc.call("Decisions", "Evaluate", message, options),
        requestId,
      );
    } catch (error) {
      if (this.closes(error)) return failClosedDecision(describe(error), requestId);
      throw error;
    }
  }

  /**
   * Decide up to 1,000 actions in one round trip; answers in request order. An item the
   * server refused holds its typed error (an InvalidRequestError naming the field) in its
   * slot; the rest are decided. Fail-closed: no answer gives a fail-closed deny in every slot.
   */
  async evaluateBatch(
    reqs: readonly EvaluateRequest[],
    options: CallOptions = {},
  ): Promise<ItemResult[]> {
    if (!Array.isArray(reqs)) {
      throw errorFor("INVALID_ARGUMENT", "requests: expected an array", "EvaluateBatch");
    }
    const messages = reqs.map((r, i) => {
      try {
        return evaluateMessage(r, "EvaluateBatch");
      } catch (error) {
        const e = error as ProctorError;
        throw errorFor(e.code, `requests[${i}].${e.details}`, "EvaluateBatch");
      }
    });
    let response: any;
    try {
      response = await this.rpc.call("Decisions", "EvaluateBatch", { requests: messages }, options);
    } catch (error) {
      if (!this.closes(error)) throw error;
      const why = describe(error);
      return messages.map((m) => failClosedDecision(why, m.requestId as string));
    }
    return response.results.map((item: any, i: number): ItemResult => {
      if (item.result === "error") {
        return errorFor(statusName(item.error.code), item.error.message, "EvaluateBatch");
      }
      return decisionFrom(item.response, messages[i]?.requestId as string);
    });
  }

  /**
   * Evaluate; on require_approval with an approval id, wait up to `timeoutMs` for a
   * reviewer, then: approved, evaluate again presenting the approval (allow, using the grant
   * once, when the action is the very one approved); denied or expired, a deny whose reason
   * says who decided; still pending, the require_approval whose reason says how long it
   * waited. A require_approval with no id (the approval store was down) returns at once.
   */
  async evaluateAndWait(
    req: EvaluateRequest,
    options: EvaluateAndWaitOptions = {},
  ): Promise<Decision> {
    const call: CallOptions = { signal: options.signal };
    if (options.deadlineMs !== undefined) call.deadlineMs = options.deadlineMs;
    const first = await this.evaluate(req, call);
    if (first.decision !== "require_approval" || !first.approvalId) return first;
    const started = Date.now();
    let state: Approval;
    try {
      state = await this.waitForApproval(first.approvalId, options);
    } catch (error) {
      if (this.closes(error)) {
        return failClosedDecision(
          `waiting for approval ${first.approvalId}: ${describe(error)}`,
          first.requestId,
        );
      }
      throw error;
    }
    const settled = settle(first, state, Date.now() - started);
    if (settled !== null) return settled;
    return this.evaluate(
      { ...req, requestId: first.requestId, approvalId: first.approvalId },
      call,
    );
  }

  // -- Approvals ------------------------------------------------------------------------

  /** The approval now (NotFoundError for an unknown id). */
  async getApproval(
    approval: string | { approvalId: string },
    options: CallOptions = {},
  ): Promise<Approval> {
    return approvalRequest(this.rpc, approval, options);
  }

  /**
   * Wait until the approval is resolved or expires, or `timeoutMs` (default 60,000) pass;
   * resolve to its state then: still "pending" when the time ran out (never a timeout error).
   */
  async waitForApproval(approvalId: string, options: WaitOptions = {}): Promise<Approval> {
    return waitForApproval(this.rpc, approvalId, options);
  }

  // -- Budgets --------------------------------------------------------------------------

  /**
   * Reserve `amount` of `unit` against every budget that applies, all or nothing. Refused:
   * `granted` false and `refusedBy` names the budget. Fail-closed: no answer is a refusal by
   * "client.fail_closed".
   */
  async reserveBudget(
    req: ReserveBudgetRequest,
    options: CallOptions = {},
  ): Promise<Reservation<Int64Of<M>>> {
    const message = budgets.reserveMessage(req);
    try {
      return budgets.reservationFrom(
        this.int64,
        await this.rpc.call("Budgets", "ReserveBudget", message, options),
      );
    } catch (error) {
      if (this.closes(error))
        return budgets.refusedClosed(message.reservationId as string, describe(error));
      throw error;
    }
  }

  /** Settle a reservation at `actual`, refunding the difference (above it: `over`). */
  async commitBudget(
    req: CommitBudgetRequest | string,
    actual?: Int64,
    options: CallOptions = {},
  ): Promise<Settlement<Int64Of<M>>> {
    const message = budgets.commitMessage(req, actual);
    return budgets.settlementFrom(
      this.int64,
      await this.rpc.call("Budgets", "CommitBudget", message, options),
    );
  }

  /** Refund a reservation, or free a concurrency lease. */
  async releaseBudget(
    req: ReleaseBudgetRequest | string,
    options: CallOptions = {},
  ): Promise<Settlement<Int64Of<M>>> {
    const message = budgets.releaseMessage(req);
    return budgets.settlementFrom(
      this.int64,
      await this.rpc.call("Budgets", "ReleaseBudget", message, options),
    );
  }

  /** Usage, reserved and remaining of one budget, or of every budget whose scope is given. */
  async getBudget(
    req: GetBudgetRequest = {},
    options: CallOptions = {},
  ): Promise<BudgetReport<Int64Of<M>>> {
    const message = budgets.getMessage(req);
    const response = await this.rpc.call("Budgets", "GetBudget", message, options);
    return budgets.reportFrom(this.int64, response);
  }

  /**
   * Reserve, run `fn`, and always settle: commit at `held.actual` (default: the amount) when
   * `fn` returns, release when it throws (then rethrow), release a concurrency lease either
   * way. A refusal throws BudgetRefusedError naming the budget, and `fn` does not run.
   * Resolves to what `fn` returned.
   */
  async reservation<T>(
    req: ReserveBudgetRequest,
    fn: (held: Held<Int64Of<M>>) => T | Promise<T>,
    options: CallOptions = {},
  ): Promise<T> {
    return budgets.withReservation(this, req, fn, options);
  }

  private closes(error: unknown): error is ProctorError {
    return this.failClosed && error instanceof ProctorError && error.code !== "INVALID_ARGUMENT";
  }
}

function describe(error: ProctorError): string {
  const tries = error.attempts > 1 ? ` after ${error.attempts} attempts` : "";
  return `${error.code}${tries}: ${error.details}`;
}
