/**
 * The gRPC service constructors, loaded at run time from the package's copy of proto/.
 *
 * @grpc/proto-loader reads proto/proctor/v1/*.proto (copied from the repository by
 * `npm run sync-proto`; a test fails when the copy is stale). Fields arrive in camelCase,
 * enums as their names, int64 as decimal strings (so nothing above 2^53 is rounded before
 * convert.ts decides on number or bigint), and unset fields with their defaults.
 */
import { join } from "node:path";
import { loadPackageDefinition, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

export const PROTO_DIR = join(__dirname, "..", "proto");
export const PROTO_FILES = ["admin", "approvals", "audit", "budgets", "decisions"].map(
  (name) => `proctor/v1/${name}.proto`,
);

export type ServiceName = "Decisions" | "Budgets" | "Approvals";

let loaded: Record<ServiceName, ServiceClientConstructor> | undefined;

/** The service client constructors of proctor.v1 (loaded once per process). */
export function services(): Record<ServiceName, ServiceClientConstructor> {
  if (loaded === undefined) {
    const definition = loadSync(PROTO_FILES, {
      includeDirs: [PROTO_DIR],
      keepCase: false,
      longs: String,
      enums: String,
      defaults: true,
      arrays: true,
      objects: true,
      oneofs: true,
    });
    const v1 = (loadPackageDefinition(definition) as any).proctor.v1;
    loaded = { Decisions: v1.Decisions, Budgets: v1.Budgets, Approvals: v1.Approvals };
  }
  return loaded;
}
