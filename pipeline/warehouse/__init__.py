"""The ClickHouse side: sink, evidence holds, retention, evidence packages, partner imports."""
