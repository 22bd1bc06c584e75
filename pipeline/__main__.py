"""`python -m pipeline …` is the same as `ingest …`."""

from pipeline.cli import main

main()
