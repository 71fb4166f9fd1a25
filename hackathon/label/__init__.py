"""`hackathon label studio`: the team's Label Studio server (own venv, loopback, local files), its two
projects, pre-labels from our runs, export and status (server.py: venv + process; studio.py: the HTTP API)."""
