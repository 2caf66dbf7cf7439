/**
 * Decisions.EvaluateStream: one long-lived bidirectional stream shared by every caller.
 *
 * A unary call costs a full gRPC call's overhead; a message on an open stream costs less.
 * The server answers in request order, so each open stream keeps a FIFO of waiting callers:
 * a caller is queued and its request written together (no await between), and each answer
 * goes to the caller at the head. A caller whose deadline passes stops waiting; its answer,
 * when it comes, is dropped.
 *
 * When the stream ends or breaks (a server restart), every caller still waiting gets
 * UNAVAILABLE, which the client's retry loop retries; the next call opens a new stream. A
 * status the server chose (PERMISSION_DENIED at open, say) is kept.
 */
import { performance } from "node:perf_hooks";
import { decisionFrom, evaluateMessage, failClosedDecision } from "./convert";
import { ProctorError, errorFor, statusName, type StatusName } from "./errors";
import type { Rpc } from "./rpc";
import type { CallOptions, Decision, EvaluateRequest } from "./types";

const METHOD = "EvaluateStream";
/** Stream failures that say nothing about the request: the caller may try again. */
const BROKEN = new Set<StatusName>(["UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL"]);

interface Waiter {
  resolve: (item: any) => void;
  reject: (error: ProctorError) => void;
  settled: boolean;
}

interface Open {
  call: any;
  waiting: Waiter[];
}

function broken(error: any): ProctorError {
  const code: StatusName = typeof error?.code === "number" ? statusName(error.code) : "UNKNOWN";
  const details: string = error?.details || error?.message || code;
  if (!BROKEN.has(code)) return errorFor(code, details, METHOD, error);
  return errorFor("UNAVAILABLE", `stream broke (${code}: ${details})`, METHOD, error);
}

/**
 * What `ProctorClient.evaluateStream()` returns: `evaluate()` over one open EvaluateStream,
 * from any number of concurrent callers, with the client's deadlines, retries and
 * fail-closed behaviour. `close()` ends the stream (the client's close() does too).
 */
export class DecisionStream {
  private open: Open | undefined;
  private closed = false;

  constructor(
    private readonly rpc: Rpc,
    private readonly failClosed: boolean,
  ) {}

  /** Decide one action on the stream; the same answer (and errors) as ProctorClient.evaluate. */
  async evaluate(req: EvaluateRequest, options: CallOptions = {}): Promise<Decision> {
    const message = evaluateMessage(req, METHOD);
    const requestId = message.requestId as string;
    let item: any;
    try {
      item = await this.rpc.retrying(METHOD, options, (end) => this.send(message, end));
    } catch (error) {
      if (this.failClosed && error instanceof ProctorError && error.code !== "INVALID_ARGUMENT") {
        const tries = error.attempts > 1 ? ` after ${error.attempts} attempts` : "";
        return failClosedDecision(`${error.code}${tries}: ${error.details}`, requestId);
      }
      throw error;
    }
    if (item.result === "error") {
      throw errorFor(statusName(item.error.code), item.error.message, METHOD);
    }
    return decisionFrom(item.response, requestId);
  }

  /** End the stream; callers still waiting get CANCELLED, later calls too. */
  close(): void {
    this.closed = true;
    const open = this.open;
    this.open = undefined;
    if (open !== undefined) {
      this.fail(open, errorFor("CANCELLED", "the stream is closed", METHOD));
      open.call.cancel();
    }
  }

  private send(message: Record<string, unknown>, end: number): Promise<any> {
    if (this.closed || this.rpc.isClosed) {
      return Promise.reject(errorFor("CANCELLED", "the stream is closed", METHOD));
    }
    const open = this.open ?? this.start();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, settled: false };
      open.waiting.push(waiter);
      open.call.write(message);
      if (end !== Infinity) {
        const ms = Math.max(0, end - performance.now());
        const timer = setTimeout(() => {
          if (waiter.settled) return;
          waiter.settled = true; // its answer, when it comes, is dropped
          reject(errorFor("DEADLINE_EXCEEDED", `no answer on the stream within ${ms} ms`, METHOD));
        }, ms);
        waiter.resolve = (item) => {
          clearTimeout(timer);
          resolve(item);
        };
        waiter.reject = (error) => {
          clearTimeout(timer);
          reject(error);
        };
      }
    });
  }

  private start(): Open {
    const call = this.rpc.duplex("Decisions", METHOD);
    const open: Open = { call, waiting: [] };
    this.open = open;
    call.on("data", (item: any) => {
      const waiter = open.waiting.shift();
      if (waiter !== undefined && !waiter.settled) {
        waiter.settled = true;
        waiter.resolve(item);
      }
    });
    call.on("error", (error: any) => this.fail(open, broken(error)));
    call.on("end", () =>
      this.fail(open, errorFor("UNAVAILABLE", "the server ended the stream", METHOD)),
    );
    return open;
  }

  private fail(open: Open, error: ProctorError): void {
    if (this.open === open) this.open = undefined;
    const left = open.waiting.splice(0);
    for (const waiter of left) {
      if (waiter.settled) continue;
      waiter.settled = true;
      waiter.reject(error);
    }
    try {
      open.call.end();
    } catch {
      // already ended
    }
  }
}
