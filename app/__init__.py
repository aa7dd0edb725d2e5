"""pixazo-mcp: a remote MCP server for Pixazo's text-to-image API."""

__version__ = "0.1.0"
