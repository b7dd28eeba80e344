"""Pure, sans-I/O consensus cores (Raft, SWIM) and their message codecs.

Nothing in this package reads a clock, opens a socket, sleeps or spawns a task: drivers in
``moltmesh`` (asyncio) and ``sim`` (virtual clock) feed the cores events and carry out what the
cores ask for. See ``consensus.core`` for the protocol every core follows.
"""
