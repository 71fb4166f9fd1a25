"""`hackathon` command line. Thin on purpose: every command calls one function in a task/tool module.

Heavy libraries (torch, NeMo, onnxruntime, docker) are imported inside those functions only, so
`hackathon --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from hackathon.core.errors import HackathonError
from hackathon.core.progress import TerminalConsole, command_output, set_verbose

# Our lines reach the terminal even while a command's library output goes to its log (friendly_errors).
console = TerminalConsole("stdout")
err_console = TerminalConsole("stderr")

app = typer.Typer(help="Raw recordings and images to scored models: asr, tts, detect.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _group(name: str, help: str) -> typer.Typer:
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


data_app = _group("data", "Audio and image data tools (ingest, validate, resample, split, demo data).")
asr_app = _group("asr", "ASR tools: transcribe, export.")
tts_app = _group("tts", "TTS tools: synthesize.")
detect_app = _group("detect", "Detection data tools: ingest, split, balance, roboflow.")
ngc_app = _group("ngc", "NGC (nvcr.io) docker login for the TAO images.")
k8s_app = _group("k8s", "Kubernetes: a Kubeflow PyTorchJob (elastic, torchrun) and the project's Dockerfile.")
slurm_app = _group("slurm", "SLURM: an sbatch script (srun + torchrun, requeue on preemption).")

# Commands whose output is not captured: `run` logs per stage itself; a prompt / GUI; reading our own files only.
UNCAPTURED = {"run", "ngc_login", "label", "gpus", "runs", "score"}


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library output (NeMo, Triton, "
                                              "...) on the console too; it always goes to <runs>/logs/<command>.log.")):
    set_verbose(verbose)


def friendly_errors(fn):
    """Print HackathonError as message + fix and exit non-zero, instead of a traceback. Library output of the
    command (NeMo, jieba, tritonserver, ...) goes to <runs>/logs/<command>.log (progress.command_output)."""
    captured = fn.__name__ not in UNCAPTURED

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if not captured:
                return fn(*args, **kwargs)
            with command_output(fn.__name__.replace("_", "-")):
                return fn(*args, **kwargs)
        except HackathonError as exc:
            err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            if exc.fix:
                err_console.print(f"[bold yellow]fix:[/] {exc.fix}", highlight=False)
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted: run the same command again to resume.[/]")
            raise typer.Exit(130)

    return wrapper


# ---------------------------------------------------------------- run / doctor

@app.command()
@friendly_errors
def run(
    task: str = typer.Argument(..., help="asr | tts | detect | all"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value spec overrides (OmegaConf dotted keys)."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec name in specs/<task>/ or a YAML path (default: demo)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default runs/<task>/<time>-<user>, "
                                           "or the newest run with the same config, which is resumed)."),
    from_stage: Optional[str] = typer.Option(None, "--from", help="Re-run from this stage on."),
    only: Optional[str] = typer.Option(None, "--only", help="Run just this stage."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage even if done."),
    new: bool = typer.Option(False, "--new", help="Start a fresh run dir even if a run with the same config exists."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Fail at once if the GPU is held by another run."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Stream library logs (NeMo, Lightning, ...) to the "
                                 "console too; they always go to the run's logs/<stage>.log."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved spec, each value with the "
                                      "file (or override) that set it, and exit without running."),
):
    """Run a pipeline (resumable: the same command again skips finished stages)."""
    if print_config:
        from hackathon.core.config import describe_config

        print(describe_config(task, spec, overrides or []), end="")
        return
    from hackathon.pipelines import run_pipelines

    if verbose:
        set_verbose(verbose)
    try:
        run_pipelines(task, overrides or [], spec=spec, run_dir=run_dir, from_stage=from_stage, only=only,
                      force=force, new=new, wait=not no_wait, echo=console.print)
    except (HackathonError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the stage's log tail is on the console already; the traceback is in that log
        raise HackathonError(f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                             fix="Read the log lines above (full traceback in the run's logs/<stage>.log); "
                                 "after fixing the cause, the same command resumes where it stopped.") from exc


@app.command()
@friendly_errors
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    task: Optional[str] = typer.Option(None, "--task", help="Exit 1 only when a check this task needs fails."),
):
    """Check the machine: tools, docker, GPUs, NGC login, disk, library versions — each with its fix."""
    from hackathon.doctor import run_checks, print_checks, exit_code

    checks = run_checks()
    if as_json:
        console.out(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        print_checks(checks, console)
    raise typer.Exit(exit_code(checks, task))


# ---------------------------------------------------------------- team: gpus / runs / score (issue 6)

@app.command()
@friendly_errors
def gpus(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Each GPU (and stand-in lock key): who holds it, for which run, since when, queue, memory used."""
    from hackathon.core.gpus import show_gpus

    show_gpus(console, as_json=as_json)


