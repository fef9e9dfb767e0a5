"""jaxemb.encoders."""
