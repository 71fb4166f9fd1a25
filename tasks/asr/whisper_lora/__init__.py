"""Second ASR backend: pretrained Whisper fine-tuned with LoRA (peft); see pipeline.py."""
