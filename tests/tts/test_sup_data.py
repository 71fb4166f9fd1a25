"""Pitch cache keyed by clip content (not file name); NeMo-named pitch files; pitch statistics."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.audio import write_wav

SR = 22050
SETTINGS = {"sample_rate": SR, "fmin": 65.4, "fmax": 600.0, "frame_length": 1024, "algo": "librosa.pyin/nemo-v1"}


def tone(freq: float, seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_cache_follows_content_not_file_name(tmp_path):
    from tasks.tts.sup_data import cached_pitch, pitch_cache_key

    cache = tmp_path / "cache"
    clip = write_wav(tmp_path / "a" / "clip.wav", tone(150), SR)
    pitch, hit = cached_pitch(clip, SETTINGS, cache)
    assert not hit and np.median(pitch[pitch > 0]) == pytest.approx(150, rel=0.03)

    same_content_other_name = write_wav(tmp_path / "b" / "renamed.wav", tone(150), SR)
    again, hit = cached_pitch(same_content_other_name, SETTINGS, cache)
    assert hit and np.array_equal(again, pitch)

    # Re-split/re-cleaned clip written under the OLD name: must not reuse the stale pitch.
    write_wav(clip, tone(220), SR)
    fresh, hit = cached_pitch(clip, SETTINGS, cache)
    assert not hit and np.median(fresh[fresh > 0]) == pytest.approx(220, rel=0.03)

    # Other pyin settings are other cache entries.
    assert pitch_cache_key(clip, SETTINGS) != pitch_cache_key(clip, {**SETTINGS, "fmax": 1000.0})


def test_pitch_file_names_are_nemos(tmp_path):
    from tasks.tts.sup_data import nemo_pitch_ids

    paths = [str(tmp_path / "wavs" / "train" / "00_g0.wav"), str(tmp_path / "wavs" / "val" / "00_g0.wav")]
    assert nemo_pitch_ids(paths) == ["train_00_g0", "val_00_g0"]  # same basename, distinct ids


def test_pitch_statistics_use_voiced_frames_only():
    from tasks.tts.sup_data import pitch_statistics

    stats = pitch_statistics([np.array([0, 100, 0, 200], dtype=np.float32), np.array([150, 0], dtype=np.float32)])
    assert stats["pitch_mean"] == pytest.approx(150) and stats["voiced_frames"] == 3


def test_pitch_kernels_are_compiled_once_before_the_workers(tmp_path):
    """The real probe: librosa.pyin's numba kernels compile (or load from cache) in a subprocess."""
    from tasks.tts.sup_data import warm_pitch_kernels

    warm_pitch_kernels({"sample_rate": 22050, "fmin": 65.0, "fmax": 600.0, "frame_length": 1024}, tmp_path)
    assert (tmp_path / ".pyin-warmup.lock").exists()


def test_a_crashing_numba_cache_is_deleted_and_compiled_again(tmp_path):
    """A mismatched numba cache pair makes pyin die with SIGSEGV: the warm-up deletes the cache and retries.
    The probe stands in for pyin: it crashes while the (fake) stale cache file exists."""
    import pytest

    from hackathon.core.errors import HackathonError
    from tasks.tts.sup_data import warm_pitch_kernels

    stale = tmp_path / "librosa" / "__pycache__" / "pitch._pi-1.py311.1.nbc"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"mismatched")
    probe = f"import os, signal, pathlib\nif pathlib.Path({str(stale)!r}).exists(): os.kill(os.getpid(), signal.SIGSEGV)\n"
    settings = {"sample_rate": 22050, "fmin": 65.0, "fmax": 600.0, "frame_length": 1024}
    warm_pitch_kernels(settings, tmp_path / "lock", probe=probe, cache_files=lambda: [stale])
    assert not stale.exists()

    always = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    with pytest.raises(HackathonError, match="librosa.pyin cannot run") as err:
        warm_pitch_kernels(settings, tmp_path / "lock", probe=always, cache_files=lambda: [])
    assert "nbi" in err.value.fix
