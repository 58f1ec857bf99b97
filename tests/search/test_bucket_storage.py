"""`--storage s3://…` (and gs://): a run kept in a bucket, tested against an S3 server on
127.0.0.1 (moto's). The transfers and checks here; whole searches (failures, an interrupted run
resumed on a machine with no copy of it, multi-worker trials) in test_bucket_search.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.checks import BadInput, check_bucket_run, check_storage
from trainables.storage import RemoteRun, TrialSync, join_uri, mirror_dir, scratch_dir

ROOT = Path(__file__).resolve().parents[2]


def test_uri_parts_go_before_the_query_and_local_places_drop_it(monkeypatch, tmp_path):
    assert join_uri("s3://b/runs?region=x&scheme=http", "r1", "train") == "s3://b/runs/r1/train?region=x&scheme=http"
    assert join_uri("gs://b/", "r1") == "gs://b/r1"
    monkeypatch.setenv("EXITSEARCH_STAGING", str(tmp_path))
    m = mirror_dir("s3://b/a/../runs?endpoint_override=h:1", "r1")
    assert m == tmp_path / "runs" / "s3" / "b" / "a" / "runs" / "r1"  # no query, no way out of the staging root
    assert scratch_dir("s3://b/runs", "r1", "t1") == tmp_path / "scratch" / "s3" / "b" / "runs" / "r1" / "t1"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_pull_fetches_what_is_new_there_and_push_what_changed_here(s3, tmp_path):
    remote = RemoteRun(s3.bucket(), "r1")
    up = tmp_path / "up"
    _write(up / "a" / "status.json", '{"status": "running"}')
    _write(up / "b.txt", "x" * 10)
    _write(up / ".b.txt.abcdefgh.tmp", "half-written")
    assert sorted(p.name for p in remote.push_tree(up, "trials")) == ["b.txt", "status.json"]  # temporaries stay
    down = tmp_path / "down"
    assert len(remote.pull_tree("trials", down)) == 2
    assert (down / "a" / "status.json").read_text() == '{"status": "running"}'
    assert not (down / ".b.txt.abcdefgh.tmp").exists()
    # written moments ago there: a same-size rewrite within the same second could hide, so the
    # next pull fetches once more; after that, nothing until it changes
    time.sleep(2.5)
    remote.pull_tree("trials", down)
    assert remote.pull_tree("trials", down) == []
    _write(up / "a" / "status.json", '{"status": "complete"}')  # another writer: a rewrite there
    remote.push(up / "a" / "status.json", "trials/a/status.json")
    assert [p.name for p in remote.pull_tree("trials", down)] == ["status.json"]
    assert json.loads((down / "a" / "status.json").read_text()) == {"status": "complete"}


def test_a_resume_keeps_the_drivers_own_files_when_they_are_newer_than_the_buckets(s3, tmp_path):
    """A driver killed (kill -9) after writing its journal but before pushing it: resuming on the
    same machine keeps the longer local journal; on another machine the bucket's is fetched."""
    from trainables.storage import RunMirror

    remote = RemoteRun(s3.bucket(), "r1")
    _write(tmp_path / "up" / "study.journal", "one\n")
    remote.push(tmp_path / "up" / "study.journal", "study.journal")
    here = RunMirror(remote, tmp_path / "here")
    here.pull_run()
    assert (here.local / "study.journal").read_text() == "one\n"
    time.sleep(1.1)
    (here.local / "study.journal").write_text("one\ntwo\n")  # written after the last push
    here.pull_run()
    assert (here.local / "study.journal").read_text() == "one\ntwo\n"
    there = RunMirror(remote, tmp_path / "there")
    there.pull_run()
    assert (there.local / "study.journal").read_text() == "one\n"


def test_the_schedulers_rungs_go_up_with_the_tables_and_come_down_on_a_resume(s3, tmp_path):
    from search.moasha import STATE_FILE
    from trainables.storage import DRIVER_STATE, RunMirror

    assert STATE_FILE in DRIVER_STATE
    remote = RemoteRun(s3.bucket(), "r1")
    here = RunMirror(remote, tmp_path / "here")
    _write(here.local / STATE_FILE, '{"rungs": 1}')
    here.push_tables()
    assert remote.read_text(STATE_FILE) == '{"rungs": 1}'
    there = RunMirror(remote, tmp_path / "there")  # another machine resumes the run
    there.pull_run()
    assert (there.local / STATE_FILE).read_text() == '{"rungs": 1}'
    time.sleep(1.1)
    _write(here.local / STATE_FILE, '{"rungs": 2}')  # written after the last push, then killed
    here.pull_run()
    assert (here.local / STATE_FILE).read_text() == '{"rungs": 2}'  # the newer copy stays


def test_a_trial_pushes_only_its_changed_files_and_not_what_it_pulled(s3, tmp_path):
    remote = RemoteRun(s3.bucket(), "r1")
    first = TrialSync(remote, "t1", tmp_path / "node1")
    _write(first.local / "status.json", "1")
    _write(first.local / "curves.json", "[]")
    assert len(first.push()) == 2
    assert first.push() == []
    _write(first.local / "curves.json", "[1]")
    assert [p.name for p in first.push()] == ["curves.json"]
    first.done()
    assert not first.local.exists()
    retry = TrialSync(remote, "t1", tmp_path / "node2")  # a retry on another node starts from the bucket's files
    retry.pull()
    assert (retry.local / "curves.json").read_text() == "[1]"
    assert retry.push() == []


