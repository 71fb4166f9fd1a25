"""`hackathon doctor`: every problem the team lost days to, checked up front, each with its fix.

A check is (name, status ok/warn/fail, detail, fix, tasks that need it). Nothing heavy is imported:
versions come from package metadata; torch/torchvision importability is tried in a subprocess.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, distribution, version

from hackathon.core.paths import TASKS, runs_root

ALL = frozenset(TASKS)
AUDIO = frozenset({"asr", "tts"})
DETECT = frozenset({"detect"})
APT_FIX = "sudo apt-get install -y {pkg}   (or run `make setup`, which installs it when it can)"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""
    needed_by: frozenset = field(default_factory=frozenset)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["needed_by"] = sorted(self.needed_by)
        return d


def _run(cmd: list[str], timeout: float = 20) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)} timed out after {timeout} s"


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", "ok" if ok else "fail", f"{platform.python_version()} at {sys.executable}",
                 "" if ok else "Use Python >= 3.10 (make setup creates .venv with python3).", ALL)


def check_tool(name: str, version_args: list[str], apt_pkg: str, needed_by: frozenset) -> Check:
    path = shutil.which(name)
    if not path:
        return Check(name, "fail", "not installed", APT_FIX.format(pkg=apt_pkg), needed_by)
    rc, out = _run([path, *version_args])
    first = out.splitlines()[0] if out else ""
    return Check(name, "ok" if rc == 0 else "warn", f"{path}: {first}",
                 "" if rc == 0 else f"`{name} {' '.join(version_args)}` failed; reinstall {apt_pkg}.", needed_by)


def check_espeak_voice() -> Check:
    rc, out = _run(["espeak-ng", "--voices=cmn"])
    if rc == 127:
        return Check("espeak-ng mandarin voice", "fail", "espeak-ng missing", APT_FIX.format(pkg="espeak-ng"), AUDIO)
    ok = "cmn-latn-pinyin" in out
    return Check("espeak-ng mandarin voice", "ok" if ok else "fail",
                 "cmn-latn-pinyin available (the demo speech voice)" if ok else "voice cmn-latn-pinyin not found",
                 "" if ok else "Install espeak-ng-data (Debian's espeak-ng ships it).", AUDIO)


def docker_checks() -> list[Check]:
    """Client, daemon, socket permission, nvidia runtime — the fixes users needed most."""
    from hackathon.core.docker import diagnose_engine

    return [Check(c["name"], c["status"], c["detail"], c.get("fix", ""), DETECT) for c in diagnose_engine()]


def check_gpus() -> Check:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return Check("gpus", "warn", "nvidia-smi not found: training runs on the CPU (slow; fine for the demo)",
                     "On the GPU workstation install the NVIDIA driver (nvidia-smi must work).", frozenset())
    rc, out = _run([smi, "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader"])
    if rc != 0:
        return Check("gpus", "fail", f"nvidia-smi failed: {out[:200]}",
                     "The driver is broken or mismatched: reboot after a driver update, or reinstall the driver.", frozenset())
    return Check("gpus", "ok", "; ".join(out.splitlines()), "", frozenset())


def check_ngc_login() -> Check:
    from hackathon.core.ngc import credential_state, docker_config_dir, other_config_dirs

    state = credential_state(docker_config_dir())
    if state.has_credential:
        return Check("ngc login", "ok", f"nvcr.io credential in {state.config_file} ({state.via})", "", DETECT)
    others = []
    for d in other_config_dirs():
        try:
            if credential_state(d).has_credential:
                others.append(str(d / "config.json"))
        except OSError:
            continue
    if others:
        return Check("ngc login", "fail",
                     f"no nvcr.io credential in {state.config_file}, the config docker reads for you; "
                     f"but {', '.join(others)} has one (logged in as another user / with sudo)",
                     "Run `hackathon ngc login` as the user who runs the pipelines (without sudo).", DETECT)
    return Check("ngc login", "warn", f"not logged in to nvcr.io ({state.config_file})",
                 "hackathon ngc login  (needed once to pull the TAO images; local images work without it)", DETECT)


def check_disk(min_free_gb: float = 20.0) -> Check:
    root = runs_root()
    probe = root if root.exists() else root.parent
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 2**30
    status = "ok" if free_gb >= min_free_gb else ("warn" if free_gb >= 2 else "fail")
    return Check("disk", status, f"{free_gb:.1f} GiB free at {probe}",
                 "" if status == "ok" else f"Free space under {probe} or set HACKATHON_RUNS to a bigger disk "
                 f"(checkpoints and .nemo files need ~{min_free_gb:.0f} GiB).", ALL)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _vtuple(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3]) if v else ()


def unmet_requirements(package: str, of: tuple[str, ...]) -> list[str]:
    """Requirements that `package` declares on the packages `of` and that the installed versions break."""
    from packaging.requirements import Requirement

    try:
        reqs = distribution(package).requires or []
    except PackageNotFoundError:
        return []
    problems = []
    for line in reqs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.name.lower() not in of:
            continue
        installed = _version(req.name)
        if installed and req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{package} needs {req.name}{req.specifier}, installed {installed}")
    return problems


KNOWN_BAD = (
    # (predicate on versions, message, fix)
    (lambda v: v["hydra-core"] and v["omegaconf"] and _vtuple(v["hydra-core"]) < (1, 3) and _vtuple(v["omegaconf"]) >= (2, 3),
     "hydra-core < 1.3 with omegaconf >= 2.3 (ImportError / 'Unsupported interpolation type' at config load)",
     "pip install 'hydra-core>=1.3,<1.4' 'omegaconf>=2.3,<2.4'"),
    (lambda v: v["ruamel.yaml"] and v["nemo_toolkit"] and _vtuple(v["ruamel.yaml"]) >= (0, 18) and _vtuple(v["nemo_toolkit"]) < (1, 21),
     "ruamel.yaml >= 0.18 with old nemo_toolkit (\"'load' has been removed, use yaml=YAML(typ='rt')\")",
     "pip install 'ruamel.yaml<0.18' or upgrade nemo_toolkit"),
    (lambda v: v["torch"] and "+cpu" in v["torch"] and v["torchvision"] and "+cpu" not in v["torchvision"],
     "a CPU-only local torch wheel with a registry torchvision (torchvision, lightning and NeMo fail to import)",
     "pip install --force-reinstall torch torchvision  (unpinned: the registry build runs on CPU too)"),
)
VERSION_PACKAGES = ("nemo_toolkit", "torch", "torchvision", "hydra-core", "omegaconf", "ruamel.yaml",
                    "lightning", "pytorch-lightning", "onnxruntime", "pycocotools", "docker")


def check_versions() -> list[Check]:
    v = {name: _version(name) for name in VERSION_PACKAGES}
    detail = ", ".join(f"{k} {val}" for k, val in v.items() if val) or "no ML packages installed"
    checks = [Check("python packages", "ok", detail, "", frozenset())]
    for predicate, message, fix in KNOWN_BAD:
        if predicate(v):
            checks.append(Check("known bad combination", "fail", message, fix, AUDIO))
    problems = (unmet_requirements("nemo_toolkit", ("hydra-core", "omegaconf", "torch", "lightning", "ruamel.yaml"))
                + unmet_requirements("torchvision", ("torch",))
                + unmet_requirements("hydra-core", ("omegaconf",)))
    if problems:
        checks.append(Check("version requirements", "fail", "; ".join(problems),
                            "pip install -e '.[all]' in the repo's .venv (it resolves matching versions).", ALL))
    if v["nemo_toolkit"] is None:
        checks.append(Check("nemo_toolkit", "warn", "not installed (asr/tts pipelines need it)",
                            "make setup   (or .venv/bin/pip install -e '.[asr,tts]')", AUDIO))
    if v["torch"] and v["torchvision"]:
        rc, out = _run([sys.executable, "-c", "import torch, torchvision; print(torch.__version__, torch.cuda.is_available())"],
                       timeout=120)
        checks.append(Check("torch import", "ok" if rc == 0 else "fail",
                            f"torch {out.split()[0]} cuda={out.split()[-1]}" if rc == 0 else out.splitlines()[-1][:300],
                            "" if rc == 0 else "pip install --force-reinstall torch torchvision (unpinned, from the registry)",
                            ALL))
    return checks


def check_triton_libpython() -> Check:
    """pytriton's Triton Python stub must load this interpreter's libpython (hackathon/serve/libpython.py)."""
    from hackathon.serve.libpython import diagnose

    found = diagnose()
    if found.stub is None:
        return Check("triton python stub", "warn", "nvidia-pytriton is not installed (hackathon serve needs it)",
                     "pip install -e '.[serve]' in the repo's .venv", frozenset())
    if not found.problem:
        return Check("triton python stub", "ok", f"loads {found.resolved} (this interpreter's own)", "", frozenset())
    status = "warn" if found.needed_dir else "fail"
    return Check("triton python stub", status, found.problem, found.fix, frozenset())


def run_checks() -> list[Check]:
    checks = [check_python(),
              check_tool("ffmpeg", ["-version"], "ffmpeg", AUDIO),
              check_tool("sox", ["--version"], "sox", AUDIO),
              check_tool("espeak-ng", ["--version"], "espeak-ng", AUDIO),
              check_espeak_voice()]
    checks += docker_checks()
    checks += [check_gpus(), check_ngc_login(), check_disk()]
    checks += check_versions()
    checks.append(check_triton_libpython())
    return checks


def exit_code(checks: list[Check], task: str | None) -> int:
    """1 when a failed check is needed by `task` (or by any task when none is given)."""
    return int(any(c.status == "fail" and (not c.needed_by or task is None or task in c.needed_by or task == "all")
                   for c in checks))


def print_checks(checks: list[Check], console) -> None:
    from rich.table import Table

    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    table = Table(title="hackathon doctor", show_lines=False)
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail, c.fix)
    console.print(table)
