"""The same search with `--storage DIR` and with `--storage s3://…`, in one command.

Runs `python -m search.run` (same space, data, seed, trials) against a local directory and
against a bucket on an S3 server started here on 127.0.0.1 (moto's, the `test` extra), the two
arms interleaved `--repeats` times, and prints each arm's median wall time and complete trials,
the ratio bucket / local, and what the bucket holds (files, bytes). The arms draw the same
configurations (the sampler is seeded) but not the same trial seeds (a trial's seed derives
from its Tune id), so their metrics are not compared.

    python -m benchmarks.bucket_storage [--space gran_hbn] [--data synthetic] [--data-size tiny] [--trials 2] [--repeats 1]

A local S3 server measures what the platform adds (uploads after each epoch, the driver's
fetches, Tune's and Ray Train's own uploads), not a real bucket's latency or bandwidth.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _search(args: argparse.Namespace, storage: str, name: str, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "search.run", "--space", args.space, "--data", args.data, "--data-size", args.data_size,
           "--trials", str(args.trials), "--seed", str(args.seed), "--storage", storage, "--name", name, "--no-report"]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"search failed ({p.returncode}): {p.stderr[-2000:]}")
    return time.perf_counter() - t


def _complete(table) -> int:
    return len({r["trial_id"] for r in table.to_pylist() if r["status"] == "complete"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="gran_hbn")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--data-size", default="tiny", choices=("tiny", "smoke", "full"))
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit("moto[server] is not installed: pip install -e '.[test]'") from None
    import logging
    import socket

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(creds)
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    fs, _ = pafs.FileSystem.from_uri(f"s3://bench?{query}&allow_bucket_creation=true")
    fs.create_dir("bench")
    bucket = f"s3://bench/runs?{query}"
    times: dict[str, list[float]] = {"local": [], "bucket": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bucket-bench-") as tmp:
            env = {**os.environ, **creds, "EXITSEARCH_STAGING": str(Path(tmp) / "staging")}
            for r in range(args.repeats):  # interleaved: drift in the machine's load hits both arms alike
                times["local"].append(_search(args, str(Path(tmp) / "runs"), f"local-{r}", env))
                times["bucket"].append(_search(args, bucket, f"bucket-{r}", env))
            local = pq.read_table(Path(tmp) / "runs" / "local-0" / "results.parquet")
            remote = pq.read_table(io.BytesIO(fs.open_input_file("bench/runs/bucket-0/results.parquet").readall()))
            infos = fs.get_file_info(pafs.FileSelector("bench/runs/bucket-0", recursive=True))
            files = [i for i in infos if i.type == pafs.FileType.File]
    finally:
        server.stop()
    for arm, ts in times.items():
        print(json.dumps({"arm": arm, "space": args.space, "data": args.data, "data_size": args.data_size,
                          "trials": args.trials, "repeats": len(ts), "median_wall_s": round(statistics.median(ts), 2)}))
    print(json.dumps({
        "wall_ratio_bucket_over_local": round(statistics.median(times["bucket"]) / statistics.median(times["local"]), 4),
        "bucket_files": len(files), "bucket_bytes": sum(i.size for i in files),
        "complete_trials_local": _complete(local), "complete_trials_bucket": _complete(remote),
    }))


if __name__ == "__main__":
    main()
