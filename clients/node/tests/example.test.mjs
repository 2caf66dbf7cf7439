// The README's runnable example, run as a reader would: `node examples/accountability-chain.mjs`
// against a live server, with a reviewer approving from the CLI when the agent asks.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { PACKAGE_DIR, SEED_POLICY, proctorCli, startProctor } from "./support/proctor.mjs";

const POLICY = join(PACKAGE_DIR, "examples", "safety-with-budgets.yaml");

test("the example's policy is the seed's, with budgets added", () => {
  assert.ok(readFileSync(POLICY, "utf8").startsWith(readFileSync(SEED_POLICY, "utf8")));
});

test("examples/accountability-chain.mjs walks the chain: deny, approval, allow, budget refusal", async () => {
  const server = await startProctor({ policy: POLICY });
  try {
    const child = spawn(
      process.execPath,
      [join(PACKAGE_DIR, "examples", "accountability-chain.mjs")],
      {
        cwd: PACKAGE_DIR,
        env: { ...process.env, PROCTOR_ADDRESS: server.address },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise((ok) => child.once("exit", ok));
    const lines = [];
    const reviews = [];
    for await (const line of createInterface({ input: child.stdout })) {
      lines.push(line);
      const asked = /proctor approvals approve (apv_\S+)/.exec(line);
      if (asked)
        reviews.push(
          proctorCli(
            server,
            "approvals",
            "approve",
            asked[1],
            "--reviewer",
            "dana",
            "--reason",
            "expected",
          ),
        );
    }
    assert.equal(await exited, 0, stderr);
    assert.equal(reviews.length, 1);
    assert.equal((await reviews[0]).code, 0);
    const out = lines.join("\n");
    assert.match(out, /^export\.bulk: deny \(deny-bulk-export: /m);
    assert.match(out, /^send\.email: require_approval \(approve-external-action: /m);
    assert.match(out, /^send\.email after review: allow \(.*approved by dana: expected/m);
    assert.match(out, /^model call 3: reserved 300 tokens, committed 250$/m);
    assert.match(out, /^model call 4: refused by run-tokens$/m);
    assert.match(out, /^run-tokens: used 750 of 1000, 250 left$/m);
  } finally {
    assert.equal(await server.dispose(), 0);
  }
});
