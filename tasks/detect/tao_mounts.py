"""TAO mounts: the per-run mounts file, host <-> container paths, and the pre-flight check.

The mounts file has the TAO launcher's ~/.tao_mounts.json format:
    {"Mounts": [{"source": HOST, "destination": CONTAINER}],
     "Envs": [{"variable": NAME, "value": VALUE}],
     "DockerOptions": {"user": "UID:GID", "shm_size": "16G", "ulimits": {"memlock": -1, "stack": 67108864}}}

Path mounts were the team's biggest roadblock: a spec path outside every mount, or a host folder
that does not exist, only fails deep inside the container after minutes. `preflight` checks every
spec path and every command argument BEFORE a container starts and names the spec line, the path
and the fix for each problem.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from hackathon.core.atomic import atomic_write_json
from hackathon.core.errors import HackathonError

RUN_DIR_DESTINATION = "/workspace/tao-experiments"
DOCKER_SOCKETS = (Path("/var/run/docker.sock"), Path("/run/docker.sock"))
GLOB_CHARS = set("*?[")


def forbidden_reason(source: Path) -> str | None:
    """Why mounting `source` would hand the container the machine, or None when it is fine."""
    src = Path(os.path.realpath(source))
    home = Path(os.path.realpath(Path.home()))
    ssh = home / ".ssh"
    sockets = {Path(os.path.realpath(s)) for s in DOCKER_SOCKETS}
    if src == Path("/"):
        return "it is the root filesystem"
    if src == Path("/etc") or Path("/etc") in src.parents:
        return "it is (inside) /etc, the system configuration"
    if src == Path("/root"):
        return "it is root's home directory"
    if src == ssh or ssh in src.parents or src in ssh.parents:
        return f"it is, or contains, {ssh} (SSH keys)"
    for sock in sockets:
        if src == sock or src in sock.parents:
            return f"it is, or contains, the docker socket {sock} (root on the host)"
    return None


@dataclass(frozen=True)
class Mount:
    source: Path  # host
    destination: str  # container (POSIX)
    read_only: bool = False


@dataclass
class MountPlan:
    """Mounts + envs + docker options of one run, and where they came from (for messages)."""

    mounts: list[Mount]
    envs: dict[str, str] = field(default_factory=dict)
    user: str = ""
    shm_size: str | None = None
    ulimits: dict[str, Any] = field(default_factory=dict)
    origin: str = "the run's mounts"  # the file named in fixes

    # -------------------------------------------------------- translation
    def _innermost(self, path, side) -> Mount | None:
        """The mount whose side(mount) folder holds `path` most specifically (None when none does)."""
        holders = [m for m in self.mounts if path == side(m) or side(m) in path.parents]
        return max(holders, key=lambda m: len(side(m).parts), default=None)

    def to_container(self, host: str | os.PathLike) -> str | None:
        """The container path of a host path, via the most specific mount; None when outside all."""
        h = Path(os.path.abspath(host))
        best = self._innermost(h, lambda m: Path(os.path.abspath(m.source)))
        if best is None:
            return None
        rel = h.relative_to(Path(os.path.abspath(best.source)))
        return posixpath.join(best.destination, *rel.parts) if rel.parts else best.destination

    def mount_for_container(self, container: str) -> Mount | None:
        return self._innermost(PurePosixPath(posixpath.normpath(container)), lambda m: PurePosixPath(m.destination))

    def to_host(self, container: str) -> Path | None:
        m = self.mount_for_container(container)
        if m is None:
            return None
        rel = PurePosixPath(posixpath.normpath(container)).relative_to(PurePosixPath(m.destination))
        return Path(m.source).joinpath(*rel.parts)

    def describe(self) -> str:
        return "; ".join(f"{m.source} -> {m.destination}{' (ro)' if m.read_only else ''}" for m in self.mounts) or "none"

    # -------------------------------------------------------- docker / file forms
    def volumes(self) -> dict[str, dict[str, str]]:
        """docker SDK `volumes=`."""
        return {str(m.source): {"bind": m.destination, "mode": "ro" if m.read_only else "rw"} for m in self.mounts}

    def ulimit_objects(self) -> list:
        import docker

        limits = {name: v if isinstance(v, dict) else {"soft": v, "hard": v} for name, v in self.ulimits.items()}
        return [docker.types.Ulimit(name=name, soft=int(v.get("soft", -1)), hard=int(v.get("hard", v.get("soft", -1))))
                for name, v in limits.items()]

    def to_tao_json(self) -> dict:
        mounts = [{"source": str(m.source), "destination": m.destination, **({"options": "ro"} if m.read_only else {})}
                  for m in self.mounts]
        options: dict[str, Any] = {"user": self.user}
        if self.shm_size:
            options["shm_size"] = self.shm_size
        if self.ulimits:
            options["ulimits"] = dict(self.ulimits)
        return {"Mounts": mounts, "Envs": [{"variable": k, "value": v} for k, v in self.envs.items()],
                "DockerOptions": options}


def invoking_user() -> str:
    """uid:gid of the person running the tool: containers run as them, so results are theirs."""
    return f"{os.getuid()}:{os.getgid()}"


def read_mounts_file(path: str | os.PathLike) -> MountPlan:
    """A MountPlan from a ~/.tao_mounts.json-style file; each malformed entry is named with the fix."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise HackathonError(f"Mounts file {p} does not exist.",
                             fix="Create it (TAO launcher format: {\"Mounts\": [{\"source\": ..., \"destination\": ...}]}) "
                                 "or leave tao.mounts_file: null to use only the per-run mounts.")
    except (OSError, json.JSONDecodeError) as exc:
        raise HackathonError(f"Mounts file {p} is not valid JSON: {exc}", fix="Fix the JSON at the position shown.")
    if not isinstance(data, dict) or not isinstance(data.get("Mounts", []), list):
        raise HackathonError(f"Mounts file {p}: expected an object with a \"Mounts\" list.",
                             fix='Write {"Mounts": [{"source": "/host/dir", "destination": "/workspace/dir"}]}.')
    mounts = []
    for i, entry in enumerate(data.get("Mounts", [])):
        if not isinstance(entry, dict) or not entry.get("source") or not entry.get("destination"):
            raise HackathonError(f"Mounts file {p}: Mounts[{i}] needs both \"source\" and \"destination\".",
                                 fix='Each mount is {"source": "/host/dir", "destination": "/workspace/dir"}.')
        dest = str(entry["destination"])
        if not dest.startswith("/"):
            raise HackathonError(f"Mounts file {p}: Mounts[{i}].destination {dest!r} is not an absolute container path.",
                                 fix="Write destinations like /workspace/tao-experiments.")
        mounts.append(Mount(Path(os.path.expanduser(str(entry["source"]))), posixpath.normpath(dest),
                            read_only=str(entry.get("options", "")).lower() in ("ro", "readonly", "read-only")))
    envs = {}
    for i, env in enumerate(data.get("Envs", []) or []):
        if not isinstance(env, dict) or "variable" not in env:
            raise HackathonError(f"Mounts file {p}: Envs[{i}] needs \"variable\" and \"value\".",
                                 fix='Each env is {"variable": "NAME", "value": "VALUE"}.')
        envs[str(env["variable"])] = str(env.get("value", ""))
    opts = data.get("DockerOptions", {}) or {}
    return MountPlan(mounts=mounts, envs=envs, user=str(opts.get("user", "")), shm_size=opts.get("shm_size"),
                     ulimits=dict(opts.get("ulimits", {}) or {}), origin=str(p))


