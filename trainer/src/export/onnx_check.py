"""Independent checks of our ONNX files with the reference tools (onnx, onnxruntime).

Embedded in fer-train (src/export/ort.rs) and run as `python3 - <mode> <json>`:

* `check SPEC`: SPEC is a JSON file {"input": f32 file, "shape": [...], "models": [{"path",
  "tract": {output name: [values]}, "tolerance": {output name: max abs diff}}]}. Every model
  must pass onnx.checker (full check, with shape inference) and give, in onnxruntime, the
  outputs tract gave within the tolerance. Prints a JSON summary; exit status 1 on a failure.
* `bench SPEC`: SPEC is {"runs": n, "models": [path, ...]}. Times batch-1 runs of each model in
  onnxruntime with one thread (dynamic dimensions set to 1, random input) and prints
  {path: {"median_ms", "min_ms", "runs"}} as JSON.
"""

import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def check(spec):
    x = np.fromfile(spec["input"], dtype="<f4").reshape(spec["shape"])
    results, ok = [], True
    for m in spec["models"]:
        model = onnx.load(m["path"])
        onnx.checker.check_model(model, full_check=True)
        sess = session(m["path"])
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))
        entry = {"path": m["path"], "opset": model.opset_import[0].version, "diff": {}}
        for name, expected in m["tract"].items():
            got = outs[name].reshape(-1)
            diff = float(np.max(np.abs(got - np.asarray(expected, dtype=np.float32))))
            entry["diff"][name] = diff
            if not diff <= m["tolerance"][name]:
                ok = False
                entry.setdefault("failed", []).append(name)
        results.append(entry)
    print(json.dumps({"ok": ok, "models": results}))
    return 0 if ok else 1


def bench(spec):
    rng = np.random.default_rng(0)
    out = {}
    for path in spec["models"]:
        sess = session(path)
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = rng.standard_normal(shape).astype(np.float32)
        feed = {inp.name: x}
        for _ in range(max(3, spec["runs"] // 10)):
            sess.run(None, feed)
        times = []
        for _ in range(spec["runs"]):
            start = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        out[path] = {"median_ms": times[len(times) // 2], "min_ms": times[0], "runs": len(times)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    mode, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    sys.exit({"check": check, "bench": bench}[mode](spec))
