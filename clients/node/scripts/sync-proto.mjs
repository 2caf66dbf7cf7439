// Copy the repository's proto/ into this package (npm run sync-proto).
//
// The package ships its own copy, so an installed package needs no checkout; the copy is
// committed and tests/package.test.mjs fails when it differs from ../../proto.
import { cpSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const source = join(here, "..", "..", "proto", "proctor");
const target = join(here, "proto", "proctor");
rmSync(target, { recursive: true, force: true });
cpSync(source, target, {
  recursive: true,
  filter: (p) => statSync(p).isDirectory() || p.endsWith(".proto"),
});
console.log(`copied ${source} -> ${target}`);