def plan_for_run(run_dir: Path, user_file: str | os.PathLike | None = None, extra_mounts: Iterable = (),
                 shm_size: str | None = "16G", ulimits: dict | None = None, envs: dict | None = None,
                 user: str | None = None) -> MountPlan:
    """The run's mounts: the run dir at /workspace/tao-experiments, + `extra_mounts`, + the user's file.

    The user's mounts file (when asked for) contributes its Mounts, Envs and DockerOptions; the run
    dir mount is added unless one of the user's mounts already covers it. The container runs as the
    invoking uid:gid unless `user` (or the file) says otherwise."""
    base = read_mounts_file(user_file) if user_file else MountPlan(mounts=[])
    mounts = list(base.mounts)
    for m in extra_mounts:
        src, dest = (m["source"], m["destination"]) if isinstance(m, dict) else (m.source, m.destination)
        ro = bool(m.get("read_only", False)) if isinstance(m, dict) else m.read_only
        mounts.append(Mount(Path(os.path.expanduser(str(src))), posixpath.normpath(str(dest)), ro))
    plan = MountPlan(mounts=mounts, envs={**base.envs, **(envs or {})},
                     user=user or base.user or invoking_user(),
                     shm_size=base.shm_size or shm_size,
                     ulimits={**(ulimits or {}), **base.ulimits},
                     origin=base.origin if user_file else "tao.mounts in the spec")
    if plan.to_container(run_dir) is None:
        plan.mounts.insert(0, Mount(Path(os.path.abspath(run_dir)), RUN_DIR_DESTINATION))
    return plan


def write_mounts_file(plan: MountPlan, target: Path) -> Path:
    """The per-run mounts file (TAO launcher format), so `tao model ...` by hand sees the same mounts."""
    return atomic_write_json(target, plan.to_tao_json())


# ------------------------------------------------------------------ pre-flight

