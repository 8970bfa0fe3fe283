"""One module per command group of the `modelserve` command line."""
