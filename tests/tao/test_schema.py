"""TAO specs checked against TAO 5's own messages (issue 16): the specs the pipeline generates pass for
the demo and workstation configs; hand-edited specs with an SSD-only field in yolo_v3, a typo, a bad enum,
wrong nesting, a value where a block belongs (and the reverse), a repeated single field or two oneof
members are refused with the line and the fix; a bad override stops the run before docker is touched.
The message tables are also compiled into real protobuf descriptors, so protobuf's own text_format.Merge
(what TAO calls) agrees with the checker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hackathon.core.errors import HackathonError
from tasks.detect import tao_pipeline, tao_spec
from tasks.detect.tao_messages import MESSAGES, ROOTS
from tasks.detect.tao_schema import FieldType, check_text, reachable, validate_file, validate_text

ANCHORS = {"big_anchor_shape": "[(90.00, 80.00), (120.00, 110.00), (200.00, 190.00)]",
           "mid_anchor_shape": "[(40.00, 38.00), (50.00, 48.00), (70.00, 66.00)]",
           "small_anchor_shape": "[(10.00, 9.00), (18.00, 17.00), (28.00, 26.00)]"}


def _ctx(tmp_path: Path, spec: str, network: str):
    from hackathon.core.config import load_config
    from hackathon.core.runner import RunContext

    cfg = load_config("detect", spec, ["backend=tao", f"network={network}"])
    return RunContext(task="detect", run_dir=tmp_path / "run", cfg=cfg)


def generated(tmp_path: Path, spec: str, network: str, monkeypatch) -> dict[str, Path]:
    """The spec files the pipeline writes for one run (train.txt as written when resuming YOLOv3)."""
    monkeypatch.setattr(tao_pipeline, "_anchors", lambda ctx: dict(ANCHORS))
    ctx = _ctx(tmp_path, spec, network)
    tao_pipeline.build_tao_stages(ctx.cfg)  # the pre-run check passes
    p = tao_pipeline._Paths(tao_pipeline.mount_plan(ctx))
    out = tmp_path / "specs"
    files = {"dataset_convert": out / "convert.txt", network: out / "experiment.txt"}
    tao_spec.write_spec(tao_pipeline.convert_spec_for_run(ctx, p), files["dataset_convert"], "dataset_convert")
    experiment = tao_pipeline.experiment_for_run(ctx, p)
    tao_spec.write_spec(experiment, files[network], network)
    resumed = dict(experiment, training_config={**experiment["training_config"], "pretrain_model_path": None,
                                                "resume_model_path": "/workspace/tao-experiments/w_epoch_001.hdf5"})
    files["train"] = out / "train.txt"
    tao_spec.write_spec(resumed, files["train"], network)
    return files


@pytest.mark.parametrize("spec", ["demo", "workstation"])
@pytest.mark.parametrize("network", ["ssd", "yolo_v3"])
def test_generated_specs_pass_the_check(tmp_path, monkeypatch, spec, network):
    files = generated(tmp_path, spec, network, monkeypatch)
    for kind, path in (("dataset_convert", files["dataset_convert"]), (network, files[network]),
                       (network, files["train"])):
        assert validate_file(path, kind).startswith("ok")
        assert check_text(path.read_text(), kind) == []
    text = files[network].read_text()
    assert ("yolov3_config {" if network == "yolo_v3" else "ssd_config {") in text
    # the per-network difference of issue 16: only SSD's EvalConfig has validation_period_during_training
    assert ("validation_period_during_training" in text) == (network == "ssd")


# ------------------------------------------------------------------ refusals of hand-edited specs

def _yolo_text(tmp_path, monkeypatch) -> str:
    return generated(tmp_path, "demo", "yolo_v3", monkeypatch)["yolo_v3"].read_text()


def _insert_after(text: str, anchor_re: str, new_line: str) -> tuple[str, int]:
    """`text` with `new_line` after the first line matching anchor_re; returns the new line's number."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if re.search(anchor_re, line))
    lines.insert(i + 1, new_line)
    return "\n".join(lines) + "\n", i + 2


def _replace(text: str, old_re: str, new: str) -> tuple[str, int]:
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if re.search(old_re, line))
    lines[i] = re.sub(old_re, new, lines[i])
    return "\n".join(lines) + "\n", i + 1


