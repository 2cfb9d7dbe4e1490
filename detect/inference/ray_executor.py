"""``detect predict --engine ray``: a job's units on Ray Data workers (the ``[ray]`` extra).

The units go through ``ray.data`` ``map_batches`` with :class:`UnitWorker`,
a class Ray keeps alive per worker: it loads the model once and runs
:func:`detect.inference.jobs.run_units` on each batch of units, reading its
windows with rasterio and writing each unit's result file, exactly as a
shard does; the driver merges. With no ``address`` a local Ray instance of
``workers`` CPUs is started (and stopped); with one, the job runs on that
cluster, whose nodes must reach the model, the inputs and ``OUT`` by the
same paths (a shared file system) and have ``detect`` installed.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from pathlib import Path

import numpy as np

from detect.config import defaults

#: Seconds to wait for a Ray head before giving up on an address.
CONNECT_TIMEOUT = 5.0


def check_address(address: str | None) -> None:
    """Fail within seconds, naming the address, when a Ray head cannot be reached there."""
    if address in (None, "auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379) or "
                         f"ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        raise ValueError(f"--address {address}: no Ray head answers there ({err}); start one with "
                         f"'ray start --head' or leave --address out for a local Ray instance") from None


class UnitWorker:
    """Held by Ray per worker: the model, loaded once; runs batches of units."""

    def __init__(self, model_path: str, postprocess: dict, job: dict, out_dir: str, threads: int):
        import tensorflow as tf

        from detect.imagery.images import BandRule
        from detect.imagery.rasters import open_source
        from detect.models.detector import load_detector

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.model = load_detector(model_path, threads=threads)
        self.model.set_postprocess(**postprocess)
        self.job, self.out_dir = job, out_dir
        rule = BandRule.of(self.model.model_config, tuple(job["bands"]))
        self.open_scene = lambda path: open_source(path, rule)

    def __call__(self, batch: dict) -> dict:
        from pathlib import Path

        from detect.inference.jobs import Unit, run_units

        units = [Unit(*(int(v) for v in row)) for row in batch["unit"]]
        stats = run_units(self.model, self.job, units, Path(self.out_dir), self.open_scene, progress=False)
        n = len(units)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux reports KiB)
        return {"unit": batch["unit"], "tiles": np.full(n, stats["tiles"] / n),
                "blank_tiles": np.full(n, stats["blank_tiles"] / n),
                "failed_units": np.full(n, stats["failed_units"] / n),
                "pid": np.full(n, os.getpid()), "peak_rss": np.full(n, rss)}


def run_units_ray(job: dict, units: list, out_dir, *, model_path: str, postprocess: dict,
                  workers: int = defaults.WORKERS, address: str | None = None, threads: int | None = None) -> dict:
    """Run ``units`` on Ray (see module doc); returns :func:`~detect.inference.jobs.run_units`' counts
    plus ``peak_rss`` (bytes, per worker process id)."""
    from detect.inference.jobs import unit_path

    check_address(address)
    try:
        import ray
    except ImportError as err:
        raise ImportError("--engine ray needs Ray Data: pip install 'detect[ray]'") from err
    todo = [u for u in units if not unit_path(out_dir, job, u).is_file()]
    stats = {"units": len(units), "done_before": len(units) - len(todo), "tiles": 0, "blank_tiles": 0,
             "failed_units": 0, "failed_scenes": [], "peak_rss": {}}
    if not todo:
        return stats
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     logging_level="ERROR", log_to_driver=True, configure_logging=True)
        except ConnectionError as err:
            raise ValueError(f"--address {address}: {err}") from None
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = sys.stderr.isatty()
        ds = ray.data.from_items([{"unit": [u.scene, u.index, u.first, u.stop, u.pixels]} for u in todo],
                                 override_num_blocks=min(len(todo), 4 * workers))
        out = ds.map_batches(UnitWorker, batch_size=1, concurrency=workers, num_cpus=1,
                             fn_constructor_kwargs={"model_path": str(model_path), "postprocess": postprocess,
                                                    "job": job, "out_dir": str(out_dir), "threads": threads})
        for row in out.iter_rows():
            stats["tiles"] += row["tiles"]
            stats["blank_tiles"] += row["blank_tiles"]
            stats["failed_units"] += row["failed_units"]
            pid = int(row["pid"])
            stats["peak_rss"][pid] = max(stats["peak_rss"].get(pid, 0), int(row["peak_rss"]))
    finally:
        if started:
            ray.shutdown()
    for key in ("tiles", "blank_tiles", "failed_units"):
        stats[key] = int(round(stats[key]))
    return stats


def stage_model_file(model, path, out: Path) -> str:
    """A model file Ray workers can load: the path given, a LiteRT model's file, or the in-memory
    model saved to ``OUT/job_model.keras``."""
    if path is not None:
        p = Path(path)
        return str((p / "model.keras" if p.is_dir() else p).resolve())
    if getattr(model, "path", None) is not None:
        return str(Path(model.path).resolve())
    from detect.util import atomic

    target = out / "job_model.keras"
    out.mkdir(parents=True, exist_ok=True)
    atomic.save_model(model, target)
    return str(target.resolve())
