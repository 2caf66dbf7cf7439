/**
 * Budget requests and answers, and the reservation(...) helper that always settles.
 *
 * ```ts
 * const reply = await proctor.reservation(
 *   { unit: "tokens", amount: 2000, tenant: "acme", agentId: "etl-7" },
 *   async (held) => {
 *     const reply = await callTheModel({ maxTokens: 2000 });
 *     held.actual = reply.usage.totalTokens; // committed when this returns
 *     return reply;
 *   },
 * );
 * ```
 */
import { Check, budgetFrom, dateFrom, newId } from "./convert";
import { BudgetRefusedError, ProctorError } from "./errors";
import type {
  BudgetReport,
  CallOptions,
  CommitBudgetRequest,
  Held,
  Int64,
  Int64Mode,
  Int64Of,
  ReleaseBudgetRequest,
  Reservation,
  ReserveBudgetRequest,
  Settlement,
} from "./types";

export const DEFAULT_TTL_SECONDS = 300;
/** The refusedBy of a reservation the client refused itself because Proctor did not answer. */
export const FAIL_CLOSED_BUDGET = "client.fail_closed";

/** The wire ReserveBudgetRequest; generates the reservation id when absent. */
export function reserveMessage(req: ReserveBudgetRequest): Record<string, unknown> {
  const c = new Check("ReserveBudget");
  const r = c.object(req);
  return {
    reservationId: c.str("reservationId", r.reservationId) || newId(),
    tenant: c.str("tenant", r.tenant),
    agentId: c.str("agentId", r.agentId),
    runId: c.str("runId", r.runId),
    unit: c.str("unit", r.unit),
    amount: c.int64("amount", r.amount),
    ttlSeconds: c.int64("ttlSeconds", r.ttlSeconds, BigInt(DEFAULT_TTL_SECONDS)),
  };
}

export function commitMessage(
  req: CommitBudgetRequest | string,
  actual?: Int64,
): Record<string, unknown> {
  const c = new Check("CommitBudget");
  const r = typeof req === "string" ? { reservationId: req, actual } : c.object(req);
  return {
    reservationId: c.str("reservationId", r.reservationId),
    actual: c.int64("actual", r.actual),
  };
}

export function releaseMessage(req: ReleaseBudgetRequest | string): Record<string, unknown> {
  const c = new Check("ReleaseBudget");
  const r = typeof req === "string" ? { reservationId: req } : c.object(req);
  return { reservationId: c.str("reservationId", r.reservationId) };
}

export function getMessage(req: unknown): Record<string, unknown> {
  const c = new Check("GetBudget");
  const r = c.object(req);
  return {
    budgetId: c.str("budgetId", r.budgetId),
    tenant: c.str("tenant", r.tenant),
    agentId: c.str("agentId", r.agentId),
    runId: c.str("runId", r.runId),
  };
}

export function reservationFrom<M extends Int64Mode>(mode: M, r: any): Reservation<Int64Of<M>> {
  const budgets = r.budgets.map((s: any) => budgetFrom(mode, s));
  return {
    reservationId: r.reservationId,
    granted: r.granted,
    refusedBy: r.refusedBy,
    budgets,
    expiresAt: dateFrom(r.expiresAt),
    lease: budgets.some((b: { kind: string }) => b.kind === "concurrency"),
    failClosed: false,
    reason: "",
  };
}

export function refusedClosed<N extends number | bigint>(
  reservationId: string,
  why: string,
): Reservation<N> {
  return {
    reservationId,
    granted: false,
    refusedBy: FAIL_CLOSED_BUDGET,
    budgets: [],
    expiresAt: null,
    lease: false,
    failClosed: true,
    reason: `Proctor did not answer, failing closed: ${why}`,
  };
}

export function settlementFrom<M extends Int64Mode>(mode: M, r: any): Settlement<Int64Of<M>> {
  return {
    reservationId: r.reservationId,
    budgets: r.budgets.map((s: any) => budgetFrom(mode, s)),
    over: r.over ?? false,
  };
}

export function reportFrom<M extends Int64Mode>(mode: M, r: any): BudgetReport<Int64Of<M>> {
  return { budgets: r.budgets.map((s: any) => budgetFrom(mode, s)) };
}

/** The budget methods withReservation needs (ProctorClient's). */
interface Budgets<N extends number | bigint> {
  reserveBudget(req: ReserveBudgetRequest, options?: CallOptions): Promise<Reservation<N>>;
  commitBudget(
    req: CommitBudgetRequest,
    actual?: Int64,
    options?: CallOptions,
  ): Promise<Settlement<N>>;
  releaseBudget(req: ReleaseBudgetRequest, options?: CallOptions): Promise<Settlement<N>>;
}

/** ProctorClient.reservation: reserve, run, and always commit or release. */
export async function withReservation<N extends number | bigint, T>(
  client: Budgets<N>,
  req: ReserveBudgetRequest,
  fn: (held: Held<N>) => T | Promise<T>,
  options: CallOptions,
): Promise<T> {
  if (typeof fn !== "function") throw new TypeError("reservation(req, fn): fn must be a function");
  // The id is fixed here, so a retried reserve after a lost answer is the same reservation.
  const request = { ...req, reservationId: req.reservationId || newId() };
  const reservation = await client.reserveBudget(request, options);
  if (!reservation.granted) throw new BudgetRefusedError(reservation);
  const { reservationId } = reservation;
  const held: Held<N> = { reservationId, reservation, actual: req.amount };
  // Settling ignores the caller's abort signal: an aborted callback still releases.
  const settling: CallOptions =
    options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs };
  let result: T;
  try {
    result = await fn(held);
  } catch (error) {
    try {
      await client.releaseBudget({ reservationId }, settling);
    } catch (releaseError) {
      // The callback's error is the one to see; an unreleased reservation expires after its TTL.
      if (!(releaseError instanceof ProctorError)) throw releaseError;
    }
    throw error;
  }
  if (reservation.lease) await client.releaseBudget({ reservationId }, settling);
  else await client.commitBudget({ reservationId, actual: held.actual }, undefined, settling);
  return result;
}
