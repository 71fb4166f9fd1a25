"""hackathon: raw recordings and images to scored models (ASR, TTS, face-mask detection)."""

__version__ = "0.1.0"
