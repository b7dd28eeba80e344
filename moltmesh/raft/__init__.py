"""Raft over the mesh: durable log, driver, automatic voters and the cluster KV (DESIGN §3)."""
