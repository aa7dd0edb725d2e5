"""Records and images: the only SQL and the only file writer."""
