"""jaxemb.losses."""
