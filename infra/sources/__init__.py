"""Event sources: the synthetic ads world (default) and files a user brings."""
