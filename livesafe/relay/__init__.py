"""The live relay: WHIP ingest, StreamGuard per stream, encode once, WHEP fan-out."""
