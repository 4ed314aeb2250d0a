"""Running it: the dev stack (broker, embedded store), status and the demo."""
