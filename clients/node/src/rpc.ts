/**
 * One channel for every service, and the call loop every method goes through:
 * credentials, the overall deadline, retries with backoff, typed errors, cancellation.
 */
import { performance } from "node:perf_hooks";
import {
  Channel,
  Metadata,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ServiceError,
} from "@grpc/grpc-js";
import { ProctorError, fromGrpcError } from "./errors";
import type { RetryEvent, RetryPolicy } from "./retry";
import { services, type ServiceName } from "./stubs";
import type { CallOptions } from "./types";

export const MAX_MESSAGE_BYTES = 1 << 20;

/** Channel defaults; the caller's channelOptions override them. */
export const CHANNEL_DEFAULTS: ChannelOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": 30_000,
  // A restarted server is found within a second or two rather than grpc-js's default of up
  // to two minutes of reconnect backoff; the retry loop's own pauses stay jittered.
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 2_000,
};

export interface RpcSettings {
  target: string;
  credentials: ChannelCredentials;
  channelOptions: ChannelOptions;
  token: string | undefined;
  metadata: Readonly<Record<string, string>>;
  retry: RetryPolicy;
  deadlineMs: number | null;
  onRetry: ((event: RetryEvent) => void) | undefined;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export class Rpc {
  private readonly channel: Channel;
  private readonly clients = new Map<ServiceName, Client>();
  private closed = false;

  constructor(private readonly settings: RpcSettings) {
    this.channel = new Channel(settings.target, settings.credentials, settings.channelOptions);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.close();
  }

  /** The channel's overall deadline for a call, in ms (null: none). */
  deadlineFor(options: CallOptions): number | null {
    return options.deadlineMs === undefined ? this.settings.deadlineMs : options.deadlineMs;
  }

  /**
   * Call `service.method` with `request`; retry per the retry policy while the deadline
   * allows; throw a typed ProctorError (with `attempts`) or, when aborted, the signal's reason.
   */
  async call(
    service: ServiceName,
    method: string,
    request: unknown,
    options: CallOptions = {},
  ): Promise<any> {
    return this.retrying(method, options, (end) =>
      this.once(service, method, request, end, options.signal),
    );
  }

  /**
   * The retry loop of `call`, around any attempt: `once(end)` gets the overall deadline
   * (performance.now() ms; Infinity for none) and rejects with a grpc-js error or a
   * ProctorError; UNAVAILABLE is retried per the policy while the deadline allows.
   */
  async retrying<T>(
    method: string,
    options: CallOptions,
    once: (end: number) => Promise<T>,
  ): Promise<T> {
    const deadlineMs = this.deadlineFor(options);
    const end = deadlineMs === null ? Infinity : performance.now() + Math.max(0, deadlineMs);
    const { retry, onRetry } = this.settings;
    for (let attempt = 1; ; attempt++) {
      try {
        return await once(end);
      } catch (raw) {
        if (options.signal?.aborted) throw abortReason(options.signal);
        const error = fromGrpcError(raw, method);
        error.attempts = attempt;
        const delayMs = retry.backoffMs(attempt);
        if (!retry.shouldRetry(error.code, attempt) || end - performance.now() <= delayMs) {
          throw error;
        }
        onRetry?.({ method, attempt, code: error.code, details: error.details, delayMs });
        await sleep(delayMs, options.signal);
      }
    }
  }

  /** Open a bidirectional stream of `service.method` with the client's metadata. */
  duplex(service: ServiceName, method: string): any {
    if (this.closed) throw new ProctorError("CANCELLED", "the client is closed", method);
    return (this.client(service) as any)[method](this.metadata());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private client(service: ServiceName): Client {
    let client = this.clients.get(service);
    if (client === undefined) {
      const Ctor = services()[service];
      client = new Ctor(this.settings.target, this.settings.credentials, {
        channelOverride: this.channel,
      });
      this.clients.set(service, client);
    }
    return client;
  }

  private metadata(): Metadata {
    const md = new Metadata();
    for (const [key, value] of Object.entries(this.settings.metadata)) md.set(key, value);
    if (this.settings.token !== undefined) md.set("authorization", `Bearer ${this.settings.token}`);
    return md;
  }

  private once(
    service: ServiceName,
    method: string,
    request: unknown,
    end: number,
    signal: AbortSignal | undefined,
  ): Promise<any> {
    if (this.closed) {
      return Promise.reject(new ProctorError("CANCELLED", "the client is closed", method));
    }
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const client = this.client(service) as any;
    const deadline =
      end === Infinity ? Infinity : Date.now() + Math.max(0, end - performance.now());
    return new Promise((resolve, reject) => {
      let onAbort: (() => void) | undefined;
      const call = client[method](
        request,
        this.metadata(),
        { deadline },
        (error: ServiceError | null, response: unknown) => {
          if (onAbort) signal?.removeEventListener("abort", onAbort);
          if (error) reject(error);
          else resolve(response);
        },
      );
      if (signal) {
        onAbort = () => call.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
      }
    });
  }
}
