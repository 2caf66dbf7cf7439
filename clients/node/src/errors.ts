/**
 * The errors the client throws: one class per kind of failure a caller handles differently.
 *
 * Every error is a ProctorError carrying the gRPC status (`code` as its name, `grpcCode` as
 * its number), the server's message (`details`), the method and how many attempts were made.
 */
import { status as Status } from "@grpc/grpc-js";
import type { Reservation } from "./types";

/** gRPC status names, as in the gRPC spec ("INVALID_ARGUMENT", "UNAVAILABLE", ...). */
export type StatusName = keyof typeof Status;

const NAMES: Record<number, StatusName> = Object.fromEntries(
  Object.entries(Status)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v, k as StatusName]),
);

/** The name of a numeric gRPC status code ("UNKNOWN" for a number outside the spec). */
export function statusName(code: number): StatusName {
  return NAMES[code] ?? "UNKNOWN";
}

/** A call to Proctor failed. */
export class ProctorError extends Error {
  /** The gRPC status name, e.g. "NOT_FOUND". */
  readonly code: StatusName;
  /** The gRPC status number, e.g. 5. */
  readonly grpcCode: number;
  /** The server's message (or the transport's, when no server answered). */
  readonly details: string;
  /** The RPC, e.g. "Evaluate". */
  readonly method: string;
  /** How many attempts the client made before giving up (retries included). */
  attempts = 1;

  constructor(code: StatusName, details: string, method = "", options?: { cause?: unknown }) {
    super(`${method ? `${method}: ` : ""}${code}: ${details}`, options);
    this.name = new.target.name;
    this.code = code;
    this.grpcCode = Status[code];
    this.details = details;
    this.method = method;
  }
}

/**
 * The request was refused as INVALID_ARGUMENT: by the server (the message names the field
 * and the limit) or by the client before sending (a value of the wrong type).
 *
 * Never turned into a fail-closed deny: a malformed request is a bug in the caller.
 */
export class InvalidRequestError extends ProctorError {}

/** No answer: the server could not be reached or the deadline passed (after retries). */
export class ProctorUnavailableError extends ProctorError {}

/** An unknown approval or reservation. */
export class NotFoundError extends ProctorError {}

/** A reservation id reused for another reservation. */
export class AlreadyExistsError extends ProctorError {}

/** The call does not fit the state: resolving twice, committing a concurrency lease. */
export class FailedPreconditionError extends ProctorError {}

/** No credential, or one the server did not accept. */
export class UnauthenticatedError extends ProctorError {}

/** A valid caller outside its role, tenant or agents (the message names which). */
export class PermissionDeniedError extends ProctorError {}

/**
 * `reservation(...)` was refused: `refusedBy` names the budget ("client.fail_closed" when
 * Proctor did not answer and the client fails closed).
 */
export class BudgetRefusedError extends ProctorError {
  readonly refusedBy: string;
  readonly reservationId: string;
  /** The refused reservation as the server answered it (every budget's status). */
  readonly reservation: Reservation<number | bigint>;

  constructor(reservation: Reservation<number | bigint>) {
    const why = reservation.reason ? `: ${reservation.reason}` : "";
    super(
      "RESOURCE_EXHAUSTED",
      `budget '${reservation.refusedBy}' refused reservation '${reservation.reservationId}'${why}`,
      "ReserveBudget",
    );
    this.refusedBy = reservation.refusedBy;
    this.reservationId = reservation.reservationId;
    this.reservation = reservation;
  }
}

/** Codes that mean "no answer" rather than "an answer that says no". */
const TRANSPORT: ReadonlySet<StatusName> = new Set<StatusName>([
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "CANCELLED",
  "RESOURCE_EXHAUSTED",
  "UNKNOWN",
  "INTERNAL",
]);

const BY_CODE: Partial<Record<StatusName, typeof ProctorError>> = {
  INVALID_ARGUMENT: InvalidRequestError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  FAILED_PRECONDITION: FailedPreconditionError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
};

/** The typed error for a status. */
export function errorFor(
  code: StatusName,
  details: string,
  method: string,
  cause?: unknown,
): ProctorError {
  const Kind = BY_CODE[code] ?? (TRANSPORT.has(code) ? ProctorUnavailableError : ProctorError);
  return new Kind(code, details || code, method, cause === undefined ? undefined : { cause });
}

/** A grpc-js ServiceError (or anything thrown in a call) as a typed ProctorError. */
export function fromGrpcError(error: unknown, method: string): ProctorError {
  if (error instanceof ProctorError) return error;
  const e = error as { code?: unknown; details?: unknown; message?: unknown };
  const code = typeof e?.code === "number" ? statusName(e.code) : "UNKNOWN";
  const details =
    typeof e?.details === "string" && e.details
      ? e.details
      : typeof e?.message === "string"
        ? e.message
        : String(error);
  return errorFor(code, details, method, error);
}
