"""Security plane: tenants, hashed API keys and the in-memory keyring that checks them."""
