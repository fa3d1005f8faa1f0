"""What moderation keeps: events, the webhook outbox, the audit log, the allow list, revoked stream keys.

``records``: the records passed in and out; ``sqlite_db``: the SQLite database (schema, transactions,
checkpoints); ``sqlite``: the store on it.
"""
