"""Atomic writes: a reader sees the old or the new file, never a part; concurrent writers of one
file (the shards of a job writing predict.json) do not trip over each other."""

import multiprocessing
import threading

from detect.util import atomic


def _write_many(path, tag, n=200):
    for k in range(n):
        atomic.write_bytes(path, f"{tag}:{k}:".encode() + b"x" * 5000)


def test_concurrent_writers_of_one_file_all_succeed(tmp_path):
    target = tmp_path / "predict.json"
    errors = []

    def run(tag):
        try:
            _write_many(target, tag)
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(4)]
    procs = [multiprocessing.get_context("fork").Process(target=_write_many, args=(target, f"p{i}"))
             for i in range(2)]
    for w in threads + procs:
        w.start()
    for w in threads + procs:
        w.join()
    assert not errors and all(p.exitcode == 0 for p in procs)
    body = target.read_bytes()
    assert body.endswith(b"x" * 5000) and len(body.split(b":")) == 3  # one whole write, not a mix
    assert [p.name for p in tmp_path.iterdir()] == ["predict.json"]  # no temporary file left


def test_temporary_names_keep_the_suffix_and_differ():
    a, b = atomic.temporary_name("run/model.keras"), atomic.temporary_name("run/model.keras")
    assert a != b and a.suffix == b.suffix == ".keras" and a.parent.name == "run"
