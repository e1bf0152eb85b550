"""Peak memory of `dallebrain serve` while it is sent hostile uploads, printed as a table (target: below 1.5 GB).

    OMP_NUM_THREADS=1 python benchmarks/bench_serve_uploads.py --out /tmp/bench-serve

Starts `python -m dallebrain.app` (the shipped model, no study) on a free loopback port, then per case resets
the server's peak-RSS counter (/proc/PID/clear_refs) and reads it back (VmHWM) after the request:
a normal slice to vary, an upload over --max-upload-mb (a sparse file, so the client holds no copy), a valid
10000 x 10000 PNG under the upload limit, a 30000 x 30000 PNG and a gzip NIfTI that decompresses to
20000 x 20000 voxels (a few hundred KB on disk). Whether api.load_slice checks a slice's size from its header
before decoding decides the last three rows; the table says which code ran.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _bench import check_at_least, fresh_scratch  # benchmarks/_bench.py, beside this script

from dallebrain.cli._common import OneLineParser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(pid: int, key: str) -> float:
    """A /proc/PID/status memory line in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


def _png(path: Path, side: int) -> Path:
    from PIL import Image

    image = Image.new("L", (side, side))
    image.paste(200, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))  # a bright square: a real image
    image.save(path, optimize=False)
    return path


def _png_header_only(path: Path, side: int) -> Path:
    """A PNG whose header claims side x side pixels: what a decompression bomb looks like before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (side + 1) * 64, 9)  # 64 rows of data; the rest is missing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def _nifti_gzip_bomb(path: Path, side: int) -> Path:
    """A valid single-slice .nii.gz of side x side uint8 zeros, written in chunks (the client never holds it)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((side, side, 1))
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\0" * (352 - len(header.binaryblock)))
        row_block = bytes(side * 1000)
        for _ in range(side // 1000):
            f.write(row_block)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/dallebrain-bench-serve"))
    parser.add_argument("--max-upload-mb", type=float, default=20.0)
    parser.add_argument("--oversize-mb", type=int, default=500)
    args = parser.parse_args(argv)
    check_at_least(0.01, max_upload_mb=args.max_upload_mb)
    check_at_least(1, oversize_mb=args.oversize_mb)

    import httpx
    from gradio_client import Client, handle_file

    from dallebrain import api

    fresh_scratch(args.out)
    cases = {"slice 128 x 128 PNG": _png(args.out / "slice.png", 128)}
    oversize = args.out / "oversize.png"
    with oversize.open("wb") as f:
        f.truncate(args.oversize_mb * 2**20)  # sparse: no disk, no client memory
    cases[f"upload of {args.oversize_mb} MB"] = oversize
    cases["PNG 10000 x 10000"] = _png(args.out / "large.png", 10000)
    cases["PNG header 30000 x 30000"] = _png_header_only(args.out / "bomb.png", 30000)
    cases["NIfTI .gz 20000 x 20000"] = _nifti_gzip_bomb(args.out / "bomb.nii.gz", 20000)

    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(args.out / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (args.out / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "dallebrain.app", "--port", str(port), "--device", "cpu",
                               "--study-dir", str(args.out / "no-study"), "--max-upload-mb", str(args.max_upload_mb)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    rows = []
    try:
        for _ in range(240):
            if server.poll() is not None:  # it refused its options or crashed: no use waiting two minutes
                break
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit(f"error: the server did not start (see {args.out / 'server.log'})")
        client = Client(url, verbose=False)
        rows.append(("server started", "-", "-", _status(server.pid, "VmHWM"), "page served"))
        for name, path in cases.items():
            reset = _reset_peak(server.pid)
            size_mb = path.stat().st_size / 2**20
            t0 = time.perf_counter()
            if path == oversize:
                with path.open("rb") as f:
                    response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=600)
                outcome = f"HTTP {response.status_code}"
            else:
                try:
                    *_, message = client.predict(handle_file(str(path)), 1, 0, 2, 4.0, "dpm",
                                                 api_name="/variations")
                    shown = re.sub(r"\\(.)", r"\1", message or "")  # the page's markdown escapes, undone
                    outcome = shown.replace("**Not done:** ", "refused: ")[:70] if shown else "varied"
                except Exception as exc:  # noqa: BLE001 - the table reports what the client saw
                    outcome = f"{type(exc).__name__}: {str(exc)[:50]}"
            seconds = time.perf_counter() - t0
            peak = _status(server.pid, "VmHWM")
            note = "" if reset else " (peak since start)"
            rows.append((name, f"{size_mb:.1f}", f"{seconds:.1f}", peak, outcome + note))
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"--max-upload-mb {args.max_upload_mb:g}; api.load_slice header check: "
          f"{'yes (MAX_SLICE_SIDE ' + str(api.MAX_SLICE_SIDE) + ')' if hasattr(api, 'MAX_SLICE_SIDE') else 'no'}")
    print("| case                        | file MB | seconds | server peak RSS MB | outcome |")
    print("|-----------------------------|---------|---------|--------------------|---------|")
    for name, size, seconds, peak, outcome in rows:
        print(f"| {name:27s} | {size:>7s} | {seconds:>7s} | {peak:18.0f} | {outcome} |")
    worst = max(r[3] for r in rows)
    print(f"\nworst peak: {worst:.0f} MB ({'below' if worst < 1536 else 'ABOVE'} the 1.5 GB target)")


if __name__ == "__main__":
    from dallebrain.cli._common import run_script

    run_script(main)