def test_bad_bucket_storage_is_refused_with_what_to_do(s3):
    with pytest.raises(BadInput, match="ftp:// is not a bucket"):
        check_storage("ftp://host/runs")
    with pytest.raises(BadInput, match="cannot be opened .*'nonsense'"):
        check_storage(s3.bucket() + "&nonsense=1")
    with pytest.raises(BadInput, match="cannot be written .*bucket exists"):
        check_storage(s3.uri("no-such-bucket/runs"))
    uri = s3.bucket()
    check_storage(uri)  # writable: and the probe left nothing behind
    fs, base = s3.fs(uri)
    import pyarrow.fs as pafs

    assert fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)) == []


def test_bucket_run_names_new_and_resumed(s3, tmp_path):
    uri = s3.bucket()
    RemoteRun(uri, "old").push(_spec(tmp_path), "spec.json")
    with pytest.raises(BadInput, match="run 'old' exists in"):
        check_bucket_run(uri, "old", False, tmp_path / "m-old")
    with pytest.raises(BadInput, match="no run 'new' to resume .*runs in .*: old"):
        check_bucket_run(uri, "new", True, tmp_path / "m-new")
    _write(tmp_path / "m-new" / "spec.json", "{}")  # this machine's copy of a run the bucket no longer has
    with pytest.raises(BadInput, match="this machine has a copy .*move that directory aside"):
        check_bucket_run(uri, "new", False, tmp_path / "m-new")
    check_bucket_run(uri, "old", True, tmp_path / "m-old")
    check_bucket_run(uri, "fresh", False, tmp_path / "m-fresh")


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text("{}")
    return path


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_refuses_a_missing_bucket_and_a_missing_run_writing_nothing(s3, tmp_path):
    env = s3.env(tmp_path / "staging")
    base = ["--space", "tiny_gran", "--data", "synthetic"]
    r = _run([*base, "--storage", s3.uri("no-such-bucket/runs")], env)
    assert r.returncode == 2, r.stderr
    assert "cannot be written" in r.stderr and "bucket exists" in r.stderr and "Traceback" not in r.stderr
    uri = s3.bucket()
    r = _run([*base, "--storage", uri, "--name", "nope", "--resume"], env)
    assert r.returncode == 2, r.stderr
    assert "no run 'nope' to resume" in r.stderr and "there are no runs in" in r.stderr
    assert not (tmp_path / "staging").exists()
    fs, path = s3.fs(uri)
    import pyarrow.fs as pafs

    assert fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)) == []


def _put_raw(s3, uri: str, key: str, body: bytes = b"payload") -> None:
    """An object put with its key as is (boto3: no path normalisation), as anyone holding the
    bucket's credentials could."""
    import boto3

    bucket, _, prefix = uri.split("://", 1)[1].split("?", 1)[0].partition("/")
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3.port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)


@pytest.mark.parametrize("key", ["r1/trials/t1/../../../../../escaped.txt", "r1/trials/t1//escaped.txt",
                                 "r1/trials/t1/./escaped.txt"])
def test_keys_that_would_escape_the_copy_are_refused_by_the_driver_and_the_trials(s3, tmp_path, key):
    from trainables.storage import RunMirror, StorageError

    uri = s3.bucket()
    _put_raw(s3, uri, "r1/trials/t1/status.json", b"{}")
    _put_raw(s3, uri, key)
    remote = RemoteRun(uri, "r1")
    copy = tmp_path / "a" / "b" / "c" / "d" / "copy"
    with pytest.raises(StorageError, match=r"refused to fetch .*escaped\.txt.* outside this machine's copy"):
        RunMirror(remote, copy).pull_trials()  # the driver's pull
    with pytest.raises(StorageError, match="refused to fetch"):
        TrialSync(remote, "t1", tmp_path / "node").pull()  # what a trial pulls
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_run_name_that_would_leave_the_staging_folder_is_refused(s3, tmp_path, monkeypatch):
    from trainables.storage import StorageError, fetch_run

    monkeypatch.setenv("EXITSEARCH_STAGING", str(tmp_path / "staging"))
    for bad in ("..", "."):
        with pytest.raises(StorageError, match="is not a run name"):
            fetch_run(join_uri(s3.bucket(), bad))  # s3://BUCKET/runs/..?options
    assert not (tmp_path / "staging").exists()


def test_a_checkpoint_is_checked_before_it_is_fetched(s3, tmp_path):
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from trainables.storage import StorageError, checkpoint_directory

    uri = s3.bucket()
    _put_raw(s3, uri, "r1/ckpt/state.pt")
    fs, base = s3.fs(uri)
    ok = Checkpoint(f"{base}/r1/ckpt", filesystem=fs)
    assert (Path(checkpoint_directory(ok)) / "state.pt").read_bytes() == b"payload"
    _put_raw(s3, uri, "r1/ckpt/../../../../../../../../tmp/escaped.txt")
    with pytest.raises(StorageError, match="refused to fetch checkpoint"):
        checkpoint_directory(Checkpoint(f"{base}/r1/ckpt", filesystem=fs))
    assert isinstance(fs, pafs.FileSystem)
