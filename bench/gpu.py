"""GPU reader benchmark: frames/s of the whole reader per device on 1280x720 JPEG frames,
from memory and through Kafka, by batch size; latency p50/p99 per frame at 50% and 90% of
the peak rate; GPU utilisation and memory; CPU cores the process used to feed the device.

    # the H100 table in docs/benchmarks.md (needs onnxruntime-gpu and cuda-python):
    .venv/bin/python bench/gpu.py --backend cuda --batch-sizes 1,8,32,64,128 --frames 2048
    # a CPU smoke run of the same code:
    .venv/bin/python bench/gpu.py --backend onnxruntime --batch-sizes 1,4 --frames 8 --kafka-frames 8

"From memory": JPEG bytes in a list -> decode threads -> batches -> reader, no Kafka. The
latency runs offer frames at a fixed rate (open loop) and time each frame from its arrival
to the end of its batch's read, so batching delay is included. "Through Kafka": frames
published to a fresh topic on the dev broker (or ALPR_KAFKA_BOOTSTRAP), read by a
RecognitionWorker, timed from the first gathered frame to the last committed one.
Prints one JSON object and the markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from alpr.gpu import PlateReader, ReaderSettings, decode_image, open_reader  # noqa: E402
from alpr.recognition.footage import DEMO_PLATES, car_frame  # noqa: E402


def jpeg_frames(count: int, distinct: int = 64) -> list[bytes]:
    """1280x720 road scenes, a car with a plate in most, JPEG quality 90 (a camera's usual)."""
    made = []
    for i in range(min(count, distinct)):
        plate = None if i % 5 == 4 else DEMO_PLATES[i % len(DEMO_PLATES)]
        made.append(cv2.imencode(".jpg", car_frame(plate, i, (i % 7) / 6), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return [made[i % len(made)] for i in range(count)]


def scene_frames(folder: Path, count: int) -> list[bytes]:
    """Real road scenes (e.g. the EU set) letterboxed onto 1280x720 and re-encoded at quality 90."""
    made = []
    for path in sorted(folder.glob("*.jpg"))[:count]:
        image = cv2.imread(str(path))
        scale = min(1280 / image.shape[1], 720 / image.shape[0])
        resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        canvas = np.zeros((720, 1280, 3), np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        made.append(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    if not made:
        raise SystemExit(f"no .jpg images in {folder}")
    return [made[i % len(made)] for i in range(count)]


class GpuSampler:
    """GPU utilisation (%) and memory used (MiB), sampled every 0.2 s while running; empty without a GPU."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[float, float] | None:
        """(util %, MiB used) of GPU 0 from NVML if pynvml is installed, else nvidia-smi, else None."""
        try:
            import pynvml
        except ImportError:
            pynvml = None
        if pynvml is not None:
            try:
                pynvml.nvmlInit()
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                return (float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                        pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            except pynvml.NVMLError:
                pass  # no driver or no device through NVML: try the command line tool
        if not shutil.which("nvidia-smi"):
            return None
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                              "-i", "0"], capture_output=True, text=True, timeout=5).stdout.strip()
        try:
            util, mem = (float(v) for v in out.split(",")[:2])
        except ValueError:
            return None  # nvidia-smi present but no GPU answered
        return util, mem

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            got = self._sample()
            if got is None:
                return
            self.util.append(got[0])
            self.mem.append(got[1])

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, float | None]:
        return {"gpu_util_mean_pct": round(float(np.mean(self.util)), 1) if self.util else None,
                "gpu_mem_max_mib": round(max(self.mem)) if self.mem else None}


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run_from_memory(reader: PlateReader, jpegs: list[bytes], batch: int, decode_threads: int,
                    inference_threads: int, rate: float | None = None, deadline_s: float = 0.05) -> dict:
    """Push every frame through decode -> batch -> read; rate None: as fast as possible."""
    arrivals: queue.Queue[tuple[float, bytes]] = queue.Queue()
    latencies: list[float] = []
    slots = threading.Semaphore(inference_threads + 1)  # batches in flight, as in the worker

    def offer() -> None:
        start = time.perf_counter()
        for n, data in enumerate(jpegs):
            if rate:
                wait = start + n / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)  # open-loop arrivals at a fixed rate
            arrivals.put((time.perf_counter(), data))

    def read(items: list[tuple[float, object]]) -> None:
        try:
            reader.read_batch([future.result() for _, future in items])
            end = time.perf_counter()
            latencies.extend(end - arrived for arrived, _ in items)
        finally:
            slots.release()

    sampler = GpuSampler()
    with ThreadPoolExecutor(decode_threads) as decode, ThreadPoolExecutor(inference_threads) as infer, sampler:
        producer = threading.Thread(target=offer, daemon=True)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        producer.start()
        taken, reads = 0, []
        while taken < len(jpegs):
            arrived, data = arrivals.get()
            items = [(arrived, decode.submit(decode_image, data))]
            until = time.perf_counter() + deadline_s
            while len(items) < batch and taken + len(items) < len(jpegs):
                try:
                    arrived, data = arrivals.get(timeout=max(0.0, until - time.perf_counter()))
                except queue.Empty:
                    break
                items.append((arrived, decode.submit(decode_image, data)))
            taken += len(items)
            slots.acquire()
            reads.append(infer.submit(read, items))
        for future in reads:
            future.result()  # re-raises a reader error here
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    ms = np.array(latencies) * 1000
    return {"batch": batch, "frames": len(jpegs), "frames_per_s": round(len(jpegs) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "cpu_cores": round(cpu / wall, 2), **sampler.summary()}


class TimedBackend:
    """Wraps a backend and adds up the seconds spent inside run(): the rest of a read is host work."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0
        self.name, self.square_inputs = inner.name, inner.square_inputs

    def max_batch(self, model):
        return self.inner.max_batch(model)

    def metadata(self, model):
        return self.inner.metadata(model)

    def run(self, model, batch):
        started = time.perf_counter()
        try:
            return self.inner.run(model, batch)
        finally:
            self.seconds += time.perf_counter() - started


def host_costs(reader: PlateReader, jpegs: list[bytes], batch: int) -> dict:
    """Per frame, on one thread: JPEG decode, the reader's host work (resize, line decoding, crops,
    CTC decoding: everything outside backend.run) and the model calls; and the CPU cores those
    host parts need at 1,000 frames/s. Runs on any backend (on a CPU the model part is the CPU's)."""
    timed = TimedBackend(reader.backend)
    twin = PlateReader(timed, reader.settings)
    started = time.perf_counter()
    images = [decode_image(j) for j in jpegs]
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    for n in range(0, len(images), batch):
        twin.read_batch(images[n:n + batch])
    read_s = time.perf_counter() - started
    per = 1000 / len(jpegs)
    host_ms = (read_s - timed.seconds) * per
    return {"frames": len(jpegs), "batch": batch, "decode_ms": round(decode_s * per, 2),
            "reader_host_ms": round(host_ms, 2), "model_ms": round(timed.seconds * per, 2),
            "host_cores_at_1000_fps": round((decode_s * per + host_ms), 1)}


def precision_parity(folder: Path, precision: str) -> dict:
    """The CUDA backend's graphs at `precision`, run on the CPU, against the FP32 CPU reader on a
    labelled set (both with square inputs, as the GPU backends pad): same plates per image,
    largest confidence difference, and exact reads of each against the labels."""
    import onnxruntime as ort

    from alpr.gpu import cuda
    from alpr.gpu.backends import OnnxRuntimeBackend

    class CpuTwin(OnnxRuntimeBackend):
        def _session(self, model):
            if model.name not in self._sessions:
                self._sessions[model.name] = ort.InferenceSession(
                    cuda.session_graph(model, precision), sess_options=self._options,
                    providers=["CPUExecutionProvider"])
            return self._sessions[model.name]

        def run(self, model, batch):
            session = self._session(model)
            dtype = cuda.input_dtype(session)
            return [o.astype(np.float32) for o in session.run(None, {session.get_inputs()[0].name: batch.astype(dtype)})]

    full, twin = OnnxRuntimeBackend(), CpuTwin()
    full.square_inputs = twin.square_inputs = True
    region = next((r for r in ("eu", "br", "us") if folder.name.endswith(f"-{r}")), "any")
    a, b = PlateReader(full, ReaderSettings(region=region)), PlateReader(twin, ReaderSettings(region=region))
    same = exact_a = exact_b = 0
    worst, different = 0.0, []
    paths = sorted(folder.glob("*.jpg"))
    for path in paths:
        image = cv2.imread(str(path))
        label = path.with_suffix(".txt").read_text().split("\t")[5].strip().upper()
        ra, rb = a.read(image), b.read(image)
        exact_a += label in {r.text for r in ra}
        exact_b += label in {r.text for r in rb}
        if [r.text for r in ra] == [r.text for r in rb]:
            same += 1
            worst = max([worst] + [abs(x.confidence - y.confidence) for x, y in zip(ra, rb)])
        else:
            different.append(path.name)
    return {"set": folder.name, "precision": precision, "images": len(paths), "same_plates": same,
            "different": different, "max_confidence_diff": round(worst, 4),
            "exact_fp32": exact_a, f"exact_{precision}": exact_b}


def run_through_kafka(reader: PlateReader, jpegs: list[bytes], batch: int, partitions: int, decode_threads: int,
                      inference_threads: int) -> dict:
    """Frames through a real broker and a RecognitionWorker: publish, then time the worker."""
    from datetime import datetime, timedelta, timezone

    from confluent_kafka.admin import NewTopic

    from alpr.core import kafka
    from alpr.core.kafka import Publisher
    from alpr.core.settings import load_settings
    from alpr.core.topics import apply_topics
    from alpr.ops.broker import DevBroker, free_port
    from alpr.recognition.worker import RecognitionWorker
    from alpr.schemas import Codec, Frame, GeoPosition

    broker = None
    if os.environ.get("ALPR_KAFKA_BOOTSTRAP"):
        settings = load_settings()
    else:
        broker = DevBroker("127.0.0.1", free_port(), Path(f"/tmp/bench-gpu-broker-{os.getpid()}.log")).start()
        settings = load_settings(kafka_bootstrap=broker.bootstrap)
    try:
        admin = kafka.admin(settings)
        apply_topics(admin, replication_factor=1)
        tag = uuid.uuid4().hex[:8]
        frames_topic, reads_topic = f"bench-frames-{tag}", f"bench-reads-{tag}"
        for name, parts in ((frames_topic, partitions), (reads_topic, partitions)):
            admin.create_topics([NewTopic(name, num_partitions=parts, replication_factor=1)])[name].result(10)
        codec = Codec(settings.schema_registry_url)
        pub = Publisher(settings, codec, "bench-camera")
        t = datetime.now(timezone.utc)
        for n, data in enumerate(jpegs):
            camera = f"cam-{n % (partitions * 4)}"  # many cameras, spread over every partition
            pub.publish(frames_topic, camera, Frame(
                frame_id=f"{tag}-{n}", camera_id=camera, agency="BENCH", seq=n,
                captured_at=t + timedelta(seconds=12 * n),  # 12 s apart: no read folds into another
                position=GeoPosition(lat=38.5, lon=-121.5), width=1280, height=720, jpeg=data))
        pub.flush()
        worker = RecognitionWorker(settings, reader, batch_size=batch, group=f"bench-{tag}",
                                   frames_topic=frames_topic, reads_topic=reads_topic, client_id="bench-worker",
                                   decode_threads=decode_threads, inference_threads=inference_threads)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        while worker.stats.frames == 0 and thread.is_alive():
            time.sleep(0.005)  # the group join is not part of the figure
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        with GpuSampler() as sampler:
            while worker.stats.frames_done < len(jpegs) and thread.is_alive():
                time.sleep(0.005)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        stop.set()
        thread.join(60)
        return {"batch": batch, "frames": len(jpegs), "frames_per_s": round(len(jpegs) / wall, 1),
                "cpu_cores": round(cpu / wall, 2), "reads": worker.stats.reads, **sampler.summary()}
    finally:
        if broker:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["onnxruntime", "cuda", "tensorrt"], default="cuda")
    parser.add_argument("--precision", choices=["fp16", "fp16-all", "fp32"], default="fp16", help="cuda backend only")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--frames", type=int, default=1024, help="frames per from-memory run")
    parser.add_argument("--kafka-frames", type=int, default=None,
                        help="frames through Kafka (default --frames; 0: skip)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--decode-threads", type=int, default=4)
    parser.add_argument("--inference-threads", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime CPU threads (onnxruntime backend)")
    parser.add_argument("--warmup", type=int, default=2, help="batches read before timing (cuDNN picks its kernels)")
    parser.add_argument("--square", action="store_true",
                        help="onnxruntime backend: pad frames square as the GPU backends do (host costs comparable)")
    parser.add_argument("--images", type=Path, default=None,
                        help="real scenes to use (letterboxed to 1280x720) instead of generated ones")
    parser.add_argument("--parity", type=Path, default=None,
                        help="only compare the cuda backend's graphs at --precision with FP32, on the CPU, on this set")
    parser.add_argument("--host-costs-only", action="store_true", help="only the per-frame host cost pass")
    args = parser.parse_args()
    if args.parity:
        print(json.dumps({"date": date.today().isoformat(),
                          "command": " ".join([".venv/bin/python", "bench/gpu.py", *sys.argv[1:]]),
                          **precision_parity(args.parity, args.precision)}))
        return
    sizes = [int(v) for v in args.batch_sizes.split(",")]
    options = {"max_batch": max(sizes), "precision": args.precision} if args.backend == "cuda" else {}
    if args.backend == "tensorrt":
        options = {"max_batch": max(sizes)}
    reader = open_reader(args.backend, threads=args.threads, settings=ReaderSettings(), **options)
    if args.square:
        reader.backend.square_inputs = True
    jpegs = scene_frames(args.images, args.frames) if args.images else jpeg_frames(args.frames)
    host = host_costs(reader, jpegs[: min(len(jpegs), 64)], max(sizes))
    if args.host_costs_only:
        print(json.dumps({"date": date.today().isoformat(), "backend": args.backend,
                          "square": reader.backend.square_inputs,
                          "command": " ".join([".venv/bin/python", "bench/gpu.py", *sys.argv[1:]]), "host": host}))
        return
    for size in sizes:  # every shape the runs will use, so no timed run pays a first-use cost
        for _ in range(args.warmup):
            reader.read_batch([decode_image(j) for j in jpegs[:size]])
    memory = [run_from_memory(reader, jpegs, s, args.decode_threads, args.inference_threads) for s in sizes]
    peak = max(memory, key=lambda r: r["frames_per_s"])
    loaded = []
    for share in (0.5, 0.9):
        row = run_from_memory(reader, jpegs, peak["batch"], args.decode_threads, args.inference_threads,
                              rate=share * peak["frames_per_s"])
        loaded.append({"load": f"{int(share * 100)}% of peak ({share * peak['frames_per_s']:.0f} frames/s)", **row})
    kafka_frames = args.frames if args.kafka_frames is None else args.kafka_frames
    through = ([run_through_kafka(reader, (scene_frames(args.images, kafka_frames) if args.images
                                           else jpeg_frames(kafka_frames)), s, args.partitions, args.decode_threads,
                                  args.inference_threads) for s in sizes]
               if kafka_frames else [])
    result = {"date": date.today().isoformat(), "machine": platform.node(), "cpus": os.cpu_count(),
              "backend": args.backend, "precision": args.precision if args.backend == "cuda" else None,
              "command": " ".join([".venv/bin/python", "bench/gpu.py", *sys.argv[1:]]),
              "host_costs": host, "from_memory": memory, "latency_at_load": loaded, "through_kafka": through}
    print(json.dumps(result, indent=2))
    for row in memory + loaded + through:
        for key in ("gpu_util_mean_pct", "gpu_mem_max_mib"):
            row[key] = "n/a" if row[key] is None else row[key]
    print("\n| source | batch | frames/s | p50 ms | p99 ms | CPU cores | GPU util % | GPU mem MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in memory:
        print(f"| memory | {r['batch']} | {r['frames_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_cores']} "
              f"| {r['gpu_util_mean_pct']} | {r['gpu_mem_max_mib']} |")
    for r in loaded:
        print(f"| memory, {r['load']} | {r['batch']} | {r['frames_per_s']} | {r['p50_ms']} | {r['p99_ms']} "
              f"| {r['cpu_cores']} | {r['gpu_util_mean_pct']} | {r['gpu_mem_max_mib']} |")
    for r in through:
        print(f"| Kafka ({args.partitions} partitions) | {r['batch']} | {r['frames_per_s']} | - | - | {r['cpu_cores']} "
              f"| {r['gpu_util_mean_pct']} | {r['gpu_mem_max_mib']} |")


if __name__ == "__main__":
    main()
