"""GPU booking: pure ledger rules, quotas, storage and the HTTP API."""
