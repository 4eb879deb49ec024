"""The environment a benchmark ran in: the machine, the OS, Python, the versions of the packages
that matter, and the repository's commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "REPO", "environment"]

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "trio-agent-kernel",
    "trio",
    "attrs",
    "httpx",
    "httpcore",
    "h11",
    "msgspec",
    "openai",
    "openai-agents",
    "pydantic-ai-slim",
    "pydantic",
    "httpx2",
    "matplotlib",
)


def environment() -> dict[str, Any]:
    """Machine, OS, Python, package versions and the repository's commit."""
    cpu_model = platform.processor() or platform.machine()
    ram = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if ram is None:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram = None
    packages: dict[str, str | None] = {}
    for d in PACKAGES:
        try:
            packages[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            packages[d] = None
    git: dict[str, Any] = {}
    try:
        git["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "kernel", "actors"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        git["kernel_or_actors_modified"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "machine": {
            "cpu_model": cpu_model,
            "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "ram_gib": round(ram / 2**30, 1) if ram else None,
        },
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": packages,
        "git": git,
    }
