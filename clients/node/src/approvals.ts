/**
 * Getting and waiting on approvals, and how evaluateAndWait settles after the wait.
 *
 * waitForApproval asks the server to hold each WaitApproval until the approval is resolved or
 * shortly before the call's deadline (timeout_seconds 0), in slices of at most 30 s so no
 * proxy on the way sees one call idle for long, and loops until its own time is up. The
 * answer is the approval's state then: still "pending" when nobody resolved it in time.
 */
import { performance } from "node:perf_hooks";
import { Check, approvalFrom } from "./convert";
import { ProctorError } from "./errors";
import type { Rpc } from "./rpc";
import type { Approval, CallOptions, Decision, WaitOptions } from "./types";

export const DEFAULT_WAIT_MS = 60_000;
const SLICE_MS = 30_000;
// The server answers the still-pending approval 0.1 s before a call's deadline: room for it.
const ANSWER_MARGIN_MS = 100;

export async function approvalRequest(
  rpc: Rpc,
  approval: string | { approvalId: string },
  options: CallOptions,
): Promise<Approval> {
  const c = new Check("GetApproval");
  const approvalId =
    typeof approval === "string" ? approval : c.str("approvalId", c.object(approval).approvalId);
  return approvalFrom(await rpc.call("Approvals", "GetApproval", { approvalId }, options));
}

export async function waitForApproval(
  rpc: Rpc,
  approvalId: string,
  options: WaitOptions,
): Promise<Approval> {
  const approval = new Check("WaitApproval").str("approvalId", approvalId);
  const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
  if (!(timeoutMs >= 0)) throw new TypeError(`timeoutMs: expected a number >= 0, got ${timeoutMs}`);
  const end = performance.now() + timeoutMs;
  const { signal } = options;
  for (;;) {
    const left = end - performance.now();
    if (left <= 0) return approvalRequest(rpc, approval, { signal });
    const slice = Math.min(left, SLICE_MS);
    let state: Approval;
    try {
      const request = { approvalId: approval, timeoutSeconds: "0" };
      const deadlineMs = slice + ANSWER_MARGIN_MS;
      state = approvalFrom(
        await rpc.call("Approvals", "WaitApproval", request, { deadlineMs, signal }),
      );
    } catch (error) {
      // A busy server or network ate the margin: the wait is over for this slice, not failed.
      if (error instanceof ProctorError && error.code === "DEADLINE_EXCEEDED") continue;
      throw error;
    }
    if (state.status !== "pending" || slice === left) return state;
  }
}

/**
 * evaluateAndWait's answer once the wait is over, or null when the approval was granted and
 * the action should be evaluated again presenting it.
 */
export function settle(first: Decision, state: Approval, waitedMs: number): Decision | null {
  const id = state.approvalId;
  switch (state.status) {
    case "approved":
      return null;
    case "pending":
      return {
        ...first,
        reason: `${first.reason} (approval ${id} still pending after ${Math.round(waitedMs / 1000)}s)`,
      };
    case "denied": {
      const by = state.reviewer ? ` by ${state.reviewer}` : "";
      const why = state.resolutionReason ? `: ${state.resolutionReason}` : "";
      return {
        ...first,
        decision: "deny",
        reason: `${first.reason} (approval ${id} denied${by}${why})`,
      };
    }
    case "expired":
      return {
        ...first,
        decision: "deny",
        reason: `${first.reason} (approval ${id} expired without being used)`,
      };
    default:
      return {
        ...first,
        decision: "deny",
        reason: `${first.reason} (approval ${id} is ${state.status})`,
      };
  }
}
