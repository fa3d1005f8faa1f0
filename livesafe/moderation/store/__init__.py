"""What moderation keeps: events, the webhook outbox, the audit log, the allow list, revoked stream keys.

``interfaces``: the parts callers type against (event log, outbox, audit log, access lists) and what an
implementation must guarantee; ``records``: what passes in and out of them; ``sqlite``: the parts on one
SQLite file, over ``sqlite_db`` (its connection, schema, transactions and WAL checkpointer).
"""
