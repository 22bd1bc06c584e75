"""PostgreSQL: schema, loading, bookkeeping."""

from pipeline.db import params as params  # registers the `Utf8Text` dumper with psycopg
