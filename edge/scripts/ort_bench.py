"""Times ONNX models in onnxruntime for `fer-edge bench`, on the same files tract runs.

Usage: ort_bench.py ITERATIONS THREADS NAME=PATH:DIM,DIM,... [NAME=PATH:DIMS ...]
Prints one JSON object: {"version": ..., "models": {NAME: {"mean_ms", "p50_ms", "p95_ms"}}}.
Exits 3 when onnxruntime or numpy cannot be imported (the bench then reports it as skipped).
"""

import json
import sys
import time

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as e:  # reported by the caller as "skipped"
    print(json.dumps({"skipped": f"cannot import onnxruntime/numpy: {e}"}))
    sys.exit(3)


def main():
    iterations = int(sys.argv[1])
    threads = int(sys.argv[2])
    ort.set_default_logger_severity(3)
    out = {"version": ort.__version__, "threads": threads, "models": {}}
    rng = np.random.default_rng(0)
    for spec in sys.argv[3:]:
        name, rest = spec.split("=", 1)
        path, dims = rest.rsplit(":", 1)
        shape = [int(d) for d in dims.split(",")]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: rng.uniform(-1, 1, shape).astype(np.float32)}
        for _ in range(5):
            session.run(None, feed)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        out["models"][name] = {
            "mean_ms": sum(times) / len(times),
            "p50_ms": times[len(times) // 2],
            "p95_ms": times[min(len(times) - 1, int(len(times) * 0.95))],
        }
    print(json.dumps(out))


main()
