"""Deterministic discrete-event simulator that drives moltmesh's real consensus cores.

Layers (each module has one job):

- ``sim.kernel``   — virtual clock and (time, seq) event heap; ``derive_rng(seed, concern)``.
- ``sim.clock``    — per-node drifting, offset clocks (a node's ``now`` is skewed virtual time).
- ``sim.network``  — seeded packet simulator: delay, jitter, loss, duplication, reordering,
  bandwidth, symmetric/asymmetric partitions.
- ``sim.adapter``  — the ``Adapter`` protocol one core kind implements (persist, crash, boot,
  route, apply, advance, codec) and ``SimNode``, the per-node host state.
- ``sim.cluster``  — the generic driver ``Cluster`` (sleep-until-``next_deadline`` timers,
  persist-before-send, crash/restart, wire mode, trace hash) and the ``Observer`` hooks that
  checkers, clients and metrics use.
- ``sim.faults``   — ``FaultInjector``: random crashes/restarts and partitions from a ``FaultSpec``.
- ``sim.scenario`` — scenarios as data (``Scenario``/``Phase``/``LinkSpec``/``FaultSpec``/
  ``ClientSpec``, dict/TOML round trip, presets).
- ``sim.trace``    — the trace hash and the tail printed with failures.
- ``sim.sweep``    — many seeds over worker processes with a progress bar.
- ``sim.cli``      — ``python -m sim``; subcommands come from ``sim.raft_cli``, ``sim.swim_cli``,
  ``sim.kv_cli``.
- Raft: ``sim.raft_adapter``, ``sim.raft_checkers``, ``sim.raft_clients``, ``sim.raft_run``.
- Replicated KV: ``sim.kv_adapter`` (KV state machine, snapshots), ``sim.kv_clients`` (history),
  ``sim.kv_membership`` (changes, transfers), ``sim.kv_watchers``, ``sim.kv_run``;
  ``sim.linearizability`` (the WGL checker run at the end of every KV seed).

``sim`` imports ``consensus`` (and later ``moltmesh.policy``), never sockets, asyncio or clocks.
"""
