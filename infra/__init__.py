"""Glue to the outside world: settings, Spark, Delta, GX and the event sources.

Importing this package is cheap: heavy libraries are imported inside the modules
that need them, so DAG files can import `infra.settings` at parse time.
"""
