// evaluateStream() and the `stream` option against a live `proctor serve` on the seed policy:
// answers in order under many concurrent callers, a bad item in its slot while the stream
// goes on, a server restart in the middle, fail-closed with nothing listening.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { FAIL_CLOSED_RULE_ID, InvalidRequestError, ProctorClient } from "proctor-client";
import { freePort, startProctor } from "./support/proctor.mjs";

const SENDERS = 32;
const PER_SENDER = 25;

let server;
let proctor;

before(async () => {
  server = await startProctor();
  proctor = new ProctorClient(server.address, { deadlineMs: 10_000 });
});

after(async () => {
  proctor?.close();
  assert.equal(await server.dispose(), 0, "proctor serve exits 0 on SIGTERM");
});

// Even senders export in bulk (deny), odd ones delegate internally (allow): an answer that
// reached the wrong caller shows.
function action(i, j) {
  return i % 2
    ? {
        topic: `job.${i}.delegate.internal`,
        delegationPath: ["p", `a${i}`],
        requestId: `${i}-${j}`,
      }
    : {
        topic: `job.${i}.export.bulk`,
        delegationPath: ["p", `a${i}`],
        riskTags: ["bulk-data"],
        requestId: `${i}-${j}`,
      };
}

describe("evaluateStream()", () => {
  test("answers 32 concurrent senders in order, each its own decision", async () => {
    const stream = proctor.evaluateStream();
    try {
      const wrong = [];
      const ids = new Set();
      await Promise.all(
        Array.from({ length: SENDERS }, async (_, i) => {
          for (let j = 0; j < PER_SENDER; j++) {
            const d = await stream.evaluate(action(i, j));
            const want =
              i % 2 ? ["allow", "allow-internal-delegation"] : ["deny", "deny-bulk-export"];
            if (d.decision !== want[0] || d.ruleId !== want[1] || d.requestId !== `${i}-${j}`) {
              wrong.push(`${i}-${j}: ${JSON.stringify(d)}`);
            }
            ids.add(d.decisionId);
          }
        }),
      );
      assert.deepEqual(wrong, []);
      assert.equal(ids.size, SENDERS * PER_SENDER);
    } finally {
      stream.close();
    }
  });

  test("a bad item raises INVALID_ARGUMENT with the server's message; the stream goes on", async () => {
    const stream = proctor.evaluateStream();
    try {
      const [bad, good] = await Promise.allSettled([
        stream.evaluate({ topic: "job.1.delegate.internal", delegationPath: [] }),
        stream.evaluate({ topic: "job.1.delegate.internal", delegationPath: ["p"] }),
      ]);
      assert.equal(bad.status, "rejected");
      assert.ok(bad.reason instanceof InvalidRequestError);
      assert.match(bad.reason.details, /delegation_path/);
      assert.equal(good.status, "fulfilled");
      assert.equal(good.value.decision, "allow");
    } finally {
      stream.close();
    }
  });

  test("the stream option sends evaluate() over one shared stream", async () => {
    const streaming = new ProctorClient(server.address, { stream: true, deadlineMs: 10_000 });
    try {
      const answers = await Promise.all(
        Array.from({ length: 50 }, (_, i) => streaming.evaluate(action(i, 0))),
      );
      assert.deepEqual(
        answers.map((d) => d.decision),
        answers.map((_, i) => (i % 2 ? "allow" : "deny")),
      );
    } finally {
      streaming.close();
    }
  });

  test("a server restart mid-stream is retried on a new stream", async () => {
    const own = await startProctor();
    const client = new ProctorClient(own.address, {
      deadlineMs: 30_000,
      retries: { max: 1000, initialBackoffMs: 20, maxBackoffMs: 200 },
    });
    const stream = client.evaluateStream();
    try {
      assert.equal((await stream.evaluate(action(1, 0))).decision, "allow");
      await own.stop();
      const pending = stream.evaluate(action(3, 1));
      own.start();
      await own.waitServing();
      assert.equal((await pending).decision, "allow");
      assert.equal((await stream.evaluate(action(2, 2))).decision, "deny");
    } finally {
      stream.close();
      client.close();
      await own.dispose();
    }
  });

  test("fail-closed: nothing listening gives a deny that says why", async () => {
    const client = new ProctorClient(`127.0.0.1:${await freePort()}`, {
      failClosed: true,
      deadlineMs: 500,
    });
    try {
      const d = await client.evaluateStream().evaluate(action(1, 0));
      assert.equal(d.decision, "deny");
      assert.equal(d.ruleId, FAIL_CLOSED_RULE_ID);
      assert.equal(d.failClosed, true);
      assert.match(d.reason, /UNAVAILABLE|DEADLINE_EXCEEDED/);
    } finally {
      client.close();
    }
  });
});
