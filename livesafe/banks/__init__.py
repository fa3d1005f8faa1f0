"""Banks: a platform's own content, kept as the hashes of what a stream may show of it.

``views`` says which views of a picture are hashed and why; ``media`` reads an
image or a video (from bytes in memory) into those hashes; ``store`` keeps them
in the event store's SQLite file; ``cli`` is ``livesafe bank``.  A bank is
enforced as a list by ``livesafe.lists.sources.bank`` and changed over HTTP
by ``livesafe.moderation.banks_api``.
"""
