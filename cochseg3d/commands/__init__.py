"""One module per CLI verb (see cochseg3d.cli)."""
