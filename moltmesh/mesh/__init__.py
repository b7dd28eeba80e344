"""The mesh layer: credentials (CA, certificates, join tokens), the wire envelope, sealed UDP
gossip with its key ring, and mutual-TLS TCP streams.

Submodules load lazily; ``import moltmesh.mesh`` pulls in nothing heavy.
"""
