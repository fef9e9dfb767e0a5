"""jaxemb.checkpoint."""
