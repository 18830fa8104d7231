"""The shared core below the gateway and the stubs: the bus, the event
model, tokens (auth, JWKS), trace context, retry and the consume loop.

Imports nothing of `gateway`, `backend_stubs`, `web` or `loadtest`
(import-linter contracts in pyproject.toml; `make imports`)."""
