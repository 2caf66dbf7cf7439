// The package as a consumer sees it: the proto copy in step with the repository's proto/, and
// the same API (the same classes) whether it is imported as an ES module or required.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";
import * as esm from "proctor-client";
import { PACKAGE_DIR, REPO_DIR } from "./support/proctor.mjs";

function protos(dir) {
  return Object.fromEntries(
    readdirSync(dir)
      .filter((f) => f.endsWith(".proto"))
      .sort()
      .map((f) => [f, readFileSync(join(dir, f), "utf8")]),
  );
}

test("the package's proto copy is the repository's proto/ (else: npm run sync-proto)", () => {
  const source = protos(join(REPO_DIR, "proto", "proctor", "v1"));
  const copy = protos(join(PACKAGE_DIR, "proto", "proctor", "v1"));
  assert.ok(Object.keys(source).length > 0, "no protos found in the repository");
  assert.deepEqual(Object.keys(copy), Object.keys(source), "files differ; run: npm run sync-proto");
  for (const name of Object.keys(source)) {
    assert.ok(
      copy[name] === source[name],
      `proto/proctor/v1/${name} is stale; run: npm run sync-proto`,
    );
  }
});

test("import and require give the same classes", () => {
  const cjs = createRequire(import.meta.url)("proctor-client");
  assert.deepEqual(Object.keys(esm).sort(), Object.keys(cjs).sort());
  for (const name of Object.keys(cjs)) assert.equal(esm[name], cjs[name], name);
  const e = new cjs.InvalidRequestError("INVALID_ARGUMENT", "topic: must not be empty", "Evaluate");
  assert.ok(e instanceof esm.ProctorError);
  assert.equal(e.grpcCode, 3);
});

test("the API of the issue is exported", () => {
  for (const name of [
    "ProctorClient",
    "ProctorError",
    "InvalidRequestError",
    "ProctorUnavailableError",
    "BudgetRefusedError",
    "NotFoundError",
    "FAIL_CLOSED_RULE_ID",
  ]) {
    assert.ok(name in esm, name);
  }
  const methods = Object.getOwnPropertyNames(esm.ProctorClient.prototype);
  for (const name of [
    "evaluate",
    "evaluateBatch",
    "evaluateAndWait",
    "reserveBudget",
    "commitBudget",
    "releaseBudget",
    "getBudget",
    "reservation",
    "getApproval",
    "waitForApproval",
    "close",
  ]) {
    assert.ok(methods.includes(name), name);
  }
});
