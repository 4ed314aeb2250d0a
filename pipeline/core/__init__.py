"""Shared plumbing every stage uses: settings, errors, Kafka clients, topics, lag, the store, migrations, times, logs, metrics, runtime."""
