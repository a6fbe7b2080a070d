"""Quantizes the mini-Xception peer to int8 with onnxruntime's own quantizer, for the peer rows
of `fer-edge bench` and the int8 accuracy comparison (scripts/int8-bench.sh runs it).

Writes into --out (a folder outside the repository; nothing from ../shared is committed):
  peer_fp32.onnx         the peer as given
  peer_int8.onnx         integer form: every Conv a QLinearConv (QOperator format, only Conv
                         quantized, so no Microsoft-only QLinearAdd and friends that tract
                         cannot load); uint8 activations, int8 per-channel weights, MinMax
                         calibration on --images training faces
  peer_int8_qdq.onnx     the same quantization in QDQ form, for comparison
  manifest.json          the fer-edge manifest of peer_fp32.onnx (64x64 gray, NHWC, x/127.5 - 1)

Needs numpy, onnxruntime and pillow (python3 -m pip install pillow).
"""

import argparse
import json
import os
import shutil

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from PIL import Image

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SIZE = 64


def manifest(model_file):
    return {
        "model_file": model_file,
        "input_name": "input",
        "output_name": "predictions",
        "logits_name": None,
        "preprocessing": {
            "input_width": SIZE,
            "input_height": SIZE,
            "channels": "gray",
            "layout": "nhwc",
            "crop_margin": 0.0,
            "resize": "bilinear",
            "normalization": {"scale": 1.0 / 127.5, "mean": [1.0], "std": [1.0]},
        },
        "class_names": CLASSES,
    }


def faces(folder, count):
    """`count` training faces taken evenly across the sorted list, preprocessed as the
    manifest says."""
    paths = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    if not paths:
        raise SystemExit(f"{folder}: no images (pass the FER2013 train folder)")
    step = max(1, len(paths) // count)
    for path in paths[::step][:count]:
        gray = Image.open(path).convert("L").resize((SIZE, SIZE), Image.BILINEAR)
        x = np.asarray(gray, dtype=np.float32) / 127.5 - 1.0
        yield x.reshape(1, SIZE, SIZE, 1)


class Reader(CalibrationDataReader):
    def __init__(self, arrays, name):
        self.feeds = iter([{name: a} for a in arrays])

    def get_next(self):
        return next(self.feeds, None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, help="fer_mini_xception_nhwc.onnx")
    parser.add_argument("--calibration", required=True, help="FER2013 train folder")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--images", type=int, default=300, help="calibration faces")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    fp32 = os.path.join(args.out, "peer_fp32.onnx")
    shutil.copyfile(args.peer, fp32)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest("peer_fp32.onnx"), f, indent=2)
    arrays = list(faces(args.calibration, args.images))
    for name, form in [
        ("peer_int8.onnx", QuantFormat.QOperator),
        ("peer_int8_qdq.onnx", QuantFormat.QDQ),
    ]:
        quantize_static(
            fp32,
            os.path.join(args.out, name),
            Reader(arrays, "input"),
            quant_format=form,
            op_types_to_quantize=["Conv"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    print(json.dumps({"out": args.out, "calibration_images": len(arrays)}))


main()
