// What the SDK costs per call: Evaluate through ProctorClient beside the same call on a bare
// grpc-js client (the same proto-loader stubs, a prepared request, no checks, no conversion),
// against one live `proctor serve`, in alternating rounds.
//
//   PROCTOR_BIN=../../.venv/bin/proctor node bench/evaluate.mjs [--rounds 10] [--calls 500]
//       [--inflight 1] [--out FILE]
//
// Prints a JSON summary (and writes it to --out, else to a file in the OS temp directory).
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ProctorClient } from "proctor-client";
import { PACKAGE_DIR, startProctor } from "../tests/support/proctor.mjs";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "10" },
    calls: { type: "string", default: "500" },
    inflight: { type: "string", default: "1" },
    out: { type: "string" },
  },
});
const rounds = Number(values.rounds);
const calls = Number(values.calls);
const inflight = Number(values.inflight);

const ACTION = {
  topic: "job.42.delegate.internal",
  delegationPath: ["orchestrator", "research-agent", "etl-7"],
  tenant: "acme",
  runId: "run-bench",
};

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * `calls` calls, `inflight` at a time: per-call latencies (µs), calls per second, and this
 * process's CPU per call (µs): the client's own cost, which the host's load moves far less.
 */
async function drive(call) {
  const latencies = [];
  let next = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  async function worker() {
    while (next < calls) {
      next += 1;
      const t = performance.now();
      await call();
      latencies.push((performance.now() - t) * 1000);
    }
  }
  await Promise.all(Array.from({ length: inflight }, worker));
  const perSecond = calls / ((performance.now() - started) / 1000);
  const used = process.cpuUsage(cpu);
  return { latencies, perSecond, cpuPerCall: (used.user + used.system) / calls };
}

const server = await startProctor();
const sdk = new ProctorClient(server.address, { deadlineMs: 10_000 });
const definition = loadSync("proctor/v1/decisions.proto", {
  includeDirs: [join(PACKAGE_DIR, "proto")],
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { Decisions } = grpc.loadPackageDefinition(definition).proctor.v1;
const bare = new Decisions(server.address, grpc.credentials.createInsecure());
const prepared = { ...ACTION, requestId: "bench-request" };
const bareCall = () =>
  new Promise((ok, fail) =>
    bare.Evaluate(prepared, { deadline: Date.now() + 10_000 }, (e, r) => (e ? fail(e) : ok(r))),
  );
const sdkCall = () => sdk.evaluate(ACTION);

try {
  for (let i = 0; i < 200; i++) await Promise.all([sdkCall(), bareCall()]); // warm both
  const sides = { sdk: { lat: [], rates: [], cpu: [] }, bare: { lat: [], rates: [], cpu: [] } };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? ["bare", "sdk"] : ["sdk", "bare"];
    for (const side of order) {
      const { latencies, perSecond, cpuPerCall } = await drive(side === "sdk" ? sdkCall : bareCall);
      sides[side].lat.push(...latencies);
      sides[side].rates.push(perSecond);
      sides[side].cpu.push(cpuPerCall);
    }
  }
  const summary = { rounds, calls, inflight, node: process.version, server: server.address };
  for (const [side, { lat, rates, cpu }] of Object.entries(sides)) {
    for (const list of [lat, rates, cpu]) list.sort((a, b) => a - b);
    summary[side] = {
      p50_us: Math.round(percentile(lat, 50)),
      p99_us: Math.round(percentile(lat, 99)),
      calls_per_s_median: Math.round(percentile(rates, 50)),
      client_cpu_us_per_call_median: Math.round(percentile(cpu, 50)),
    };
  }
  summary.sdk_cpu_us_per_call_over_bare =
    summary.sdk.client_cpu_us_per_call_median - summary.bare.client_cpu_us_per_call_median;
  summary.ratio_p50 = +(summary.sdk.p50_us / summary.bare.p50_us).toFixed(3);
  summary.ratio_p99 = +(summary.sdk.p99_us / summary.bare.p99_us).toFixed(3);
  const out = values.out ?? join(tmpdir(), `node-evaluate-bench-${Date.now()}.json`);
  writeFileSync(out, JSON.stringify(summary, null, 2) + "\n");
  console.log(JSON.stringify(summary, null, 2));
  console.log(`written to ${out}`);
} finally {
  sdk.close();
  bare.close();
  await server.dispose();
}
