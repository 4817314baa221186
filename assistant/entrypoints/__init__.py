"""The doors: the `assistant` command line and the HTTP API (both thin layers over the SDK face)."""
