"""The immutable audit trail and the auditors' report."""
