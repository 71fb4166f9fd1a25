"""Model stage: the network training starts from, with a vocabulary that covers the data.

Sources (`model.init`): `scratch` (the spec's QuartzNet-style char CTC config), a local `.nemo` file
(fine-tune), or a NeMo pretrained name (downloaded: needs the network). The vocabulary is kept when it
covers the training transcripts; otherwise the decoder is replaced (`change_vocabulary`, i.e. the
output layer is re-initialised and learns the new characters from the data). Characters any split
uses that the final vocabulary lacks are reported in model/vocabulary.json and the log.

Writes model/init.nemo and model/vocabulary.json. Later stages restore init.nemo (never memory).
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.atomic import atomic_path, atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from tasks.asr import vocabulary as vocab_tools

INIT_MODEL = "model/init.nemo"
VOCABULARY_FILE = "model/vocabulary.json"
SCRATCH = "scratch"


# ---------------------------------------------------------------- NeMo config helpers

def dataset_config(cfg, manifest: Path | str, labels, batch_size: int, shuffle: bool, training: bool) -> dict:
    """NeMo AudioToCharDataset config. `parser: base` keeps hanzi (the default `en` parser empties them)."""
    from omegaconf import OmegaConf

    out = {
        "manifest_filepath": str(manifest),
        "labels": list(labels),
        "sample_rate": int(cfg.data.sample_rate),
        "batch_size": int(batch_size),
        "shuffle": bool(shuffle),
        "num_workers": int(cfg.data.num_workers),
        "pin_memory": False,
        "parser": "base",
        "normalize_transcripts": False,
        "trim_silence": False,
    }
    if training:  # evaluation must score every clip, so the duration filter only applies to training
        out.update(max_duration=float(cfg.data.max_duration), min_duration=float(cfg.data.min_duration))
    return OmegaConf.create(out)


def scratch_model_config(cfg, labels):
    """The spec's `model.nemo` section completed with labels and decoder size."""
    from omegaconf import OmegaConf, open_dict

    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model.nemo, resolve=True))
    with open_dict(model_cfg):
        model_cfg.labels = list(labels)
        model_cfg.sample_rate = int(cfg.data.sample_rate)
        model_cfg.decoder.num_classes = len(labels)
        model_cfg.decoder.vocabulary = list(labels)
    return model_cfg


def restore_model(path: Path | str, trainer=None, map_location: str | None = "cpu"):
    """Any NeMo ASR .nemo (the class is read from the file)."""
    from nemo.collections.asr.models import ASRModel

    from hackathon.core.nemo_models import restore_nemo

    return restore_nemo(ASRModel, path, "Model file {path} does not exist.",
                        "Give the path of a .nemo file (e.g. <run-dir>/export/asr_model.nemo).",
                        trainer=trainer, map_location=map_location)


def model_vocabulary(model) -> list[str] | None:
    """Output characters of a char CTC model; None for tokenizer (BPE) models."""
    if hasattr(model, "tokenizer"):
        return None
    return list(model.decoder.vocabulary)


# ---------------------------------------------------------------- model sources

def is_local_model_path(init: str) -> bool:
    """A path (a .nemo file or anything that exists) rather than a pretrained name ("nvidia/x" is a HF name)."""
    return init.endswith(".nemo") or Path(init).expanduser().exists() or init.startswith(("/", ".", "~"))


# NeMo 3.0's list_available_models() no longer lists these char CTC models, but NGC still serves them
# (the names the team's notebooks used). Other names go to NeMo's from_pretrained (e.g. "nvidia/..." on HF).
PRETRAINED_CHAR_MODELS = {
    "stt_zh_citrinet_512": "https://api.ngc.nvidia.com/v2/models/nvidia/nemo/stt_zh_citrinet_512/versions/"
                           "1.0.0rc1/files/stt_zh_citrinet_512.nemo",
    "QuartzNet15x5Base-En": "https://api.ngc.nvidia.com/v2/models/nvidia/nemospeechmodels/versions/1.0.0a5/"
                            "files/QuartzNet15x5Base-En.nemo",
    "QuartzNet15x5Base-Zh": "https://api.ngc.nvidia.com/v2/models/nvidia/nemospeechmodels/versions/1.0.0a5/"
                            "files/QuartzNet15x5Base-Zh.nemo",
}
DOWNLOAD_TIMEOUT_S = 30


