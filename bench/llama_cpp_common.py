"""What bench/llama_cpp_baseline.py and bench/llama_cpp_compare.py share: running
`pimoe` with its peak memory measured, the run's provenance for the JSON, and writing
the JSON atomically. Not part of the test suite."""
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIMOE = os.path.join(ROOT, "target", "release", "pimoe")
HELD_TEXT = os.path.join(ROOT, "bench", "reference", "heldout.txt")


def cpu_name() -> str:
    """The model name and the SIMD extensions the kernels choose between, as pimoe's
    reports give them: these VMs share one name across hosts with and without AVX-512."""
    name, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.read().splitlines()
        name = next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in lines if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags]
    return f"{name} with {' '.join(f.replace('_', '') for f in simd)}" if simd else name


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(threads: int, pimoe: str) -> dict:
    """Device, commit, date and the versions of everything that ran."""
    import gguf  # noqa: F401  (its version is recorded)
    import llama_cpp
    import numpy as np
    from importlib.metadata import version

    v = subprocess.run([pimoe, "--version"], capture_output=True, text=True)
    return {
        "device": f"cpu: {cpu_name()} ({os.cpu_count()} logical cores)",
        "threads": threads,
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "llama_cpp_python": llama_cpp.__version__,
            "gguf": version("gguf"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "pimoe": v.stdout.strip() if v.returncode == 0 else f"unavailable: {v.stderr.strip()[-200:]}",
        },
    }


def file_info(path: str) -> dict:
    return {"path": os.path.relpath(path, ROOT), "bytes": os.path.getsize(path), "sha256": sha256(path)}


def run_pimoe(pimoe: str, args: list, threads: int, timeout: float = 3600) -> dict:
    """Runs `pimoe ARGS` on `threads` rayon threads; returns its exit status, stdout,
    stderr's tail, wall seconds and peak resident memory (GNU time's, else the
    rusage of the children, which is the largest child so far)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = [pimoe] + args
        if gnu_time:
            cmd = [gnu_time, "-v", "-o", tf.name] + cmd
        t = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}", "command": args}
        wall = time.perf_counter() - t
        rss_kb, how = None, None
        if gnu_time:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tf.read())
            if m:
                rss_kb, how = int(m.group(1)), "/usr/bin/time -v"
        if rss_kb is None:
            import resource

            rss_kb, how = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "getrusage(RUSAGE_CHILDREN), max over children so far"
    out = {
        "ok": p.returncode == 0,
        "command": ["pimoe"] + args,
        "exit_status": p.returncode,
        "wall_s": wall,
        "max_rss_bytes": rss_kb * 1024 if rss_kb is not None else None,
        "max_rss_from": how,
        "stdout": p.stdout,
        "stderr_tail": p.stderr[-2000:],
    }
    if not out["ok"]:
        lines = [l for l in p.stderr.splitlines() if l.startswith("error:")]
        out["error"] = lines[-1] if lines else p.stderr.strip()[-500:]
    return out


def write_json(path: str, report: dict) -> None:
    text = json.dumps(report, indent=2)
    with open(path + ".tmp", "w") as fh:
        fh.write(text + "\n")
    os.rename(path + ".tmp", path)
    print(f"wrote {path}", file=sys.stderr)
