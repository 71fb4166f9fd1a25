"""Which libpython pytriton's Triton Python-backend stub will load, and the LD_LIBRARY_PATH that fixes it.

The stub (pytriton/tritonserver/python_backend_stubs/<X.Y>/triton_python_backend_stub) links
libpythonX.Y.so.1.0 dynamically; the loader finds the *system* one (Debian's /lib/x86_64-linux-gnu) first.
When the venv's interpreter is another build (pyenv, conda, a self-built Python), the stub runs pytriton's
proxy with one libpython and the venv's compiled modules from another, and models fail to load with
"'_thread.RLock' object has no attribute '_recursion_count'" (measured with pyenv 3.11.7). Putting the
interpreter's own lib/ first on LD_LIBRARY_PATH makes the stub load the matching libpython.

Used by `hackathon serve` (sets the variable for the tritonserver child before starting it) and by
`hackathon doctor` (reports the mismatch and the fix). Nothing heavy is imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path


@dataclass
class StubLibpython:
    stub: Path | None            # the stub binary for this interpreter's version (None: pytriton missing)
    resolved: str | None          # the libpython the loader picks for it now (None: not found)
    own: Path | None              # this interpreter's shared libpython (None: a static build)
    needed_dir: str | None        # the directory to put first on LD_LIBRARY_PATH (None: nothing to fix)
    problem: str                  # "" when the stub loads the interpreter's own libpython

    @property
    def fix(self) -> str:
        if self.needed_dir:
            return (f"export LD_LIBRARY_PATH={self.needed_dir}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} before "
                    f"starting pytriton yourself (`hackathon serve` sets it on its own)")
        if self.problem and self.own is None:
            return ("this Python has no shared libpython: rebuild it with --enable-shared (pyenv: "
                    "PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install -f X.Y.Z) or make the venv from the "
                    "system python3 (`python3 -m venv .venv`), then `make setup`")
        return ""


def stub_path() -> Path | None:
    spec = find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "python_backend_stubs" / version / \
        "triton_python_backend_stub"
    return stub if stub.exists() else None


def own_libpython() -> Path | None:
    """This interpreter's libpythonX.Y.so.1.0 (LIBDIR/INSTSONAME, else <base_prefix>/lib)."""
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    for libdir in (sysconfig.get_config_var("LIBDIR"), os.path.join(sys.base_prefix, "lib")):
        if libdir and soname.endswith(".so.1.0") and (Path(libdir) / soname).exists():
            return Path(libdir) / soname
    return None


def resolve_with(stub: Path, env: dict) -> str | None:
    """The libpython path `ldd` reports for the stub under `env` (None when not found)."""
    try:
        out = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, timeout=20, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"libpython\S*\s+=>\s+(\S+)", out)
    return None if m is None or m.group(1) == "not" else m.group(1)


def diagnose(env: dict | None = None) -> StubLibpython:
    env = dict(os.environ if env is None else env)
    stub, own = stub_path(), own_libpython()
    if stub is None:
        return StubLibpython(None, None, own, None, "")
    resolved = resolve_with(stub, env)
    same = resolved is not None and own is not None and os.path.realpath(resolved) == os.path.realpath(own)
    if same or (own is None and resolved is not None and _is_system_interpreter()):
        return StubLibpython(stub, resolved, own, None, "")
    if own is None:
        return StubLibpython(stub, resolved, None, None,
                             f"the Triton Python stub loads {resolved or 'no libpython'}, and {sys.executable} "
                             f"has no shared libpython to load instead")
    return StubLibpython(stub, resolved, own, str(own.parent),
                         f"the Triton Python stub would load {resolved or 'no libpython (not found)'}, not this "
                         f"interpreter's {own}: models fail with \"'_thread.RLock' object has no attribute "
                         f"'_recursion_count'\"")


def _is_system_interpreter() -> bool:
    return os.path.realpath(sys.base_prefix) in ("/usr", "/usr/local")


def fixed_environment(env: dict | None = None) -> tuple[dict, StubLibpython]:
    """`env` (default os.environ) with LD_LIBRARY_PATH fixed for the stub when needed, and the diagnosis."""
    env = dict(os.environ if env is None else env)
    found = diagnose(env)
    if found.needed_dir:
        current = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = found.needed_dir + (":" + current if current else "")
    return env, found
