// Compiled by `npm run typecheck` (never run): the declarations, as a CommonJS consumer sees them.
import proctorClient = require("proctor-client");

export async function agent(): Promise<string> {
  const proctor = new proctorClient.ProctorClient("127.0.0.1:50051", {
    token: "t",
    tls: { caFile: "ca.pem" },
  });
  const d = await proctor.evaluate({
    topic: "job.1.read.pii",
    delegationPath: ["a"],
    labels: { k: "v" },
  });
  proctor.close();
  return d.reason;
}
