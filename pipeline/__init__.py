"""The pipeline steps: typed functions of (config, URIs, ds) that own one partition."""