@app.command()
@friendly_errors
def runs(
    task: Optional[str] = typer.Option(None, "--task", help="Only this task (asr, tts, detect)."),
    user: Optional[str] = typer.Option(None, "--user", help="Only this user's runs."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Every recorded run (newest first): task, user, status, times, metrics, run dir."""
    from hackathon.core.registry import show_runs

    show_runs(console, task=task, user=user, as_json=as_json)


@app.command()
@friendly_errors
def score(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an index page linking every run's report."),
):
    """Team scoreboard: best run per task (ASR CER, TTS DNSMOS OVRL then PESQ, detect mAP@.5) and who made it."""
    from hackathon.scoreboard import score as show_score

    show_score(console, as_json=as_json, html_path=html)


# ---------------------------------------------------------------- detect: TAO (issue 7)

@detect_app.command("tao-spec")
@friendly_errors
def detect_tao_spec(
    network: str = typer.Argument(..., help="ssd | yolo_v3 | dataset_convert"),
    overrides: Optional[List[str]] = typer.Argument(None, help="block.field=value overrides of specs/detect/tao/<network>.yaml"),
    out: Optional[Path] = typer.Option(None, "--out", help="Spec file to write (protobuf text, for `tao model ... -e`)."),
    check: Optional[Path] = typer.Option(None, "--check", help="Check this (hand-edited) spec file against TAO 5's messages instead."),
):
    """Write a TAO 5 spec from the template + overrides (checked against TAO's messages), or --check a spec file."""
    if (out is None) == (check is None) or (check is not None and overrides):
        raise HackathonError("Give either --out FILE (write a spec) or --check FILE (check one), not both or neither.",
                             fix="e.g. hackathon detect tao-spec yolo_v3 --check experiment.txt")
    if check is not None:
        from tasks.detect.tao_schema import validate_file

        console.print(validate_file(check, network), highlight=False)
        return
    from tasks.detect.tao_spec import write_spec_file

    console.print(write_spec_file(network, overrides or [], out), highlight=False)


# ---------------------------------------------------------------- ngc

@ngc_app.command("login")
@friendly_errors
def ngc_login(
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="File holding the key (must be chmod 600)."),
    registry: str = typer.Option("nvcr.io", "--registry"),
):
    """docker login nvcr.io with the NGC API key from $NGC_API_KEY, --key-file, or a hidden prompt."""
    from hackathon.core.ngc import login

    console.print(login(key_file=key_file, registry=registry))


@ngc_app.command("status")
@friendly_errors
def ngc_status(registry: str = typer.Option("nvcr.io", "--registry")):
    """Which docker config file (if any) holds the nvcr.io credential docker will actually read."""
    from hackathon.core.ngc import status

    console.print(status(registry=registry))


@ngc_app.command("logout")
@friendly_errors
def ngc_logout(registry: str = typer.Option("nvcr.io", "--registry")):
    """docker logout nvcr.io."""
    from hackathon.core.ngc import logout

    console.print(logout(registry=registry))


# ---------------------------------------------------------------- data: audio (issue 3)

@data_app.command("synth-speech")
@friendly_errors
def data_synth_speech(
    task: str = typer.Option(..., "--task", help="asr (16 kHz, many voices) | tts (22.05 kHz, one voice)."),
    out: Path = typer.Option(..., "--out", help="Output folder (new or empty, or an earlier synth-speech output)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same corpus."),
):
    """Generate the Mandarin demo speech corpus (espeak-ng) with NeMo train/val/test manifests."""
    from data_tools.speech_synth import synth_speech

    summary = synth_speech(task, out, seed=seed)
    console.print(f"{summary['task']}: {summary['counts']} clips at {summary['sample_rate']} Hz in "
                  f"{summary['seconds']} s -> {summary['out_dir']}", highlight=False)


@data_app.command("prepare-audio")
@friendly_errors
def data_prepare_audio(
    src: Path = typer.Argument(..., help="Folder of recordings (any format/rate/channels), a NeMo manifest, or a Label Studio JSON export."),
    task: str = typer.Option(..., "--task", help="asr (16 kHz) | tts (22.05 kHz, silence trim + loudness)."),
    out: Path = typer.Option(..., "--out", help="Output folder: wavs/, manifest.json, report.json."),
    transcripts: Optional[Path] = typer.Option(None, "--transcripts", help="CSV/TSV/manifest with the texts "
                                               "(default: tables in SRC, then <clip>.txt)."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Output rate (default per task)."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="File listing the allowed characters."),
    no_clean: bool = typer.Option(False, "--no-clean", help="TTS: skip silence trim and loudness normalisation."),
    min_duration: Optional[float] = typer.Option(None, "--min-duration", help="Seconds (default per task)."),
    max_duration: Optional[float] = typer.Option(None, "--max-duration", help="Seconds (default per task)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel processes (default: all cores)."),
):
    """Validate + convert recordings to mono 16-bit WAV with a NeMo manifest; never modifies SRC.

    Exits 2 when some inputs were rejected (each listed in report.json with reason and fix)."""
    from data_tools.prepare_audio import prepare_audio

    result = prepare_audio(src, out, task=task, sample_rate=sample_rate, transcripts=transcripts, vocabulary=vocab,
                           clean=False if no_clean else None, min_duration=min_duration,
                           max_duration=max_duration, workers=workers)
    console.print(f"accepted {result.accepted} clips ({result.hours:.3f} h at {result.sample_rate} Hz) -> "
                  f"{result.manifest_path}; {len(result.flagged)} flagged", highlight=False)
    if result.rejected:
        for item in result.rejected:
            err_console.print(f"  [red]{item['kind']}[/]: {item['reason']}", highlight=False)
        err_console.print(f"[bold red]some inputs rejected:[/] {len(result.rejected)} (reasons and fixes in "
                          f"{result.report_path})", highlight=False)
        raise typer.Exit(2)


@data_app.command("phrase-split")
@friendly_errors
def data_phrase_split(
    manifest: Path = typer.Argument(..., help="NeMo manifest of sentence clips with punctuated transcripts."),
    out: Path = typer.Option(..., "--out", help="Output folder: wavs/, manifest.json, phrase_split_report.json."),
    min_gap: float = typer.Option(0.12, "--min-gap", help="Shortest pause (s) that can separate phrases."),
):
    """Cut each clip at its punctuation (，。、！？) by matching phrases to pauses: whole + per-phrase clips."""
    from data_tools.phrase_split import phrase_split

    result = phrase_split(manifest, out, min_gap_s=min_gap)
    console.print(f"{result.samples} samples from {result.split_clips} split clips -> {result.manifest_path}; "
                  f"{len(result.left_whole)} left whole (reasons in {result.report_path})", highlight=False)


@data_app.command("split")
@friendly_errors
def data_split(
    manifest: Path = typer.Argument(..., help="NeMo manifest to split."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for {train,val,test}_manifest.json "
                                       "(default: the manifest's folder)."),
    fractions: str = typer.Option("0.8,0.1,0.1", "--fractions", help="train,val,test shares."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Replace existing split manifests."),
):
    """Split into train/val/test, whole speakers at a time when speakers are known (seeded)."""
    from data_tools.audio_split import split_manifest

    try:
        shares = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        raise HackathonError(f"--fractions {fractions!r} is not three numbers", fix="e.g. --fractions 0.8,0.1,0.1")
    if len(shares) != 3:
        raise HackathonError(f"--fractions {fractions!r} needs three numbers", fix="e.g. --fractions 0.8,0.1,0.1")
    result = split_manifest(manifest, out, fractions=shares, seed=seed, overwrite=force)
    console.print(f"split by {result.grouped_by}: {result.counts} -> {result.manifests['train'].parent}",
                  highlight=False)


@data_app.command("report")
@friendly_errors
def data_report(
    manifest: Path = typer.Argument(..., help="NeMo manifest (prepare-audio's report.json beside it is used too)."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default: <manifest>_report.html beside it)."),
    samples: int = typer.Option(6, "--samples", help="Clips shown with waveform, spectrograms and a player."),
    seed: int = typer.Option(0, "--seed", help="Which clips are sampled."),
):
    """Self-contained HTML page: counts, hours, durations, character coverage, rejects, sample clips."""
    from data_tools.audio_report import write_audio_report

    console.print(f"report -> {write_audio_report(manifest, out, samples=samples, seed=seed)}", highlight=False)


# ---------------------------------------------------------------- detect: data + local backend (issue 5)

@detect_app.command("ingest")
@friendly_errors
def detect_ingest(
    sources: List[Path] = typer.Argument(..., help="Dataset folders/files: any mix of VOC XML, YOLO, COCO JSON, CreateML, Label Studio JSON."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, dataset.json (COCO), report.json, report.html."),
    aliases: Optional[Path] = typer.Option(None, "--aliases", help="Alias table (default specs/detect/aliases.yaml)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="Force voc|yolo|coco|createml|label_studio instead of auto-detecting."),
):
    """Read, validate and merge detection datasets into one COCO dataset.json with a report."""
    from data_tools.detection.ingest import ingest

    dataset_json, report = ingest(list(sources), out, aliases_file=aliases, fmt=fmt)
    console.print(f"wrote {dataset_json}; findings: {report.counts() or 'none'}; see {out / 'report.html'}", highlight=False)


@detect_app.command("split")
@friendly_errors
def detect_split(
    dataset: Path = typer.Argument(..., help="dataset.json from `hackathon detect ingest`."),
    out: Path = typer.Option(..., "--out", help="Folder for train.json, val.json, test.json, split_report.json."),
    train: float = typer.Option(0.7, "--train"), val: float = typer.Option(0.15, "--val"),
    test: float = typer.Option(0.15, "--test"), seed: int = typer.Option(0, "--seed"),
):
    """Seeded train/val/test split, stratified so the rare class is in every split."""
    from data_tools.detection.split import split_dataset

    paths = split_dataset(dataset, out, {"train": train, "val": val, "test": test}, seed=seed)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}; counts in {out / 'split_report.json'}", highlight=False)


@detect_app.command("balance")
@friendly_errors
def detect_balance(
    train_json: Path = typer.Argument(..., help="train.json from `hackathon detect split` (train split only)."),
    out: Path = typer.Option(..., "--out", help="Folder for the balanced train.json, augmented images, balance_report.json."),
    target_ratio: float = typer.Option(0.5, "--target-ratio", help="Grow rare classes to this fraction of the largest."),
    max_copies: int = typer.Option(3, "--max-copies", help="At most this many augmented copies per image."),
    seed: int = typer.Option(0, "--seed"),
):
    """Oversample rare classes in the train split with flipped/scaled/colour-jittered copies."""
    from data_tools.detection.balance import balance_train

    path, report = balance_train(train_json, out, target_ratio=target_ratio, max_copies_per_image=max_copies, seed=seed)
    console.print(f"wrote {path}: before {report['before']}, after {report['after']}", highlight=False)


@detect_app.command("export-kitti")
@friendly_errors
def detect_export_kitti(
    dataset: Path = typer.Argument(..., help="A COCO dataset.json (e.g. a split's train.json)."),
    out: Path = typer.Option(..., "--out", help="KITTI folder: images/, labels/, kitti_index.json."),
    width: int = typer.Option(320, "--width"), height: int = typer.Option(320, "--height"),
):
    """KITTI export for TAO (15-field labels, lower-case classes, images resized to WIDTHxHEIGHT)."""
    from data_tools.detection.kitti import export_kitti

    console.print(f"wrote {export_kitti(dataset, out, width, height)}", highlight=False)


@detect_app.command("roboflow-download")
@friendly_errors
def detect_roboflow_download(
    workspace: str = typer.Argument(...), project: str = typer.Argument(...), version: int = typer.Argument(...),
    fmt: str = typer.Option("coco", "--format", help="coco | voc | yolov5"),
    out: Path = typer.Option(..., "--out", help="New folder to download into (never overwritten)."),
):
    """Download a Roboflow dataset version (extra `roboflow`; API key from $ROBOFLOW_API_KEY)."""
    from data_tools.detection.roboflow_download import download

    console.print(f"downloaded to {download(workspace, project, version, fmt, out)}", highlight=False)


@data_app.command("synth-masks")
@friendly_errors
def data_synth_masks(
    out: Path = typer.Option(..., "--out", help="Folder for images/ + annotations/ (PASCAL VOC, Kaggle layout)."),
    num_images: int = typer.Option(700, "--num-images"), seed: int = typer.Option(0, "--seed"),
    image_size: int = typer.Option(320, "--image-size"), max_faces: int = typer.Option(4, "--max-faces"),
):
    """Draw the face-mask demo dataset (deterministic for a seed; the third class is rare)."""
    from data_tools.detection.synth_masks import synth_masks

    console.print(f"wrote {synth_masks(out, num_images, seed, image_size, max_faces)}", highlight=False)


class _LabelGroup(typer.core.TyperGroup):
    """`hackathon label IMAGES` (labelImg) beside `hackathon label studio ...` (Label Studio)."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["labelimg", *args]
        return super().parse_args(ctx, args)


label_app = typer.Typer(cls=_LabelGroup, help="Label images and clips: `label IMAGES` (labelImg) or `label studio` "
                        "(the team's Label Studio server).")
app.add_typer(label_app, name="label")


@label_app.command("labelimg")
@friendly_errors
def label(
    images: Optional[Path] = typer.Argument(None, help="Folder of images (or one image in it) to label."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Where labelImg saves VOC XML (default: the image folder)."),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="Predefined classes (default: the 3 canonical classes)."),
    setup: bool = typer.Option(False, "--setup", help="Create a Python 3.9 venv with labelImg 1.8.6 first."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the labelImg command instead of running it."),
):
    """Open labelImg (from a Python <= 3.9 env: it crashes on 3.10+) with our classes, saving PASCAL VOC."""
    from data_tools.detection.labelimg import run_label_command

    console.print(run_label_command(images, save_dir, classes_file, setup, dry_run), highlight=False)


@label_app.command("studio")
@friendly_errors
def label_studio(
    port: int = typer.Option(8080, "--port", help="Port of the web page and API."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback; members come in over ssh -L)."),
    images: Optional[List[Path]] = typer.Option(None, "--images", help="Folder of images: one detection task per image."),
    audio: Optional[List[Path]] = typer.Option(None, "--audio", help="Folder of clips: one transcription task per clip."),
    from_run: Optional[List[Path]] = typer.Option(None, "--from-run", help="runs/detect/X or runs/asr/X: its boxes / "
                                                  "transcripts as predictions, least sure first."),
    min_score: float = typer.Option(0.3, "--min-score", help="Detections below this score are not pre-labelled."),
    export: Optional[Path] = typer.Option(None, "--export", help="Folder for the annotations (data.source= of a run)."),
    status: bool = typer.Option(False, "--status", help="Annotations per class and per person."),
    setup: bool = typer.Option(False, "--setup", help="Make Label Studio's own venv now (else on first use)."),
):
    """The team's Label Studio: serve it (no --from-run/--export/--status), or do those jobs on it."""
    from hackathon.label.studio import studio_command

    studio_command(port, host, images or [], audio or [], from_run or [], export, status, setup, min_score,
                   echo=lambda m: console.print(m, highlight=False, markup=False))


# ---------------------------------------------------------------- asr (issue 4)

@asr_app.command("transcribe")
@friendly_errors
def asr_transcribe(
    model: Path = typer.Argument(..., help="A NeMo ASR .nemo file (e.g. <run-dir>/export/asr_model.nemo) or a "
                                           "Whisper export folder (<run-dir>/export/ct2 or export/merged)."),
    inputs: List[str] = typer.Argument(..., help="Audio files (any format/rate), folders, or NeMo manifests."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the results as JSONL here (new file)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Clips per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of path<TAB>text lines."),
):
    """Transcribe audio in batches (resampled on the fly); unreadable files are listed, the rest go on."""
    from tasks.asr.transcribe import as_json as to_json, format_lines, transcribe_command

    summary = transcribe_command(model, inputs, out=out, batch_size=batch_size)
    if as_json:
        console.out(to_json(summary))
    else:
        for line in format_lines(summary):
            console.out(line)
    if summary["failed"]:
        err_console.print(f"[yellow]{len(summary['failed'])} of {len(summary['failed']) + len(summary['results'])} "
                          "inputs could not be transcribed (listed above).[/]")
        raise typer.Exit(2)


@asr_app.command("export")
@friendly_errors
def asr_export(
    target: Path = typer.Argument(..., help="An ASR run dir (exports model/trained.nemo) or a .nemo file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/export or <model>.export/)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also export ONNX (checked against NeMo's greedy text)."),
):
    """Export a trained ASR model as .nemo + ONNX (+ vocabulary and feature config)."""
    from tasks.asr.export import export_command

    summary = export_command(target, out=out, onnx=onnx)
    console.print_json(data=summary)


# ---------------------------------------------------------------- tts (issue 8)

@tts_app.command("synthesize")
@friendly_errors
def tts_synthesize(
    text: Optional[str] = typer.Argument(None, help='The sentence, e.g. "您好，张三，欢迎回家，二维码有效请您通过。"'),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output .wav (with --file: an output folder)."),
    model: Optional[Path] = typer.Option(None, "--model", help="A `hackathon run tts` run dir (default: the newest)."),
    text_file: Optional[Path] = typer.Option(None, "--file", help="UTF-8 text file, one sentence per line."),
    rate: Optional[int] = typer.Option(None, "--rate", help="Output sample rate, e.g. 44100 (default: the spec's)."),
    vocoder: Optional[str] = typer.Option(None, "--vocoder", help="griffin_lim or hifigan (default: the run's)."),
    template: Optional[str] = typer.Option(None, "--template", help='Lines are names: "{greeting}，{name}，欢迎回家。"'),
    greeting: Optional[str] = typer.Option(None, "--greeting", help="{greeting} of --template (default: by time of day)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the normalised text and phonemes; no model needed."),
):
    """Speak a sentence (or every line of --file) with a trained FastPitch + vocoder."""
    from tasks.tts.synthesize import synthesize_cli

    for line in synthesize_cli(text, out, model=model, text_file=text_file, rate=rate, vocoder=vocoder,
                               template=template, greeting=greeting, dry=dry_run):
        console.print(line, highlight=False)


# ---------------------------------------------------------------- explore (issue 14)

@app.command()
@friendly_errors
def explore(
    inputs: List[Path] = typer.Argument(..., help="ASR/TTS/detect run dirs, NeMo manifests or a COCO dataset.json."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (index.html opens from disk)."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="A second ASR run: its predictions side by side."),
    serve: bool = typer.Option(False, "--serve", help="Also serve the folder on 127.0.0.1 (waveforms need http)."),
    port: int = typer.Option(8765, "--port", help="Port for --serve (0 = any free port)."),
):
    """Static pages to browse a dataset: every utterance or image, errors, diffs, boxes, confusion matrix."""
    from hackathon.explore import build, serve as serve_dir

    index = build(inputs, out, compare=compare)
    console.print(f"explorer: {index}", highlight=False)
    if serve:
        serve_dir(index.parent, port=port)


# ---------------------------------------------------------------- gate page (issue 11)

@app.command()
@friendly_errors
def gate(
    url: str = typer.Option("127.0.0.1:8000", "--url", help="Triton HTTP address of `hackathon serve` (host:port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the page binds (0.0.0.0 = every interface)."),
    port: int = typer.Option(7860, "--port", help="Port of the page."),
    max_upload_mb: int = typer.Option(50, "--max-upload-mb", help="Largest clip or photo the page accepts."),
):
    """The gate web page: speech + photo + name -> Triton `gate` model -> decision, boxes, spoken reply."""
    from hackathon.serve.gate_page import serve_page

    serve_page(url=url, host=host, port=port, max_upload_mb=max_upload_mb,
               echo=lambda line: console.print(line, highlight=False))


# ---------------------------------------------------------------- serve / deploy (issue 11)

deploy_app = _group("deploy", "Deployment: a Triton model repository for the NGC container.")


@app.command()
@friendly_errors
def serve(
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of specs/serve/<spec>.yaml."),
    asr: Optional[Path] = typer.Option(None, "--asr", help="ASR run dir (default: the scoreboard's best)."),
    tts: Optional[Path] = typer.Option(None, "--tts", help="TTS run dir (default: the scoreboard's best)."),
    detect: Optional[Path] = typer.Option(None, "--detect", help="Detect run dir (default: the scoreboard's best)."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec name in specs/serve/ or a YAML path (default: demo)."),
    host: Optional[str] = typer.Option(None, "--host", help="Bind address of HTTP, gRPC and metrics (default 127.0.0.1)."),
    http_port: Optional[int] = typer.Option(None, "--http-port", help="HTTP port (default 8000)."),
    grpc_port: Optional[int] = typer.Option(None, "--grpc-port", help="gRPC port (default 8001)."),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Metrics port (default 8002)."),
):
    """Serve asr, tts, detect and gate with Triton Inference Server (HTTP + gRPC, dynamic batching)."""
    from hackathon.serve.server import serve as run_server

    run_server(asr=asr, tts=tts, detect=detect, spec=spec, overrides=overrides or [], host=host, http_port=http_port,
               grpc_port=grpc_port, metrics_port=metrics_port, echo=lambda line: console.print(line, highlight=False))


@deploy_app.command("triton-repo")
@friendly_errors
def deploy_triton_repo(
    out: Path = typer.Option(..., "--out", help="New (or empty) folder for the model repository."),
    asr: Optional[Path] = typer.Option(None, "--asr", help="ASR run dir (default: the scoreboard's best)."),
    tts: Optional[Path] = typer.Option(None, "--tts", help="TTS run dir (default: the scoreboard's best)."),
    detect: Optional[Path] = typer.Option(None, "--detect", help="Detect run dir (default: the scoreboard's best)."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Serve spec (gate texts and limits) name or YAML path."),
    engines: bool = typer.Option(False, "--engines", help="Also build TensorRT plans with trtexec (needs a GPU)."),
    run: bool = typer.Option(False, "--run", help="Start the NGC Triton container on the repository (docker)."),
    image: Optional[str] = typer.Option(None, "--image", help="Triton image (default from specs/serve/<spec>.yaml)."),
):
    """Write a Triton model repository (config.pbtxt + versioned models) and print the docker run command."""
    from hackathon.serve.triton_repo import deploy_command

    for line in deploy_command(out, asr=asr, tts=tts, detect=detect, spec=spec, engines=engines, run=run, image=image):
        console.print(line, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- cluster jobs (issue 12)

@k8s_app.command("render")
@friendly_errors
def k8s_render(
    task: str = typer.Argument(..., help="asr | tts | detect"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value spec overrides for the job's run."),
    out: Path = typer.Option(..., "--out", help="Folder for pvc.yaml and pytorchjob.yaml."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec name in specs/<task>/ (inside the image) or a path on the volume."),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (default hackathon-TASK); the run dir is /runs/TASK/NAME."),
    image: str = typer.Option("registry.example.com/team/hackathon:latest", "--image", help="Image built from `hackathon k8s image`."),
    min_nodes: int = typer.Option(1, "--min-nodes", help="Fewest worker pods the job keeps training with."),
    max_nodes: int = typer.Option(2, "--max-nodes", help="Most worker pods (replicas)."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="nvidia.com/gpu per pod = torchrun workers per pod."),
    max_restarts: int = typer.Option(3, "--max-restarts", help="torchrun restarts of the worker group."),
    pvc: str = typer.Option("hackathon-shared", "--pvc", help="ReadWriteMany claim for /data and /runs."),
    pvc_size: str = typer.Option("500Gi", "--pvc-size", help="Size requested by pvc.yaml."),
    storage_class: Optional[str] = typer.Option(None, "--storage-class", help="An RWX class (NFS, CephFS, ...)."),
    pull_secret: str = typer.Option("ngc-registry", "--pull-secret", help="Name of the docker-registry secret (never the key)."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="Namespace for the objects."),
):
    """Write a Kubeflow PyTorchJob (elasticPolicy, c10d) + shared PVC for `hackathon run TASK` under torchrun."""
    from hackathon.cluster.k8s import render

    for path in render(task, out, overrides or [], spec=spec, name=name, image=image, min_nodes=min_nodes,
                       max_nodes=max_nodes, gpus_per_node=gpus_per_node, max_restarts=max_restarts, pvc=pvc,
                       pvc_size=pvc_size, storage_class=storage_class, pull_secret=pull_secret, namespace=namespace):
        console.print(f"wrote {path}")
    console.print(f"apply: kubectl apply -f {out}/pvc.yaml -f {out}/pytorchjob.yaml  (docs/MULTI_GPU.md)")


@k8s_app.command("image")
@friendly_errors
def k8s_image(
    out: Path = typer.Option(..., "--out", help="Folder for Dockerfile and Dockerfile.dockerignore."),
    base: str = typer.Option("nvcr.io/nvidia/nemo:25.04", "--base", help="NGC base image (NeMo or PyTorch)."),
):
    """Write a Dockerfile for the project on an NGC NeMo/PyTorch base."""
    from hackathon.cluster.image import write_image_files

    for path in write_image_files(out, base):
        console.print(f"wrote {path}")
    console.print(f"build (repo root): docker build -f {out}/Dockerfile -t REGISTRY/team/hackathon:TAG .")


@slurm_app.command("render")
@friendly_errors
def slurm_render(
    task: str = typer.Argument(..., help="asr | tts | detect"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value spec overrides for the job's run."),
    out: Path = typer.Option(..., "--out", help="sbatch script to write."),
    spec: Optional[str] = typer.Option(None, "--spec", help="Spec name in specs/<task>/ or a YAML path."),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (default hackathon-TASK)."),
    nodes: int = typer.Option(2, "--nodes", help="Nodes to allocate."),
    min_nodes: Optional[int] = typer.Option(None, "--min-nodes", help="Keep training with this many (elastic); default = --nodes."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs per node = torchrun workers per node."),
    cpus_per_task: int = typer.Option(16, "--cpus-per-task", help="CPU cores per node's task."),
    time_limit: str = typer.Option("24:00:00", "--time", help="SLURM time limit; the job requeues itself before it."),
    partition: Optional[str] = typer.Option(None, "--partition", help="SLURM partition."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Run dir on the shared filesystem (default runs/TASK/NAME)."),
    max_restarts: int = typer.Option(3, "--max-restarts", help="torchrun restarts of the worker group."),
):
    """Write an sbatch script: srun + torchrun (c10d on the first node), --requeue on preemption, same run dir."""
    from hackathon.cluster.slurm import render

    path = render(task, out, overrides or [], spec=spec, name=name, nodes=nodes, min_nodes=min_nodes,
                  gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task, time_limit=time_limit,
                  partition=partition, run_dir=run_dir, max_restarts=max_restarts)
    console.print(f"wrote {path}\nsubmit: sbatch {path}")


def main() -> None:  # pragma: no cover - console script entry is `app`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
