"""douyin-ingest: Douyin share links -> normalized PostgreSQL tables."""

__version__ = "0.1.0"
