"""`alpr` subcommands: recognition (camera, worker, read)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from alpr.core.errors import AlprError, ConfigError
from alpr.core.settings import settings

BACKENDS = ["onnxruntime", "cuda", "tensorrt"]


def open_reader_or_fail(backend: str, threads: int):
    """A reader with the deployment's plate region (ALPR_PLATE_REGION) on the named backend."""
    from alpr.gpu import BackendUnavailable, ReaderSettings, open_reader

    try:  # the region from ALPR_PLATE_REGION; TensorRT's engine cache from ALPR_TRT_CACHE
        return open_reader(backend, threads=threads, settings=ReaderSettings(region=settings().plate_region))
    except BackendUnavailable as exc:
        raise ConfigError(str(exc)) from None


@click.command("camera")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="YAML file listing cameras.")
@click.option("--camera-id")
@click.option("--agency")
@click.option("--source", help="video file, rtsp:// or http(s):// URL, image folder, or synthetic:SEED")
@click.option("--lat", type=float)
@click.option("--lon", type=float)
@click.option("--heading", type=float, default=None)
@click.option("--max-fps", type=float, default=5.0, show_default=True)
@click.option("--loop", is_flag=True, help="Replay a file or folder forever.")
def camera_cmd(config_path, camera_id, agency, source, lat, lon, heading, max_fps, loop) -> None:
    """Publish camera frames to the frames topic (one camera from options, or many from --config)."""
    from alpr.core import kafka
    from pydantic import ValidationError

    from alpr.recognition.camera import CameraConfig, load_cameras, run_cameras

    s = settings()
    if config_path:
        configs = load_cameras(config_path)
    else:
        missing = [n for n, v in (("--camera-id", camera_id), ("--agency", agency), ("--source", source),
                                  ("--lat", lat), ("--lon", lon)) if v is None]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)} (or give --config)")
        try:
            configs = [CameraConfig(camera_id=camera_id, agency=agency, source=source, lat=lat, lon=lon,
                                    heading_deg=heading, max_fps=max_fps, loop=loop)]
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"--{err['loc'][0]}: {err['msg'].removeprefix('Value error, ')}") from None
    kafka.check_reachable(s)
    from alpr.core.metrics import FRAMES_DROPPED, FRAMES_SENT
    from alpr.core.runtime import ProcessRuntime

    def counters() -> dict[str, float]:
        return {"frames": sum(m.get() for m in _samples(FRAMES_SENT)),
                "dropped": sum(m.get() for m in _samples(FRAMES_DROPPED))}

    with ProcessRuntime(s, "camera", counters=counters) as rt:
        cameras = run_cameras(s, configs, rt.stop, on_loop=rt.health.beat)
    for c in cameras:
        click.echo(json.dumps({"camera_id": c.config.camera_id, "sent": c.stats.sent, "dropped": c.stats.dropped,
                               "reconnects": c.stats.reconnects}))


@click.command("worker")
@click.option("--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True,
              help="onnxruntime: CPU; cuda: ONNX Runtime on an NVIDIA GPU (.[gpu]); tensorrt: the GPU image's engines.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None,
              help="Most frames per batch  [default: ALPR_WORKER_BATCH_FRAMES]")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True,
              help="CPU threads for ONNX Runtime; run one worker per core rather than more threads.")
def worker_cmd(backend: str, batch_size: int | None, threads: int) -> None:
    """Read plates from frames and publish reads (one member of the recognition group)."""
    from alpr.core import kafka
    from alpr.recognition.worker import RecognitionWorker

    s = settings()
    kafka.check_reachable(s)
    from alpr.core.runtime import ProcessRuntime
    from alpr.core.topics import FRAMES
    from alpr.recognition.worker import GROUP

    reader = open_reader_or_fail(backend, threads)
    worker = RecognitionWorker(s, reader, batch_size=batch_size)
    st = worker.stats
    with ProcessRuntime(s, "worker", ready=worker.ready, lag_of=((GROUP, FRAMES),),
                        counters=lambda: {"frames": st.frames, "reads": st.reads, "corrupt": st.corrupt}) as rt:
        worker.run(rt.stop, on_loop=rt.health.beat)
    click.echo(json.dumps({"frames": worker.stats.frames, "reads": worker.stats.reads,
                           "corrupt": worker.stats.corrupt, "folded": worker.stats.folded}))


@click.command("read")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image per line.")
@click.option("--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
def read_cmd(images: tuple[Path, ...], as_json: bool, backend: str, threads: int) -> None:
    """Read the plates in image files. A file that cannot be read gets an error object; the rest still run."""
    from alpr.gpu import CorruptImage, decode_image

    reader = open_reader_or_fail(backend, threads)
    failed = 0
    for path in images:
        started = time.perf_counter()
        try:
            image = decode_image(path.read_bytes())
            plates = [{"text": p.text, "state": p.state, "confidence": round(p.confidence, 4), "box": list(p.box)}
                      for p in reader.read(image)]
            out = {"image": str(path), "plates": plates, "ms": round((time.perf_counter() - started) * 1000, 1)}
        except (OSError, CorruptImage) as exc:
            failed += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            out = {"image": str(path), "error": reason, "plates": []}
        if as_json:
            click.echo(json.dumps(out))
        elif "error" in out:
            click.echo(f"{path}: error: {out['error']}")
        else:
            texts = ", ".join(f"{p['text']} ({p['confidence']:.2f})" for p in out["plates"]) or "no plate"
            click.echo(f"{path}: {texts}  [{out['ms']} ms]")
    if failed == len(images):
        raise AlprError(f"none of the {len(images)} images could be read")


def _samples(metric):
    """Current values of a labelled counter's children (prometheus_client keeps them per label set)."""
    return [child._value for child in metric._metrics.values()]


COMMANDS: list = [camera_cmd, worker_cmd, read_cmd]
