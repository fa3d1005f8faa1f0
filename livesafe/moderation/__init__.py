"""Moderation: what moderators see and do about a stream (events, feed, webhooks, actions, audit, reports)."""
