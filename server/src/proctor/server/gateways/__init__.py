"""Front doors for callers that never use an SDK (DESIGN section 14).

- `ext_authz.py`: Envoy's external authorization (`envoy.service.auth.v3.Authorization/
  Check`) on the gRPC port, so Envoy, Istio and agentgateway consult Proctor per request.
- `probe.py`: `proctor.v1.Probe/ProbeTopics`, a side-effect-free "could this caller ever
  be allowed?" that the MCP gateway uses to filter tools/list.
- `mcp/`: `proctor mcp-gateway`, an MCP server in front of one upstream MCP server (a
  process of its own, with the `proctor[mcp]` extra).
"""
