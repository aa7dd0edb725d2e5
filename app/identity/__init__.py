"""Who a caller is: team tokens (and later the OAuth authorization server)."""
