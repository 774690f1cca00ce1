"""The append-only audit log of admin actions (docs/security.md#audit-log)."""
