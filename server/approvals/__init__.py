"""Approvals: require_approval as a workflow bound to the exact action."""
