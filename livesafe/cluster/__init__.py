"""Past one process: livesafe nodes sharing one Redis (origin/edge, as OvenMediaEngine and LiveKit do it).

Without ``[cluster]`` none of this runs: one process, SQLite, nothing else.  With it:

- ``nodes``: each node registers its advertised URL, capacity and load, refreshed
  every second, gone ~5 s after its last refresh.
- ``leases``: exactly one node, the stream's *origin*, decodes, guards and encodes
  it, holding a lease (``SET NX PX``, renewed well inside its TTL) with a fencing
  token; a node that finds its lease taken cuts the stream.
- ``auth``: nodes sign what they ask of each other with a shared secret, so a
  forged or replayed inter-node request is refused.

Redis holds only what nodes must agree on; media never passes through it, and
unguarded media never leaves the origin.
"""
