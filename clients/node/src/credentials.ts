/**
 * Credentials: TLS or mTLS for the channel, a bearer token for every call.
 *
 * The token comes from the `token` option or, when that is absent, from PROCTOR_TOKEN (as
 * for the Python SDK and the CLI). It travels as `authorization: Bearer <token>` metadata.
 * Over plaintext it would be readable by anyone on the path, so a token to a host other than
 * loopback (or a Unix socket) needs TLS, unless `allowInsecureToken` says a sidecar or
 * mesh encrypts that hop.
 */
import { readFileSync } from "node:fs";
import { credentials, type ChannelCredentials, type ChannelOptions } from "@grpc/grpc-js";

/** TLS settings: PEM contents (string or Buffer) or files. */
export interface TlsOptions {
  /** CA certificates to trust instead of the system's roots. */
  ca?: string | Buffer;
  caFile?: string;
  /** The client certificate chain, for mTLS (with key). */
  cert?: string | Buffer;
  certFile?: string;
  /** The client certificate's private key, for mTLS (with cert). */
  key?: string | Buffer;
  keyFile?: string;
  /** The name to check the server's certificate against, when it differs from the target. */
  serverName?: string;
}

function pem(
  value: string | Buffer | undefined,
  file: string | undefined,
  what: string,
): Buffer | null {
  if (value !== undefined && file !== undefined) {
    throw new TypeError(`tls: give ${what} or ${what}File, not both`);
  }
  if (file !== undefined) {
    try {
      return readFileSync(file);
    } catch (error) {
      throw new TypeError(`tls: cannot read ${what}File ${file}: ${(error as Error).message}`);
    }
  }
  if (value === undefined) return null;
  return Buffer.isBuffer(value) ? value : Buffer.from(value);
}

/** Channel credentials and options for the `tls` option (false/absent: plaintext). */
export function channelSecurity(tls: boolean | TlsOptions | undefined): {
  credentials: ChannelCredentials;
  options: ChannelOptions;
  secure: boolean;
} {
  if (!tls) return { credentials: credentials.createInsecure(), options: {}, secure: false };
  const o: TlsOptions = tls === true ? {} : tls;
  const ca = pem(o.ca, o.caFile, "ca");
  const cert = pem(o.cert, o.certFile, "cert");
  const key = pem(o.key, o.keyFile, "key");
  if ((cert === null) !== (key === null)) {
    throw new TypeError("tls: a client certificate (mTLS) needs both cert and key");
  }
  const options: ChannelOptions = {};
  if (o.serverName) {
    options["grpc.ssl_target_name_override"] = o.serverName;
    options["grpc.default_authority"] = o.serverName;
  }
  return { credentials: credentials.createSsl(ca, key, cert), options, secure: true };
}

// Visible ASCII: what an HTTP/2 header value may carry, with no spaces or line breaks.
const TOKEN_SHAPE = /^[\x21-\x7e]+$/;

/** The bearer token to send: the option, else PROCTOR_TOKEN, else none. */
export function resolveToken(option: string | undefined): string | undefined {
  const token = option ?? process.env.PROCTOR_TOKEN;
  if (token === undefined || token === "") return undefined;
  if (!TOKEN_SHAPE.test(token)) {
    // Never echo the token: it is a secret, and this message may end up in a log.
    const from = option === undefined ? "PROCTOR_TOKEN" : "token";
    throw new TypeError(`${from}: a bearer token is visible ASCII with no spaces or line breaks`);
  }
  return token;
}

/** The host of a gRPC target ("host:port", "dns:///host:port", "[::1]:50051", "unix:..."). */
export function targetHost(target: string): string | null {
  if (/^unix(-abstract)?:/.test(target)) return null;
  let rest = target.replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, "");
  rest = rest.split(",")[0] ?? rest;
  const bracketed = /^\[([^\]]+)\]/.exec(rest);
  if (bracketed) return bracketed[1] ?? null;
  const colons = rest.split(":").length - 1;
  if (colons > 1) return rest; // a bare IPv6 address
  return rest.split(":")[0] ?? rest;
}

/** Is the target on this machine (loopback or a Unix socket)? */
export function isLocalTarget(target: string): boolean {
  const host = targetHost(target);
  if (host === null) return true;
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h);
}

/** Refuse a token that would cross the network in plaintext. */
export function checkTokenTransport(
  target: string,
  secure: boolean,
  allowInsecureToken: boolean,
): void {
  if (secure || allowInsecureToken || isLocalTarget(target)) return;
  throw new TypeError(
    `a bearer token to ${target} over plaintext would be readable on the network: ` +
      "give tls (or allowInsecureToken: true when a sidecar or mesh encrypts the hop)",
  );
}