INPUT, OUTPUT, RESULTS = "input", "output", "results dir"


@dataclass(frozen=True)
class PathCheck:
    """One path a container will touch: where it was written (spec line / argument) and how it is used."""

    origin: str  # e.g. "spec /r/tao/specs/train.txt line 57 (dataset_config.data_sources[0].tfrecords_path)"
    container_path: str
    kind: str = INPUT  # INPUT must exist; OUTPUT must be creatable; RESULTS must be creatable and writable


def spec_checks(spec_file: Path, fields) -> list[PathCheck]:
    """PathChecks for the path fields of a rendered spec (tao_spec.SpecField list); all are inputs."""
    return [PathCheck(f"spec {spec_file} line {f.line} ({f.field})", str(f.value), INPUT) for f in fields]


def _uid_gid(user: str) -> tuple[int, int]:
    try:
        uid, _, gid = user.partition(":")
        return int(uid), int(gid or uid)
    except ValueError:
        return os.getuid(), os.getgid()


def writable_by(path: Path, uid: int, gid: int) -> bool:
    """Can uid:gid create files in directory `path` (as the container user will)?"""
    if uid == 0:
        return True
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_mount(m: Mount, plan: MountPlan) -> list[tuple[str, str]]:
    problems = []
    why = forbidden_reason(m.source)
    if why:
        problems.append((f"Mount {m.source} -> {m.destination} in {plan.origin} is refused: {why}.",
                         f"Mount only the data and experiment folders (e.g. ~/tao-experiments), never {m.source}."))
    elif not m.source.exists():
        problems.append((f"Mount source {m.source} (-> {m.destination}, from {plan.origin}) does not exist on the host; "
                         "docker would create it empty and root-owned.",
                         f"Create it (mkdir -p {m.source}) or correct the source path in {plan.origin}."))
    return problems


def _check_path(c: PathCheck, plan: MountPlan, uid: int, gid: int) -> list[tuple[str, str]]:
    cpath = c.container_path
    if not cpath.startswith("/"):
        return [(f"{c.origin}: {cpath!r} is a relative path; TAO resolves it inside the container's working directory.",
                 f"Use an absolute path under one of the mounts ({plan.describe()}).")]
    mount = plan.mount_for_container(cpath)
    if mount is None:
        return [(f"{c.origin}: {cpath} is not inside any mount ({plan.describe()}); the container cannot see it.",
                 f"Put it under a mounted folder, or add a mount whose destination contains it to {plan.origin}.")]
    host = plan.to_host(cpath)
    is_glob = bool(GLOB_CHARS & set(cpath))
    if c.kind == INPUT:
        if is_glob:
            if not glob.glob(str(host)):
                return [(f"{c.origin}: {cpath} (host {host}) matches no file.",
                         "Run the stage that writes it first (dataset_convert for TFRecords), or fix the pattern.")]
        elif not host.exists():
            return [(f"{c.origin}: {cpath} -> host path {host} does not exist.",
                     f"Create it or correct the path; mounts: {plan.describe()}.")]
        return []
    # outputs and results dirs: creatable, writable by the container user, not on a read-only mount
    if mount.read_only:
        return [(f"{c.origin}: {cpath} is on the read-only mount {mount.source} -> {mount.destination}.",
                 f"Write outputs under a read-write mount (drop \"options\": \"ro\" in {plan.origin}).")]
    target = host if c.kind == RESULTS else host.parent
    existing = _nearest_existing(target)
    if not existing.is_dir():
        return [(f"{c.origin}: cannot create {host}: {existing} is a file, not a folder.", f"Move {existing} away.")]
    check_dir = target if target.exists() else existing
    if not writable_by(check_dir, uid, gid):
        return [(f"{c.origin}: {check_dir} is not writable by the container user {uid}:{gid}.",
                 f"chown -R {uid}:{gid} {check_dir}  (or pick a results folder you own).")]
    return []


def preflight(plan: MountPlan, checks: Sequence[PathCheck]) -> None:
    """Refuse to start a container whose mounts or paths are wrong: ALL problems, each with its fix."""
    uid, gid = _uid_gid(plan.user or invoking_user())
    problems: list[tuple[str, str]] = []
    for m in plan.mounts:
        problems += _check_mount(m, plan)
    for c in checks:
        problems += _check_path(c, plan, uid, gid)
    if problems:
        if len(problems) == 1:
            raise HackathonError(problems[0][0], fix=problems[0][1])
        lines = [f"{len(problems)} path problems found before starting the container:"]
        lines += [f"  {i}. {msg}\n     fix: {fix}" for i, (msg, fix) in enumerate(problems, 1)]
        raise HackathonError("\n".join(lines), fix="Fix each problem listed above (nothing was started).")
