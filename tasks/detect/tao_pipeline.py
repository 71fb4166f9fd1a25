"""`hackathon run detect backend=tao`: the TAO SSD / YOLOv3 stages, each one container run.

    (shared prepare / split / balance / export: KITTI at export.width x height, tasks/detect/stages.py)
    -> tao_convert (dataset_convert: TFRecords) -> tao_train (resumes from the newest checkpoint)
    -> tao_evaluate -> tao_inference (threshold 0.01, for mAP) -> tao_score (pycocotools, our scorer)
    -> tao_export (ONNX) -> export_model (that ONNX collected into export/detector.onnx + detector.json for
    serving; needs TensorRT plugins, so not run by onnxruntime) -> tao_engine (optional TensorRT engine)

Run-dir layout (the whole run dir is mounted at /workspace/tao-experiments):
    export/kitti/<split>/{images,labels,kitti_index.json}   (shared export stage)   tao/tfrecords/train-*
    tao/specs/{convert.txt,experiment.txt,train.txt}     tao/mounts.json (TAO launcher format)
    tao/results/{convert,train/weights,evaluate,inference/labels,export}
    tao/launcher_commands.sh   the same steps as `tao model ...` lines, for people who use the launcher
    eval/ (scores, PR curves, samples)   metrics.json   report_assets.json
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from hackathon.core.atomic import atomic_write_json, atomic_write_text, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.runner import RunContext, Stage
from tasks.detect import tao_spec
from tasks.detect.tao_mounts import INPUT, OUTPUT, RESULTS, MountPlan, PathCheck, plan_for_run, spec_checks
from tasks.detect.tao_runner import JobResult, TaoJob, launcher_command, run_job, status_contract

ENGINE_NOTE = ("A TensorRT engine only runs on the GPU model and the driver/TensorRT version it was built "
               "on: build it again (tao deploy ... gen_trt_engine) on the machine that will run it.")
WEIGHTS_RE = re.compile(r"_epoch_(\d+)\.hdf5$")


# ------------------------------------------------------------------ small helpers

def tao_dir(ctx: RunContext, *parts: str) -> Path:
    return ctx.dir("tao", *parts)


def results_dir(ctx: RunContext, task: str) -> Path:
    """tao/results/<task>, NOT created here: the container creates it as the container user."""
    return tao_dir(ctx, "results") / task


def network(cfg) -> str:
    net = str(cfg.get("network", "ssd"))
    if net not in tao_spec.NETWORKS:
        raise HackathonError(f"network={net!r} is not supported by the TAO backend.",
                             fix=f"Use network={' or network='.join(tao_spec.NETWORKS)}.")
    return net


def _container_cfg(cfg):
    from omegaconf import OmegaConf

    tao = OmegaConf.to_container(cfg.tao, resolve=True) if "tao" in cfg else {}
    return tao or {}


def mount_plan(ctx: RunContext) -> MountPlan:
    t = _container_cfg(ctx.cfg)
    return plan_for_run(ctx.run_dir, user_file=t.get("mounts_file"), extra_mounts=t.get("mounts") or [],
                        shm_size=t.get("shm_size"), ulimits=t.get("ulimits") or {}, envs=t.get("envs") or {})


def experiment_dict(ctx: RunContext) -> dict:
    """Template + tao.experiment overrides (validated against the template's fields)."""
    t = _container_cfg(ctx.cfg)
    spec = tao_spec.experiment_spec(network(ctx.cfg), t.get("experiment") or {}, classes=_classes())
    aug = spec["augmentation_config"]
    width, height = input_size(ctx.cfg)
    for key, size, export_key in (("output_width", width, "export.width"), ("output_height", height, "export.height")):
        if aug.get(key) not in (None, size):
            raise HackathonError(
                f"tao.experiment.augmentation_config.{key}={aug[key]} differs from {export_key}={size}, the size "
                "the KITTI images were exported at.", fix=f"Set {export_key}={aug[key]} instead (one size for both).")
        aug[key] = size
    return spec


def input_size(cfg) -> tuple[int, int]:
    """The network input size is the KITTI export size (images were resized to it with their boxes)."""
    return int(cfg.export.width), int(cfg.export.height)


def _classes() -> list[str]:
    """The three competition classes; the KITTI export writes them lower-case, as TAO expects."""
    from data_tools.detection.classes import CANONICAL_CLASSES

    return list(CANONICAL_CLASSES)


class _Paths:
    """Host <-> container for one run; a host path outside every mount stays as written (pre-flight names it)."""

    def __init__(self, plan: MountPlan):
        self.plan = plan

    def c(self, host: Path | str) -> str:
        return self.plan.to_container(host) or str(host)


def _record_command(ctx: RunContext, job: TaoJob) -> None:
    """Keep tao/launcher_commands.sh: one `tao model ...` line per step, in stage order."""
    target = tao_dir(ctx) / "launcher_commands.sh"
    commands = read_json(tao_dir(ctx) / "launcher_commands.json", default={}) or {}
    commands[ctx.stage or job.name] = launcher_command(job)
    atomic_write_json(tao_dir(ctx) / "launcher_commands.json", commands)
    header = (f"#!/bin/sh\n# The TAO launcher equivalent of this run's steps (pip install nvidia-tao). The launcher\n"
              f"# reads its mounts from ~/.tao_mounts.json: use {tao_dir(ctx) / 'mounts.json'} as that file.\n")
    atomic_write_text(target, header + "\n".join(commands.values()) + "\n")


def _job(ctx: RunContext, command: list[str], checks: list[PathCheck], status_dir: Path | None,
         expected: list[Path], image: str | None = None, launcher: str = "model") -> TaoJob:
    """The job for argv `command` = [network, task, ...]; what its status.json must say comes from the task."""
    t = _container_cfg(ctx.cfg)
    plan = mount_plan(ctx)
    name = f"{command[0]} {command[1]}"
    return TaoJob(name=name, image=image or str(ctx.cfg.get("image")), command=command, plan=plan, checks=checks,
                  log_file=ctx.logs_dir / f"{ctx.stage or 'tao'}.log", status_dir=status_dir, expected=expected,
                  gpus=ctx.cfg.get("gpus", "all"), timeout_s=t.get("timeout_s"),
                  labels={"hackathon.run_dir": str(ctx.run_dir), "hackathon.stage": ctx.stage or name},
                  mounts_file=tao_dir(ctx) / "mounts.json", launcher=launcher,
                  status=status_contract(command[0], command[1]))


def _run(ctx: RunContext, job: TaoJob, echo) -> JobResult:
    _record_command(ctx, job)
    return run_job(job, echo=echo)


def _results_arg(net: str, task: str, container_dir: str) -> tuple[str, str, str]:
    """The results-dir argument as this task spells it (-r, or --results_dir for export / gen_trt_engine)."""
    return (status_contract(net, task).flag, container_dir, RESULTS)


def _echo(ctx: RunContext):
    """[tao] lines go to the console and run.log; container lines are already in logs/<stage>.log (`-v` streams it)."""
    def echo(line: str) -> None:
        if line.startswith("[tao]"):
            _say(line)
            ctx.log.info(line)
    return echo


def _say(line: str) -> None:
    """A line for the console even while the stage's output goes to its log."""
    from hackathon.core.progress import terminal

    terminal().print(line, markup=False)


def _command(net: str, task: str, args: list[tuple[str, str | None, str | None]]) -> tuple[list[str], list[PathCheck]]:
    """argv + PathChecks from (flag, container value, kind) triples; kind None = not a path."""
    argv, checks = [net, task], []
    for flag, value, kind in args:
        if value is None:
            argv.append(flag)
            continue
        argv += [flag, value]
        if kind is not None:
            checks.append(PathCheck(f"argument {flag} of `{net} {task}`", value, kind))
    return argv, checks


# ------------------------------------------------------------------ data hand-over

def kitti_dir(ctx: RunContext, split: str) -> Path:
    """The shared export stage's KITTI folder of one split (images/, labels/, kitti_index.json)."""
    from tasks.detect import stages

    return stages.kitti_dir(ctx, split)


def split_json(ctx: RunContext, split: str) -> Path:
    from tasks.detect import stages

    return stages.split_json(ctx, split)


# ------------------------------------------------------------------ stages

def convert_spec_for_run(ctx: RunContext, p: _Paths) -> dict:
    """The dataset_convert spec of this run: the train split's KITTI folder, in container paths."""
    train_dir = kitti_dir(ctx, "train")
    spec = tao_spec.convert_spec(classes=_classes())
    spec["kitti_config"]["root_directory_path"] = p.c(train_dir)
    spec["image_directory_path"] = p.c(train_dir)
    return spec


def stage_convert(ctx: RunContext) -> None:
    net = network(ctx.cfg)
    p = _Paths(mount_plan(ctx))
    spec = convert_spec_for_run(ctx, p)
    spec_file = tao_dir(ctx, "specs") / "convert.txt"
    fields = tao_spec.write_spec(spec, spec_file, "dataset_convert")
    prefix = tao_dir(ctx, "tfrecords") / "train"
    results = results_dir(ctx, "convert")
    for old in prefix.parent.glob("train-*"):  # our own earlier shards: a re-run must not mix old and new
        old.unlink()
    argv, checks = _command(net, "dataset_convert", [("-d", p.c(spec_file), INPUT), ("-o", p.c(prefix), OUTPUT),
                                                     _results_arg(net, "dataset_convert", p.c(results))])
    job = _job(ctx, argv, spec_checks(spec_file, fields) + checks, results, [prefix.parent / "train-*"])
    _run(ctx, job, _echo(ctx))


def experiment_for_run(ctx: RunContext, p: _Paths) -> dict:
    spec = experiment_dict(ctx)
    net = network(ctx.cfg)
    val = kitti_dir(ctx, "val")
    spec["dataset_config"]["data_sources"] = [{"tfrecords_path": p.c(tao_dir(ctx, "tfrecords")) + "/train*",
                                               "image_directory_path": p.c(kitti_dir(ctx, "train"))}]
    spec["dataset_config"]["validation_data_sources"] = [{"label_directory_path": p.c(val / "labels"),
                                                          "image_directory_path": p.c(val / "images")}]
    if net == "yolo_v3":
        cfg_block = spec["yolov3_config"]
        if not all(cfg_block.get(k) for k in ("big_anchor_shape", "mid_anchor_shape", "small_anchor_shape")):
            cfg_block.update(_anchors(ctx))
    # user-given paths (pretrained weights) are host paths: translate them through the mounts
    return tao_spec.map_path_fields(spec, lambda field, value: p.c(value) if Path(value).is_absolute() else value)


def _anchors(ctx: RunContext) -> dict:
    from tasks.detect.tao_anchors import yolo_anchors_from_kitti

    width, height = input_size(ctx.cfg)
    kitti = kitti_dir(ctx, "train")
    anchors, quality = yolo_anchors_from_kitti(kitti / "labels", kitti / "images", width, height,
                                               seed=int(experiment_dict(ctx).get("random_seed", 42)))
    atomic_write_json(tao_dir(ctx) / "anchors.json", {"anchors": anchors, "mean_iou": quality,
                                                      "input_size": [width, height]})
    ctx.record(anchors_mean_iou=round(quality, 4))
    return anchors


def weights(ctx: RunContext) -> list[tuple[int, Path]]:
    """(epoch, file) of the checkpoints TAO wrote, oldest first."""
    found = []
    for f in (results_dir(ctx, "train") / "weights").glob("*_epoch_*.hdf5"):
        m = WEIGHTS_RE.search(f.name)
        if m:
            found.append((int(m.group(1)), f))
    return sorted(found)


def final_weights(ctx: RunContext) -> Path:
    w = weights(ctx)
    if not w:
        raise HackathonError(f"No trained weights in {tao_dir(ctx, 'results', 'train', 'weights')}.",
                             fix="Run the tao_train stage first (hackathon run detect backend=tao --from tao_train).")
    return w[-1][1]


def gpu_count(gpus) -> int:
    """How many GPUs the container sees: TAO trains on one unless told `--gpus N`."""
    import shutil
    import subprocess

    text = str(gpus).strip().lower()
    if text in ("none", "", "cpu", "false"):
        return 0
    if text != "all":
        return len([g for g in (str(gpus).split(",") if isinstance(gpus, (str, int)) else list(gpus)) if str(g).strip()])
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def stage_train(ctx: RunContext) -> None:
    net = network(ctx.cfg)
    p = _Paths(mount_plan(ctx))
    spec = experiment_for_run(ctx, p)
    missing = tao_spec.missing_required(spec, net)
    if missing:
        raise HackathonError(f"The TAO experiment spec still lacks {missing}.", fix="Set them under tao.experiment.")
    spec_file = tao_dir(ctx, "specs") / "experiment.txt"
    tao_spec.write_spec(spec, spec_file, net)  # what evaluate / inference / export read
    results = results_dir(ctx, "train")
    epochs = int(spec["training_config"]["num_epochs"])
    done = weights(ctx)
    if done and not ctx.resuming:
        # a finished training with another config (network, epochs, data): keep it aside, start over
        aside = results.with_name(f"train.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        results.rename(aside)
        _say(f"[tao] {net} train: the config changed since the last training; its results moved to {aside}")
        ctx.record(previous_results=str(aside))
        done = []
    n_gpus = gpu_count(ctx.cfg.get("gpus", "all"))
    args: list[tuple[str, str | None, str | None]] = [("--gpus", str(n_gpus), None)] if n_gpus > 1 else []
    train_spec = spec
    if done:
        last_epoch, last = done[-1]
        ctx.record(resumed_from=str(last), resumed_epoch=last_epoch)
        if last_epoch >= epochs:
            _say(f"[tao] {net} train: {last.name} is the last epoch ({epochs}); nothing left to train")
            return
        _say(f"[tao] {net} train: resuming from {last.name} (epoch {last_epoch + 1} of {epochs})")
        if net == "ssd":
            args += [("-m", p.c(last), INPUT), ("--initial_epoch", str(last_epoch + 1), None)]
        else:  # YOLOv3 resumes through the spec (it reads the epoch from the file name)
            train_spec = dict(spec)
            tc = dict(spec["training_config"])
            for k in tao_spec.LOAD_MODEL_ONEOF:
                tc.pop(k, None)
            tc["resume_model_path"] = p.c(last)
            train_spec["training_config"] = tc
    run_spec = tao_dir(ctx, "specs") / "train.txt"
    fields = tao_spec.write_spec(train_spec, run_spec, net)
    argv, checks = _command(net, "train", [("-e", p.c(run_spec), INPUT), _results_arg(net, "train", p.c(results))] + args)
    # TAO names checkpoints <net>_<arch>[<nlayers>]_epoch_NNN.hdf5 and writes one every checkpoint_interval
    job = _job(ctx, argv, spec_checks(run_spec, fields) + checks, results, [results / "weights" / "*_epoch_*.hdf5"])
    _run(ctx, job, _echo(ctx))
    ctx.record(final_weights=str(final_weights(ctx)))


def _spec_and_model(ctx: RunContext) -> tuple[Path, Path, list[PathCheck]]:
    spec_file = tao_dir(ctx, "specs") / "experiment.txt"
    if not spec_file.exists():
        raise HackathonError(f"{spec_file} is missing.", fix="Run the tao_train stage first.")
    return spec_file, final_weights(ctx), spec_checks(spec_file, _fields_of(spec_file))


def _fields_of(spec_file: Path) -> list:
    """SpecFields of an already written spec (path fields with their line numbers)."""
    return tao_spec.path_fields_in_text(spec_file.read_text(), source=str(spec_file))


def stage_evaluate(ctx: RunContext) -> None:
    net = network(ctx.cfg)
    p = _Paths(mount_plan(ctx))
    spec_file, model, spec_paths = _spec_and_model(ctx)
    results = results_dir(ctx, "evaluate")
    argv, checks = _command(net, "evaluate", [("-e", p.c(spec_file), INPUT), ("-m", p.c(model), INPUT),
                                              _results_arg(net, "evaluate", p.c(results))])
    job = _job(ctx, argv, spec_paths + checks, results, [])
    result = _run(ctx, job, _echo(ctx))
    reported = status_map(result.statuses)
    if reported is None:
        reported = parse_tao_map(job.log_file)
    if reported is not None:  # TAO's own VOC-style number, kept next to ours for comparison
        ctx.record(tao_reported_map=reported)


def status_map(statuses: list[dict]) -> float | None:
    """The mAP TAO's evaluate puts in its SUCCESS line (`"kpi": {"mAP": ...}`, ssd and yolo_v3 evaluate.py)."""
    for s in reversed(statuses):
        kpi = s.get("kpi")
        if isinstance(kpi, dict) and isinstance(kpi.get("mAP"), (int, float)):
            return float(kpi["mAP"])
    return None


def parse_tao_map(log_file: Path) -> float | None:
    """The last `mAP  0.xxx` (or `mAP: 0.xxx`) line TAO's evaluate printed, if any."""
    if not log_file.exists():
        return None
    hits = re.findall(r"^\W*mAP\s*:?\s*([0-9]*\.?[0-9]+)\s*$", log_file.read_text(errors="replace"), re.MULTILINE)
    return float(hits[-1]) if hits else None


def stage_inference(ctx: RunContext) -> None:
    net = network(ctx.cfg)
    p = _Paths(mount_plan(ctx))
    spec_file, model, spec_paths = _spec_and_model(ctx)
    t = _container_cfg(ctx.cfg)
    results = results_dir(ctx, "inference")
    for old in (results / "labels").glob("*.txt"):  # predictions of an earlier model must not be scored
        old.unlink()
    images = kitti_dir(ctx, str(ctx.cfg.eval.split)) / "images"
    argv, checks = _command(net, "inference", [
        ("-e", p.c(spec_file), INPUT), ("-m", p.c(model), INPUT), ("-i", p.c(images), INPUT),
        _results_arg(net, "inference", p.c(results)), ("-t", str(t.get("inference_threshold", 0.01)), None)])
    job = _job(ctx, argv, spec_paths + checks, results, [results / "labels" / "*.txt"])
    _run(ctx, job, _echo(ctx))


def stage_score(ctx: RunContext) -> None:
    """Our scorer on TAO's KITTI output: the same pycocotools numbers as backend=torch."""
    from tasks.detect.evaluate import kitti_predictions_to_coco, score_coco
    from tasks.detect.stages import add_report_assets

    e = ctx.cfg.eval
    gt_json = split_json(ctx, str(e.split))
    dets = kitti_predictions_to_coco(results_dir(ctx, "inference") / "labels", gt_json,
                                     kitti_index=kitti_dir(ctx, str(e.split)) / "kitti_index.json")
    out = ctx.dir("eval")
    metrics = score_coco(gt_json, dets, out, samples=int(e.samples), confusion_threshold=float(e.confusion_threshold),
                         voc_mode=str(e.voc_mode))
    ctx.write_metrics(metrics)
    assets = read_json(out / "assets.json", default={}) or {}
    commands = read_json(tao_dir(ctx) / "launcher_commands.json", default={}) or {}
    add_report_assets(ctx, images=assets.get("images", []), prefix="eval/", headline=assets.get("headline"),
                      tables=assets.get("tables", []) + [{"title": f"TAO {network(ctx.cfg)}: launcher equivalent",
                                                          "rows": [{"stage": k, "command": v} for k, v in commands.items()]}])
    _say(f"[tao] {e.split}: mAP@0.5 {metrics['map50']:.3f}   mAP@[.5:.95] {metrics['map']:.3f}   "
          f"VOC AP@0.5 {metrics['voc_ap50']:.3f}")


def stage_export(ctx: RunContext) -> None:
    net = network(ctx.cfg)
    p = _Paths(mount_plan(ctx))
    spec_file, model, spec_paths = _spec_and_model(ctx)
    export = results_dir(ctx, "export")
    onnx = export / (model.stem + ".onnx")
    if onnx.exists():  # ours, from an earlier attempt: TAO export refuses to overwrite
        onnx.unlink()
    argv, checks = _command(net, "export", [("-m", p.c(model), INPUT), ("-o", p.c(onnx), OUTPUT),
                                            ("-e", p.c(spec_file), INPUT), _results_arg(net, "export", p.c(export)),
                                            ("--gen_ds_config", None, None)])
    job = _job(ctx, argv, spec_paths + checks, export, [onnx])
    _run(ctx, job, _echo(ctx))
    ctx.record(onnx=str(onnx))


def stage_engine(ctx: RunContext) -> None:
    net = network(ctx.cfg)
    t = _container_cfg(ctx.cfg)
    gpus = str(ctx.cfg.get("gpus", "all")).lower()
    if not t.get("trt_engine"):
        ctx.record(skipped="tao.trt_engine is false")
        _say("[tao] TensorRT engine: skipped (tao.trt_engine: false). " + ENGINE_NOTE)
        return
    if gpus in ("none", "", "cpu"):
        ctx.record(skipped="gpus=none: TensorRT needs a GPU")
        _say("[tao] TensorRT engine: skipped, gpus=none (TensorRT builds on a GPU). " + ENGINE_NOTE)
        return
    p = _Paths(mount_plan(ctx))
    spec_file, model, spec_paths = _spec_and_model(ctx)
    export = results_dir(ctx, "export")
    onnx = export / (model.stem + ".onnx")
    engine = export / f"{model.stem}.{t.get('trt_data_type', 'fp32')}.engine"
    results = results_dir(ctx, "engine")
    argv, checks = _command(net, "gen_trt_engine", [
        ("-m", p.c(onnx), INPUT), ("-e", p.c(spec_file), INPUT), ("--engine_file", p.c(engine), OUTPUT),
        ("--data_type", str(t.get("trt_data_type", "fp32")), None), ("--batch_size", "1", None),
        ("--max_batch_size", str(t.get("trt_max_batch_size", 8)), None), _results_arg(net, "gen_trt_engine", p.c(results))])
    job = _job(ctx, argv, spec_paths + checks, results, [engine],
               image=str(t.get("deploy_image")), launcher="deploy")
    _run(ctx, job, _echo(ctx))
    ctx.record(engine=str(engine), note=ENGINE_NOTE)
    _say("[tao] " + ENGINE_NOTE)


TAO_KEYS = ("network", "image", "gpus", "tao")


def _collect_export(ctx: RunContext) -> None:
    from tasks.detect.export_model import collect_tao_stage

    collect_tao_stage(ctx)


def tao_stages() -> list[Stage]:
    return [
        Stage("tao_convert", stage_convert, "data", config_keys=("network", "image", "tao.mounts_file", "tao.mounts")),
        Stage("tao_train", stage_train, "train", devices="gpus", config_keys=TAO_KEYS),
        Stage("tao_evaluate", stage_evaluate, "evaluate", config_keys=TAO_KEYS),
        Stage("tao_inference", stage_inference, "evaluate", config_keys=TAO_KEYS),
        Stage("tao_score", stage_score, "report", config_keys=("eval",)),
        Stage("tao_export", stage_export, "export", config_keys=TAO_KEYS),
        Stage("export_model", _collect_export, "export", config_keys=("onnx.score_threshold",)),
        Stage("tao_engine", stage_engine, "export", config_keys=TAO_KEYS),
    ]


def build_tao_stages(cfg) -> list[Stage]:
    """Shared data stages (prepare / split / balance) + the TAO stages."""
    net = network(cfg)  # fail fast on a bad network=
    if not cfg.export.kitti:
        raise HackathonError("backend=tao reads the KITTI export, but export.kitti is false.", fix="Set export.kitti=true.")
    if "tao" not in cfg:
        raise HackathonError("The detect spec has no `tao:` block (the TAO backend's settings).",
                             fix="Copy the tao: block from specs/detect/demo.yaml into your spec.")
    # the experiment spec (template + tao.experiment) against TAO's messages, before any stage or container
    tao_spec.check_experiment(net, _container_cfg(cfg).get("experiment") or {})
    from tasks.detect.stages import shared_stages

    return shared_stages() + tao_stages()
