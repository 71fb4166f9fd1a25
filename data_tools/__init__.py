"""Data tools shared by the task pipelines: audio IO and manifests, demo data, ingest/validate/split."""
