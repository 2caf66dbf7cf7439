// Credentials: the bearer token (option or PROCTOR_TOKEN) on every call, the refusal to send
// it in plaintext off loopback, and TLS / mTLS against a live `proctor serve`.
//
// The token tests read the metadata on a small grpc-js server of their own: Proctor's server
// does not check tokens yet, and what is under test here is what the client sends.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { FAIL_CLOSED_RULE_ID, ProctorClient } from "proctor-client";
import { PACKAGE_DIR, startProctor } from "./support/proctor.mjs";

const ACTION = { topic: "job.1.delegate.internal", delegationPath: ["a"] };

describe("bearer token", () => {
  let server;
  let address;
  const seen = [];

  before(async () => {
    const definition = loadSync("proctor/v1/decisions.proto", {
      includeDirs: [join(PACKAGE_DIR, "proto")],
    });
    const { Decisions } = grpc.loadPackageDefinition(definition).proctor.v1;
    server = new grpc.Server();
    server.addService(Decisions.service, {
      Evaluate(call, done) {
        seen.push(call.metadata.getMap());
        done(null, { decision: "DECISION_ALLOW", ruleId: "recorded" });
      },
    });
    const port = await new Promise((ok, fail) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? fail(e) : ok(p),
      ),
    );
    address = `127.0.0.1:${port}`;
  });

  after(() => server.forceShutdown());

  async function sent(options, env) {
    const saved = process.env.PROCTOR_TOKEN;
    if (env === undefined) delete process.env.PROCTOR_TOKEN;
    else process.env.PROCTOR_TOKEN = env;
    try {
      const proctor = new ProctorClient(address, options);
      try {
        assert.equal((await proctor.evaluate(ACTION)).ruleId, "recorded");
      } finally {
        proctor.close();
      }
    } finally {
      if (saved === undefined) delete process.env.PROCTOR_TOKEN;
      else process.env.PROCTOR_TOKEN = saved;
    }
    return seen.at(-1);
  }

  test("the token option travels as authorization: Bearer", async () => {
    const md = await sent({ token: "tok-123", metadata: { "x-agent-run": "run-9" } });
    assert.equal(md.authorization, "Bearer tok-123");
    assert.equal(md["x-agent-run"], "run-9");
  });

  test("PROCTOR_TOKEN is read when no option is given; the option wins over it", async () => {
    assert.equal((await sent({}, "from-env")).authorization, "Bearer from-env");
    assert.equal(
      (await sent({ token: "from-option" }, "from-env")).authorization,
      "Bearer from-option",
    );
    assert.equal((await sent({}, undefined)).authorization, undefined);
  });

  test("a token is refused in plaintext off loopback, and never echoed", () => {
    assert.throws(
      () => new ProctorClient("10.1.2.3:50051", { token: "s3cret-value" }),
      (e) =>
        e instanceof TypeError &&
        /over plaintext/.test(e.message) &&
        !e.message.includes("s3cret-value"),
    );
    assert.throws(
      () => new ProctorClient("127.0.0.1:50051", { token: "zq7\nxv9" }),
      (e) => e instanceof TypeError && !e.message.includes("zq7"),
    );
    for (const local of [
      "localhost:50051",
      "127.0.0.1:1",
      "[::1]:50051",
      "unix:/run/proctor.sock",
    ]) {
      new ProctorClient(local, { token: "t" }).close();
    }
    // A sidecar or mesh that encrypts the hop: the caller says so.
    new ProctorClient("10.1.2.3:50051", { token: "t", allowInsecureToken: true }).close();
  });
});

describe("TLS and mTLS", { skip: !hasOpenssl() && "needs openssl" }, () => {
  let pki;

  before(() => {
    pki = mkdtempSync(join(tmpdir(), "proctor-node-pki-"));
    const openssl = (...args) =>
      execFileSync("openssl", args, { cwd: pki, stdio: "pipe", timeout: 60_000 });
    openssl(
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=test-ca",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
    );
    writeFileSync(join(pki, "san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    for (const name of ["server", "client"]) {
      openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        `/CN=${name}`,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.csr`,
      );
      openssl(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        `${name}.pem`,
      );
    }
  });

  after(() => rmSync(pki, { recursive: true, force: true }));

  const file = (name) => join(pki, name);
  const pem = (name) => readFileSync(file(name));

  test("TLS: the server's certificate checked against the CA given", async () => {
    const server = await startProctor({
      args: ["--tls-cert", file("server.pem"), "--tls-key", file("server.key")],
      health: { credentials: grpc.credentials.createSsl(pem("ca.pem")) },
    });
    const trusted = new ProctorClient(server.address, { tls: { caFile: file("ca.pem") } });
    const plaintext = new ProctorClient(server.address, { failClosed: true, retries: 0 });
    const systemRoots = new ProctorClient(server.address, {
      tls: true,
      failClosed: true,
      retries: 0,
    });
    try {
      assert.equal((await trusted.evaluate(ACTION)).decision, "allow");
      assert.equal((await plaintext.evaluate(ACTION)).ruleId, FAIL_CLOSED_RULE_ID);
      assert.equal(
        (await systemRoots.evaluate(ACTION)).ruleId,
        FAIL_CLOSED_RULE_ID,
        "a CA nobody trusts",
      );
    } finally {
      for (const c of [trusted, plaintext, systemRoots]) c.close();
      assert.equal(await server.dispose(), 0);
    }
  });

  test("mTLS: a client certificate gets in, none does not", async () => {
    const server = await startProctor({
      args: [
        "--tls-cert",
        file("server.pem"),
        "--tls-key",
        file("server.key"),
        "--client-ca",
        file("ca.pem"),
      ],
      health: {
        credentials: grpc.credentials.createSsl(
          pem("ca.pem"),
          pem("client.key"),
          pem("client.pem"),
        ),
      },
    });
    const withCert = new ProctorClient(server.address, {
      tls: { ca: pem("ca.pem"), cert: pem("client.pem").toString(), keyFile: file("client.key") },
    });
    const withoutCert = new ProctorClient(server.address, {
      tls: { caFile: file("ca.pem") },
      failClosed: true,
      retries: 0,
    });
    try {
      assert.equal((await withCert.evaluate(ACTION)).decision, "allow");
      const d = await withoutCert.evaluate(ACTION);
      assert.equal(d.ruleId, FAIL_CLOSED_RULE_ID);
      assert.match(d.reason, /UNAVAILABLE/);
    } finally {
      withCert.close();
      withoutCert.close();
      assert.equal(await server.dispose(), 0);
    }
  });

  test("half a client certificate is refused up front", () => {
    assert.throws(
      () => new ProctorClient("127.0.0.1:1", { tls: { certFile: file("client.pem") } }),
      /both cert and key/,
    );
    assert.throws(
      () => new ProctorClient("127.0.0.1:1", { tls: { caFile: file("missing.pem") } }),
      /cannot read caFile/,
    );
  });
});

function hasOpenssl() {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
