"""douyin-ingest: Douyin share links -> normalized PostgreSQL tables."""