def _second_optimizer(text: str) -> tuple[str, int]:
    text, line = _insert_after(text, r"^\s*optimizer \{", "      sgd { momentum: 0.9 }")
    return text, line + 1  # the template's adam block, now one line lower, is the second member


CASES = {
    # name: (edit, field in the message, words the message must contain, words the fix must contain)
    "ssd_field_in_yolo_eval_config": (
        lambda t: _insert_after(t, r"^eval_config \{", "  validation_period_during_training: 10"),
        "eval_config.validation_period_during_training",
        ["has no field `validation_period_during_training`",
         "average_precision_mode, batch_size, matching_iou_threshold, visualize_pr_curve",
         "nvidia_tao_tf1/cv/common/proto/eval_config.proto", "nvidia_tao_tf1/cv/ssd/proto/eval_config.proto"],
        ["Delete line", "checkpoint_interval"]),
    "misspelled_field": (
        lambda t: _replace(t, r"num_epochs:", "num_epoch:"),
        "training_config.num_epoch", ["has no field `num_epoch`", "batch_size_per_gpu"],
        ["Did you mean `num_epochs`?"]),
    "bad_enum_value": (
        lambda t: _replace(t, r"average_precision_mode: SAMPLE", "average_precision_mode: SAMPLES"),
        "eval_config.average_precision_mode", ["SAMPLES is not a value of this enum (SAMPLE, INTEGRATE)"],
        ["Did you mean SAMPLE?"]),
    "quoted_enum": (
        lambda t: _replace(t, r"type: L1", 'type: "L1"'),
        "training_config.regularizer.type", ['"L1" is a quoted string, but this field is an enum'], ["bare"]),
    "wrong_nesting": (
        lambda t: _insert_after(t, r"^training_config \{", "  arch_conv_blocks: 2"),
        "training_config.arch_conv_blocks", ["wrong nesting", "has no field `arch_conv_blocks`"],
        ["Move it to yolov3_config.arch_conv_blocks"]),
    "scalar_where_a_block_belongs": (
        lambda t: _insert_after(t, r"^training_config \{", "  cost_scaling: 1"),
        "training_config.cost_scaling", ["is a value ('1')", "is a block"], ["cost_scaling { ... }"]),
    "block_where_a_scalar_belongs": (
        lambda t: _replace(t, r"num_epochs: \d+", "num_epochs { value: 2 }"),
        "training_config.num_epochs", ["is a block but `num_epochs` is a uint32"], ["num_epochs: <value>"]),
    "single_field_twice": (
        lambda t: _insert_after(t, r"batch_size_per_gpu:", "    batch_size_per_gpu: 32"),
        "training_config.batch_size_per_gpu", ["set again", "silently keep only the last"], ["Keep one"]),
    "list_for_a_single_field": (
        lambda t: _replace(t, r"freeze_bn: false", "freeze_bn: [true, false]"),
        "yolov3_config.freeze_bn", ["written as a list"], ["freeze_bn: value"]),
    "two_oneof_members": (
        lambda t: _second_optimizer(t),
        "training_config.optimizer.adam", ["sgd (line", "is already set", "oneof `optimizer`"],
        ["Keep only one of adam, sgd, rmsprop"]),
    "negative_uint32": (
        lambda t: _replace(t, r"nlayers: 18", "nlayers: -18"),
        "yolov3_config.nlayers", ["-18 is out of range for uint32"], ["Write a uint32"]),
    "unquoted_string": (
        lambda t: _replace(t, r'arch: "resnet"', "arch: resnet"),
        "yolov3_config.arch", ["resnet is not a string"], ["double quotes"]),
    "bad_map_entry_value": (
        lambda t: _replace(t, r'value: "with_mask"', "value: 3"),
        "dataset_config.target_class_mapping.value", ["3 is not a string"], ["double quotes"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_edited_spec_is_refused_with_line_field_and_fix(tmp_path, monkeypatch, case):
    edit, field, says, fix_says = CASES[case]
    text, line = edit(_yolo_text(tmp_path, monkeypatch))
    problems = check_text(text, "yolo_v3")
    assert [(p.line, p.field) for p in problems] == [(line, field)], problems
    for words in says:
        assert words in problems[0].text, (case, problems[0].text)
    for words in fix_says:
        assert words in problems[0].fix, (case, problems[0].fix)
    spec_file = tmp_path / "edited.txt"
    spec_file.write_text(text)
    with pytest.raises(HackathonError) as exc:
        validate_file(spec_file, "yolo_v3")
    assert f"{spec_file} line {line}: {field}" in exc.value.message and exc.value.fix


def test_several_problems_are_reported_together_and_syntax_errors_name_the_line(tmp_path, monkeypatch):
    text = _yolo_text(tmp_path, monkeypatch)
    text, l1 = _replace(text, r"num_epochs:", "num_epoch:")
    text, l2 = _replace(text, r"average_precision_mode: SAMPLE", "average_precision_mode: SAMPLES")
    assert [p.line for p in check_text(text, "yolo_v3")] == sorted([l1, l2])
    with pytest.raises(HackathonError) as exc:
        validate_text("random_seed: 1\ntraining_config {\n  num_epochs: 3\n", "ssd", source="s.txt")
    assert "s.txt line 2" in exc.value.message and "opened on line 2 is never closed" in exc.value.message


def test_the_same_spec_is_right_for_ssd_and_wrong_for_yolo_v3():
    text = "eval_config {\n  validation_period_during_training: 10\n  batch_size: 8\n}\n"
    assert check_text(text, "ssd") == []
    assert [p.line for p in check_text(text, "yolo_v3")] == [2]


def test_cli_check(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hackathon.cli import app

    good = generated(tmp_path, "demo", "yolo_v3", monkeypatch)["yolo_v3"]
    result = CliRunner().invoke(app, ["detect", "tao-spec", "yolo_v3", "--check", str(good)])
    assert result.exit_code == 0 and "ok" in result.output
    bad = tmp_path / "bad.txt"
    text, line = _insert_after(good.read_text(), r"^eval_config \{", "  validation_period_during_training: 10")
    bad.write_text(text)
    result = CliRunner().invoke(app, ["detect", "tao-spec", "yolo_v3", "--check", str(bad)])
    assert result.exit_code != 0
    out = " ".join(result.output.split())  # rich wraps long lines
    assert f"line {line}" in out and "validation_period_during_training" in out and "fix:" in out
    # the same file is a valid SSD eval_config, so --check ssd complains only about the yolov3_config block
    result = CliRunner().invoke(app, ["detect", "tao-spec", "ssd", "--check", str(bad)])
    assert result.exit_code != 0 and "yolov3_config" in result.output
    assert "validation_period_during_training" not in " ".join(result.output.split())


def test_cli_write_refuses_an_unknown_field_override_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from hackathon.cli import app

    out = tmp_path / "x.txt"
    result = CliRunner().invoke(app, ["detect", "tao-spec", "yolo_v3", "+eval_config.validation_period_during_training=5",
                                      "--out", str(out)])
    assert result.exit_code != 0 and "validation_period_during_training" in result.output and not out.exists()
    result = CliRunner().invoke(app, ["detect", "tao-spec", "ssd", "+eval_config.validation_period_during_training=5",
                                      "--out", str(out)])
    assert result.exit_code == 0 and out.exists()


@pytest.mark.parametrize("override", ["+tao.experiment.eval_config.validation_period_during_training=5",
                                      "+tao.experiment.training_config.learning_rate.soft_start_annealing_schedule.warmup=0.1",
                                      "+tao.experiment.yolov3_config.arch=5"])
def test_bad_override_stops_the_run_before_docker_is_touched(tmp_path, monkeypatch, override):
    import hackathon.core.docker
    import tasks.detect.tao_runner
    from hackathon.core.runner import run_task

    def tripwire(*a, **k):
        raise AssertionError("docker was touched although the spec check should have refused the run")

    monkeypatch.setattr(tasks.detect.tao_runner, "run_job", tripwire)
    monkeypatch.setattr(tao_pipeline, "run_job", tripwire)
    monkeypatch.setattr(hackathon.core.docker, "client", tripwire)
    run = tmp_path / "run"
    with pytest.raises(HackathonError) as exc:
        run_task("detect", ["backend=tao", "network=yolo_v3", "image=none:none", "gpus=none", override],
                 run_dir=run, echo=lambda *_: None)
    field = override.split("=")[0].split(".")[-1]
    assert f"`{field}`" in exc.value.message or f"{field}:" in exc.value.message
    assert "override" in exc.value.fix
    assert not (run / "stages").exists() or not list((run / "stages").glob("*.done"))  # not even prepare ran


# ------------------------------------------------------------------ the tables vs protobuf itself

def _pool_for(kind: str):
    """The message tables of `kind` compiled into protobuf descriptors (field numbers in table order)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    fdp = descriptor_pb2.FileDescriptorProto(name=f"{kind}.proto", package=f"t_{kind}", syntax="proto3")
    FD = descriptor_pb2.FieldDescriptorProto
    scalar = {"string": FD.TYPE_STRING, "bool": FD.TYPE_BOOL, "uint32": FD.TYPE_UINT32, "int32": FD.TYPE_INT32,
              "float": FD.TYPE_FLOAT, "double": FD.TYPE_DOUBLE}

    def name(key: str) -> str:
        return key.replace("/", "_")

    for key in sorted(reachable(ROOTS[kind])):
        msg = fdp.message_type.add(name=name(key))
        _, fields, oneofs = MESSAGES[key]
        oneof_index = {}
        for i, (group, members) in enumerate(oneofs.items()):
            msg.oneof_decl.add(name=group)
            oneof_index.update({m: i for m in members})
        for number, (fname, text) in enumerate(fields.items(), 1):
            t = FieldType.of(text)
            f = msg.field.add(name=fname, number=number,
                              label=FD.LABEL_OPTIONAL if t.label == "single" else FD.LABEL_REPEATED)
            if fname in oneof_index:
                f.oneof_index = oneof_index[fname]
            if t.label == "map":
                entry = msg.nested_type.add(name=fname.title().replace("_", "") + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=FD.LABEL_OPTIONAL, type=FD.TYPE_STRING)
                entry.field.add(name="value", number=2, label=FD.LABEL_OPTIONAL, type=scalar[t.map_value])
                f.type, f.type_name = FD.TYPE_MESSAGE, f".t_{kind}.{msg.name}.{entry.name}"
            elif t.kind == "enum":
                enum = msg.enum_type.add(name=fname.upper() + "_ENUM")
                for v, value_name in enumerate(t.enum):
                    enum.value.add(name=value_name, number=v)
                f.type, f.type_name = FD.TYPE_ENUM, f".t_{kind}.{msg.name}.{enum.name}"
            elif t.kind == "message":
                f.type, f.type_name = FD.TYPE_MESSAGE, f".t_{kind}.{name(t.message)}"
            else:
                f.type = scalar[t.kind]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return pool.FindMessageTypeByName(f"t_{kind}.{name(ROOTS[kind])}")


def _merge(kind: str, text: str) -> None:
    from google.protobuf import message_factory, text_format

    text_format.Merge(text, message_factory.GetMessageClass(_pool_for(kind))())  # what TAO's spec loaders call


@pytest.mark.parametrize("network", ["ssd", "yolo_v3"])
def test_protobuf_itself_parses_the_generated_specs(tmp_path, monkeypatch, network):
    files = generated(tmp_path, "workstation", network, monkeypatch)
    _merge("dataset_convert", files["dataset_convert"].read_text())
    _merge(network, files[network].read_text())
    _merge(network, files["train"].read_text())


@pytest.mark.parametrize("case", ["ssd_field_in_yolo_eval_config", "misspelled_field", "bad_enum_value",
                                  "quoted_enum", "wrong_nesting", "scalar_where_a_block_belongs",
                                  "block_where_a_scalar_belongs", "list_for_a_single_field", "negative_uint32",
                                  "unquoted_string", "bad_map_entry_value"])
def test_protobuf_refuses_what_the_checker_refuses(tmp_path, monkeypatch, case):
    """The cases where the real parser stops too (TAO's `Merge` silently accepts the other two: a single
    field twice and two oneof members, which the checker refuses because the first value would be lost)."""
    from google.protobuf import text_format

    text, _ = CASES[case][0](_yolo_text(tmp_path, monkeypatch))
    with pytest.raises(text_format.ParseError):
        _merge("yolo_v3", text)
