"""What agents see: the MCPServer, its tools and resources, the per-call log."""