def pretrained_cache_dir() -> Path:
    """Downloaded .nemo files; NEMO_CACHE_DIR overrides (NeMo's own variable)."""
    import os

    return Path(os.environ.get("NEMO_CACHE_DIR", Path.home() / ".cache" / "torch" / "NeMo")) / "hackathon"


def fetch_url(url: str, target: Path) -> Path:
    """Download to a temp file and rename: an interrupted download never looks like a cached model."""
    import shutil
    import urllib.request

    with atomic_path(target, suffix=".part") as tmp:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh, length=1 << 20)
    return target


def _offline_error(name: str, where: str, exc: BaseException) -> HackathonError:
    return HackathonError(
        f"Could not download the pretrained model {name!r} from {where} (no network, or NGC/Hugging Face "
        f"unreachable): {type(exc).__name__}: {str(exc)[:300]}",
        fix="Connect to the network and retry; or download the .nemo on a machine with access and pass its "
            "path: model.init=/path/model.nemo; or train from scratch: model.init=scratch")


def load_pretrained(name: str):
    """A pretrained char CTC model by name (downloaded once into pretrained_cache_dir())."""
    if name in PRETRAINED_CHAR_MODELS:
        url = PRETRAINED_CHAR_MODELS[name]
        cached = pretrained_cache_dir() / f"{name}.nemo"
        if not cached.is_file():
            try:
                fetch_url(url, cached)
            except OSError as exc:  # URLError, timeouts, DNS failures are all OSError
                raise _offline_error(name, url, exc) from exc
        return restore_model(cached)
    from nemo.collections.asr.models import ASRModel

    try:
        return ASRModel.from_pretrained(model_name=name)
    except FileNotFoundError as exc:
        raise HackathonError(f"Pretrained model {name!r} is not known to NeMo: {str(exc).splitlines()[0]}",
                             fix=f"Use one of {sorted(PRETRAINED_CHAR_MODELS)}, a Hugging Face name like "
                                 "nvidia/<model>, a local .nemo path (model.init=/path/model.nemo), "
                                 "or model.init=scratch.") from exc
    except Exception as exc:
        raise _offline_error(name, "NGC/Hugging Face", exc) from exc


def build_initial_model(cfg, train_vocabulary: list[str]):
    """(model, source description, starting vocabulary or None for scratch)."""
    init = str(cfg.model.init)
    if init == SCRATCH:
        from nemo.collections.asr.models import EncDecCTCModel

        labels = _explicit_vocabulary(cfg) or train_vocabulary
        return EncDecCTCModel(cfg=scratch_model_config(cfg, labels)), "scratch (specs model.nemo)", None
    if is_local_model_path(init):
        model = restore_model(Path(init).expanduser())
        return model, f"local .nemo {init}", model_vocabulary(model)
    model = load_pretrained(init)
    return model, f"pretrained {init}", model_vocabulary(model)


def _explicit_vocabulary(cfg) -> list[str] | None:
    vocab = cfg.model.vocabulary
    if vocab is None or vocab == "auto":
        return None
    if isinstance(vocab, str):
        return list(dict.fromkeys(vocab))  # a string of characters
    return [str(v) for v in vocab]


def choose_vocabulary(cfg, model_vocab: list[str] | None, train_vocab: list[str], train_texts: list[str]) -> dict:
    """Which labels to train with and why. Keeps the model's own vocabulary when it covers the data."""
    explicit = _explicit_vocabulary(cfg)
    if explicit is not None:
        wanted, reason = explicit, "model.vocabulary from the spec"
    elif model_vocab is None:
        wanted, reason = train_vocab, "characters of the training transcripts"
    elif vocab_tools.covers(model_vocab, train_texts):
        wanted, reason = model_vocab, "the initial model's vocabulary covers the training transcripts"
    else:
        missing = vocab_tools.oov_counts(train_texts, model_vocab)
        wanted = train_vocab
        reason = (f"the initial model's vocabulary lacks {len(missing)} characters of the training transcripts "
                  f"(e.g. {''.join(list(missing)[:20])}): replaced by the training characters")
    changed = model_vocab is not None and list(wanted) != list(model_vocab)
    return {"vocabulary": list(wanted), "reason": reason, "changed": changed}


