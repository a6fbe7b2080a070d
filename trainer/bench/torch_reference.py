#!/usr/bin/env python3
"""PyTorch reference of the fer-train model, for `fer-train bench`.

Builds the same network as trainer::model (see trainer/src/model/mod.rs for the exact
computation) from the ModelConfig JSON given with --config, then times training steps
(forward with region dropout, cross-entropy, backward, AdamW) and inference batches on the
CPU or, with --device cuda, on the first GPU (synchronised before every clock reading).
Prints one JSON object. Exits with code 3 and a one-line reason when torch (or, for cuda, a
GPU) is missing.
"""
import argparse
import json
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # reported by fer-train as "skipped"
    print(f"torch is not importable ({e})")
    sys.exit(3)


def conv_bn(cin, cout, k, stride, groups, eps):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
    )


class Basic(nn.Module):
    def __init__(self, cin, cout, stride, eps):
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride, 1, eps)
        self.b = conv_bn(cout, cout, 3, 1, 1, eps)
        self.down = conv_bn(cin, cout, 1, stride, 1, eps) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class Inverted(nn.Module):
    def __init__(self, cin, cout, stride, expansion, eps):
        super().__init__()
        hidden = cin * expansion
        self.expand = conv_bn(cin, hidden, 1, 1, 1, eps) if expansion != 1 else None
        self.dw = conv_bn(hidden, hidden, 3, stride, hidden, eps)
        self.project = conv_bn(hidden, cout, 1, 1, 1, eps)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu(self.dw(y)))
        return y + x if self.residual else y


class Net(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c["bn_epsilon"]
        self.stem = conv_bn(c["input_channels"], c["width"], 3, c.get("stem_stride", 2), 1, eps)
        blocks, ch = [], c["width"]
        for i, count in enumerate(c["blocks"]):
            out = c["width"] << i
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                if c["backbone"] == "resnet":
                    blocks.append(Basic(ch, out, stride, eps))
                else:
                    blocks.append(Inverted(ch, out, stride, c["expansion"], eps))
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.k = c["regions"]
        self.lae = c["lae"]
        self.p = c["rrd_prob"] if c["rrd"] else 0.0
        hidden = c["attention_hidden"] or max(ch // 4, 4)
        if self.lae:
            self.conv3 = nn.Conv2d(ch, hidden, 3, 1, 1)
            self.conv1 = nn.Conv2d(hidden, 1, 1)
            self.region_scale = nn.Parameter(torch.tensor([5.0]))
        self.head = nn.Linear(2 * ch if self.lae else ch, c["num_classes"])

    def forward(self, x):
        f = self.blocks(F.relu(self.stem(x)))
        n, c, h, w = f.shape
        k = self.k
        if self.lae:
            a = torch.sigmoid(self.conv1(F.relu(self.conv3(f))))
            means = F.avg_pool2d(a, (h // k, w // k)).flatten(1)
            alpha = torch.softmax(self.region_scale * means, 1).view(n, 1, k, k)
            f = f * (a + 1)
        if self.training and self.p > 0 and k > 1:
            # One region per dropped sample, the rest scaled by k^2 / (k^2 - 1).
            drop = (torch.rand(n, device=f.device) < self.p).float()
            region = torch.randint(k * k, (n,), device=f.device)
            hole = F.one_hot(region, k * k).float() * drop[:, None]
            hole = hole.view(n, 1, k, k).repeat_interleave(h // k, 2).repeat_interleave(w // k, 3)
            keep = 1 + drop * (1 / (k * k - 1))
            f = f * (1 - hole) * keep.view(n, 1, 1, 1)
        g = F.adaptive_avg_pool2d(f, 1)
        if self.lae:
            cells = F.avg_pool2d(f, (h // k, w // k))
            g = torch.cat([g, (cells * alpha).sum(dim=(2, 3), keepdim=True)], 1)
        return self.head(g.flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="ModelConfig JSON")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("torch sees no CUDA device")
        sys.exit(3)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    c = json.loads(a.config)
    net = Net(c).to(dev)
    x = torch.randn(a.batch, c["input_channels"], c["input_height"], c["input_width"], device=dev)
    y = torch.arange(a.batch, device=dev) % c["num_classes"]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    net.train()
    step()
    sync()
    t = time.perf_counter()
    for _ in range(a.iters):
        step()
    sync()
    train = a.iters * a.batch / (time.perf_counter() - t)
    net.eval()
    with torch.no_grad():
        net(x)
        sync()
        t = time.perf_counter()
        for _ in range(a.iters):
            net(x)
        sync()
        infer = a.iters * a.batch / (time.perf_counter() - t)
    print(json.dumps({
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_images_per_second": train,
        "infer_images_per_second": infer,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
    }))


if __name__ == "__main__":
    main()
