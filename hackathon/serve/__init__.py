"""Serving room: `hackathon serve` (Triton with asr, tts, detect, gate), the gate decision, input checks,
the Triton model repository for the NGC container (`hackathon deploy triton-repo`). See docs/SERVING.md."""