# ---------------------------------------------------------------- the stage

def model_stage(ctx) -> None:
    from tasks.asr.prepare import load_split_texts

    import lightning.pytorch as pl

    cfg = ctx.cfg
    pl.seed_everything(int(cfg.seed), verbose=False)  # scratch weights and a new decoder depend on it
    split_texts = load_split_texts(ctx)
    train_vocab = vocab_tools.vocabulary_from_texts(split_texts["train"])
    model, source, model_vocab = build_initial_model(cfg, train_vocab)
    if model_vocab is None and str(cfg.model.init) != SCRATCH:
        raise HackathonError(f"{cfg.model.init} is a tokenizer (BPE) model; this pipeline fine-tunes char CTC models.",
                             fix="Use a char model (e.g. stt_zh_citrinet_512, QuartzNet15x5Base-En, a demo .nemo) "
                                 "or model.init=scratch.")
    choice = choose_vocabulary(cfg, model_vocab, train_vocab, split_texts["train"])
    if choice["changed"]:
        ctx.log.warning("vocabulary changed (%s): the CTC decoder (output layer) is re-initialised and "
                        "learns the %d characters from the data; the encoder keeps its weights",
                        choice["reason"], len(choice["vocabulary"]))
        model.change_vocabulary(new_vocabulary=choice["vocabulary"])
    oov = vocab_tools.oov_report(split_texts, choice["vocabulary"])
    _log_oov(ctx, oov)
    with atomic_path(ctx.path(INIT_MODEL), suffix=".nemo") as tmp:
        model.save_to(str(tmp))
    report = {"source": source, **choice, "size": len(choice["vocabulary"]),
              "decoder_reinitialised": choice["changed"], "oov": oov,
              "parameters": int(sum(p.numel() for p in model.parameters()))}
    atomic_write_json(ctx.path(VOCABULARY_FILE), report)
    _record_init(ctx, model, choice["changed"])
    ctx.record(source=source, vocabulary_size=report["size"], vocabulary_changed=choice["changed"],
               parameters=report["parameters"],
               oov_chars={s: r["n_chars"] for s, r in oov.items() if r["n_chars"]})


def _record_init(ctx, model, decoder_new: bool) -> None:
    """Provenance: every tensor comes from the init except a re-made decoder (all random for scratch)."""
    from hackathon.core.init_weights import kind_of, record, record_init

    init, names = str(ctx.cfg.model.init), list(model.state_dict())
    new = [k for k in names if k.startswith("decoder.")] if decoder_new else []
    cached = pretrained_cache_dir() / f"{init}.nemo"
    loaded = 0 if init == SCRATCH else len(names) - len(new)
    record_init(ctx, "asr", record(init, cached if kind_of(init) == "hub" and cached.is_file() else None, loaded,
                                   ["decoder"] if new else []))


def _log_oov(ctx, oov: dict) -> None:
    for split, rep in oov.items():
        if not rep["n_chars"]:
            continue
        chars = "".join(list(rep["characters"])[:40])
        if split == "train":
            ctx.log.warning("train split: %d characters in %d/%d utterances are not in the model vocabulary: the "
                            "model cannot learn them (NeMo's loader leaves them out of the targets). Add them to "
                            "model.vocabulary, or use model.vocabulary=auto: %s", rep["n_chars"],
                            rep["n_utts_affected"], rep["n_utts"], chars)
        else:
            ctx.log.warning("%s split: %d characters in %d/%d utterances are not in the model vocabulary and can "
                            "never be predicted (counted as errors, not dropped): %s", split, rep["n_chars"],
                            rep["n_utts_affected"], rep["n_utts"], chars)


def read_vocabulary_report(run_dir: Path) -> dict:
    report = read_json(Path(run_dir) / VOCABULARY_FILE)
    if report is None:
        raise HackathonError(f"{Path(run_dir) / VOCABULARY_FILE} is missing.", fix="Re-run from the model stage: --from model")
    return report
