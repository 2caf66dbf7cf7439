// A real `proctor serve` for the tests: started on a free loopback port with a private audit
// directory, waited on until health says SERVING, stopped by pid.
//
// The executable is $PROCTOR_BIN, or the repository's .venv/bin/proctor (what scripts/test
// installs). `proctorCli(...)` runs the real CLI (e.g. `proctor approvals approve`).
import { execFile, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

const HERE = dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = resolve(HERE, "..", "..");
export const REPO_DIR = resolve(PACKAGE_DIR, "..", "..");
export const SEED_POLICY = join(REPO_DIR, "examples", "safety.yaml");

export function proctorBin() {
  const given = process.env.PROCTOR_BIN;
  // A path is taken from where the tests were started (servers run in their own directory);
  // a bare name is looked up on PATH.
  if (given && !given.includes("/")) return given;
  const bin = given ? resolve(given) : join(REPO_DIR, ".venv", "bin", "proctor");
  if (!existsSync(bin)) {
    throw new Error(
      `no proctor executable at ${bin}: set PROCTOR_BIN, or run bash scripts/test once`,
    );
  }
  return bin;
}

/** A loopback port nothing listens on (the OS's pick, released at once). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const Health = grpc.loadPackageDefinition(loadSync(join(HERE, "health.proto"), { enums: String }))
  .grpc.health.v1.Health;

function healthStatus(address, credentials, options) {
  const client = new Health(address, credentials, options);
  return new Promise((ok) => {
    client.Check({ service: "" }, { deadline: Date.now() + 1000 }, (err, res) => {
      client.close();
      ok(err ? `error: ${err.details}` : res.status);
    });
  });
}

const live = new Set();
process.on("exit", () => {
  // A test that failed before stopping its server must not leave it running.
  for (const server of live) {
    try {
      process.kill(server.proc.pid, "SIGKILL");
    } catch {}
  }
});

export class ProctorServer {
  constructor({ workdir, port, policy, args, health }) {
    this.workdir = workdir;
    this.port = port;
    this.policy = policy;
    this.args = args;
    this.health = health;
    this.proc = null;
    this.logPath = join(workdir, "proctor.stderr");
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  start() {
    const err = openSync(this.logPath, "a");
    const argv = [
      "serve",
      "--policy",
      this.policy,
      "--listen",
      this.address,
      "--audit-dir",
      join(this.workdir, "audit"),
      ...this.args,
    ];
    this.proc = spawn(proctorBin(), argv, { cwd: this.workdir, stdio: ["ignore", "ignore", err] });
    closeSync(err);
    this.exited = new Promise((ok) => {
      this.proc.once("exit", (code, signal) => ok(code ?? signal));
      // Not started at all (no such executable): say so instead of crashing the test process.
      this.proc.once("error", (error) => {
        this.spawnError = error;
        ok(null);
      });
    });
    live.add(this);
    return this;
  }

  log() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  async waitServing(timeoutMs = 30_000) {
    const end = Date.now() + timeoutMs;
    const { credentials = grpc.credentials.createInsecure(), options = {} } = this.health ?? {};
    let last = "";
    while (Date.now() < end) {
      if (this.spawnError)
        throw new Error(`cannot run ${proctorBin()}: ${this.spawnError.message}`);
      if (this.proc.exitCode !== null) {
        throw new Error(`proctor exited with ${this.proc.exitCode} before serving:\n${this.log()}`);
      }
      last = await healthStatus(this.address, credentials, options);
      if (last === "SERVING") return this;
      await new Promise((ok) => setTimeout(ok, 50));
    }
    throw new Error(`proctor not SERVING after ${timeoutMs} ms (${last}):\n${this.log()}`);
  }

  /** SIGTERM by pid and wait for the exit (SIGKILL after 30 s); resolves to the exit code. */
  async stop() {
    if (this.proc === null) return null;
    live.delete(this);
    if (!this.spawnError && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill("SIGTERM");
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), 30_000);
      await this.exited;
      clearTimeout(timer);
    }
    return this.proc.exitCode ?? this.proc.signalCode;
  }

  /** Stop and remove the work directory (its audit and log). */
  async dispose() {
    const code = await this.stop();
    rmSync(this.workdir, { recursive: true, force: true });
    return code;
  }
}

/**
 * Start `proctor serve` (wait: until SERVING). `policy` is a file path, `policyText` the
 * text of one written into the work directory.
 */
export async function startProctor({
  policy = SEED_POLICY,
  policyText,
  args = [],
  port,
  wait = true,
  health,
} = {}) {
  const workdir = mkdtempSync(join(tmpdir(), "proctor-node-"));
  if (policyText !== undefined) {
    policy = join(workdir, "policy.yaml");
    writeFileSync(policy, policyText);
  }
  const server = new ProctorServer({
    workdir,
    port: port ?? (await freePort()),
    policy,
    args,
    health,
  });
  server.start();
  if (wait) {
    try {
      await server.waitServing();
    } catch (error) {
      await server.dispose(); // the error carries the server's log
      throw error;
    }
  }
  return server;
}

/** Run `proctor ARGS... --server ADDRESS` to completion: {code, stdout, stderr}. */
export function proctorCli(server, ...args) {
  return new Promise((ok) => {
    execFile(
      proctorBin(),
      [...args, "--server", server.address],
      { cwd: server.workdir, timeout: 60_000 },
      (error, stdout, stderr) => ok({ code: error ? (error.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Poll `probe` until it returns a truthy value (or throw after timeoutMs). */
export async function eventually(probe, timeoutMs = 20_000, what = "condition") {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 25));
  }
}

/** The seed policy with budgets: the accountability chain's rules, and limits to spend. */
export const BUDGET_POLICY = `${readFileSync(SEED_POLICY, "utf8")}
budgets:
  - {id: run-tokens, unit: tokens, limit: 1000, window: none, scope: run}
  - {id: tenant-tokens, unit: tokens, limit: 100000, window: day, scope: tenant}
  - {id: agent-slots, unit: agents, limit: 1, kind: concurrency, scope: agent}
`;
