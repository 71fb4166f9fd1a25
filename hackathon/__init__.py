"""hackathon: raw recordings and images to scored models (ASR, TTS, face-mask detection).
`hackathon.run(...)` (hackathon/api.py) is imported on first use: `import hackathon` stays instant."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("run", "Run"):
        from hackathon import api

        return getattr(api, name)
    raise AttributeError(f"module 'hackathon' has no attribute {name!r}")
