"""Student adapters: small modules that refresh a stale teacher signal."""
