#!/usr/bin/python3
"""bench/bench_torch.py — the PyTorch reference for `explora bench` (docs/PERFORMANCE.md).

Same model, policies and timing protocol as core/cli/cli_bench.c, in PyTorch (Debian's
python3-torch 1.13, CPU; run it with /usr/bin/python3). On a GPU machine (any PyTorch with CUDA):
--device cuda, --precision fp32 | tf32 | bf16 (torch.autocast, bf16 activations: PyTorch's usual
mixed precision) and --sdpa (torch.nn.functional.scaled_dot_product_attention, the fused flash
attention of PyTorch 2, in place of the explicit softmax); phases end with torch.cuda.synchronize()
and the peak device memory is torch.cuda.max_memory_allocated().

  model     DINOv2 ViT-S/14 or ViT-B/14 (tests/fixtures/reference_vit.py DinoViT, official names),
            image 224 (the 37x37 position grid resampled to 16x16 in every forward, as DINOv2),
            random init, batch of N(0, 1) images
  policies  explora  last block + every LayerNorm + cls_token trainable, LoRA r64 (scale 1/64) on q
                     and v of the other blocks (configs/peft/explora_D-L-r64.ini)
            lora     LoRA r8 (scale 1/8) on q and v of every block, nothing else
                     (configs/peft/lora_r8.ini)
            full     every parameter trains
            infer    forward only, under torch.inference_mode()
  step      forward; loss = mean(tokens^2) over the final-norm tokens (batch, 257, dim);
            loss.backward(); AdamW (lr 1e-4, wd 0.05, none on biases / norms / gammas) step;
            zero_grad(set_to_none=True)
  timing    W warm-up steps untimed, then the median of N timed steps (whole step and per phase)

LoRA is our own small module: the frozen fused qkv Linear plus scale * (x A^T) B^T added in place to
the q and v thirds of its output (two thin GEMMs per target, as explora's lora plugin).

Prints one "bench-result" line per policy (key=value pairs, the same keys as explora's).
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from reference_vit import DinoViT  # noqa: E402

PRESETS = {  # patch, dim, depth, heads, hidden
    "vits14": (14, 384, 12, 6, 1536),
    "vitb14": (14, 768, 12, 12, 3072),
    "vitl14": (14, 1024, 24, 16, 4096),
}


def use_sdpa(model):
    """Swap every block's attention forward for PyTorch 2's fused scaled_dot_product_attention."""
    import types
    import torch.nn.functional as F

    def forward(self, x):
        b, t, c = x.shape
        hd = c // self.heads
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, t, c)
        return self.proj(out)

    for blk in model.blocks:
        blk.attn.forward = types.MethodType(forward, blk.attn)


class LoraQKV(nn.Module):
    """A frozen fused qkv Linear with LoRA on the q and v thirds of its output."""

    def __init__(self, base, rank, alpha=1.0):
        super().__init__()
        self.base = base
        d = base.in_features
        self.dim = d
        self.scale = alpha / rank
        self.lora_A_q = nn.Parameter(torch.empty(rank, d))
        self.lora_B_q = nn.Parameter(torch.zeros(d, rank))
        self.lora_A_v = nn.Parameter(torch.empty(rank, d))
        self.lora_B_v = nn.Parameter(torch.zeros(d, rank))
        nn.init.kaiming_uniform_(self.lora_A_q, a=5 ** 0.5)
        nn.init.kaiming_uniform_(self.lora_A_v, a=5 ** 0.5)

    def forward(self, x):
        out = self.base(x)
        d = self.dim
        out[..., :d] += (x @ self.lora_A_q.t()) @ (self.lora_B_q.t() * self.scale)
        out[..., 2 * d:] += (x @ self.lora_A_v.t()) @ (self.lora_B_v.t() * self.scale)
        return out


def build(model, policy):
    patch, dim, depth, heads, hidden = PRESETS[model]
    torch.manual_seed(0)
    m = DinoViT(patch, dim, depth, heads, hidden, registers=0, pos_grid=37)
    for p in m.parameters():
        nn.init.normal_(p, std=0.02)
    for p in m.parameters():
        p.requires_grad_(policy == "full")
    if policy == "explora":
        for i, blk in enumerate(m.blocks):
            if i == depth - 1:
                for p in blk.parameters():
                    p.requires_grad_(True)
            else:
                blk.attn.qkv = LoraQKV(blk.attn.qkv, 64)
            for p in list(blk.norm1.parameters()) + list(blk.norm2.parameters()):
                p.requires_grad_(True)
        for p in m.norm.parameters():
            p.requires_grad_(True)
        m.cls_token.requires_grad_(True)
    elif policy == "lora":
        for blk in m.blocks:
            blk.attn.qkv = LoraQKV(blk.attn.qkv, 8)
    return m


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_peak(device, n=2048):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = 0.0
    for rep in range(6):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        g = 2.0 * n ** 3 / (time.perf_counter() - t0) * 1e-9
        if rep > 0:
            best = max(best, g)
    return best


def run(model, policy, batch, iters, warmup, device="cpu", precision="fp32", sdpa=False):
    m = build(model, policy)
    if sdpa:
        use_sdpa(m)
    m = m.to(device)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
    train = policy != "infer"
    params = [p for p in m.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    opt = None
    if train:
        decay, no_decay = [], []
        for name, p in m.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or "norm" in name or "gamma" in name else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    steps, phases = [], {k: [] for k in ("fwd", "loss", "bwd", "opt")}
    for it in range(warmup + iters):
        sync(device)
        t0 = time.perf_counter()
        if train:
            with autocast:
                out = m(x)
                tok = torch.cat([out["cls"][:, None], out["patch"]], dim=1)
            sync(device)
            t1 = time.perf_counter()
            loss = tok.float().pow(2).mean()
            float(loss)
            t2 = time.perf_counter()
            loss.backward()
            sync(device)
            t3 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            t4 = time.perf_counter()
            del out, tok, loss
        else:
            with torch.inference_mode(), autocast:
                out = m(x)
            sync(device)
            t1 = t2 = t3 = t4 = time.perf_counter()
            del out
        if it >= warmup:
            steps.append(t4 - t0)
            for k, v in zip(("fwd", "loss", "bwd", "opt"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[k].append(v)
    step = statistics.median(steps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if device == "cuda":  # the figure that matters there: device memory, not host RSS
        rss = torch.cuda.max_memory_allocated() / 1048576.0
        torch.cuda.reset_peak_memory_stats()
    return step, {k: statistics.median(v) for k, v in phases.items()}, rss, trainable


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vits14", choices=sorted(PRESETS))
    ap.add_argument("--policy", default="all", choices=["explora", "lora", "full", "infer", "all"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--sdpa", action="store_true", help="fused scaled_dot_product_attention (PyTorch 2)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    policies = ["explora", "lora", "full", "infer"] if a.policy == "all" else [a.policy]
    results = [(p,) + run(a.model, p, a.batch, a.iters, a.warmup, a.device, a.precision, a.sdpa) for p in policies]
    n = 8192 if a.device == "cuda" else 2048
    peak = gemm_peak(a.device, n)
    print("torch %s, %s, %s%s, %d threads; measured GEMM peak (best of 5, %d^3 fp32 torch.mm): %.1f GFLOP/s"
          % (torch.__version__, a.device, a.precision, ", sdpa" if a.sdpa else "", torch.get_num_threads(), n, peak))
    for policy, step, ph, rss, trainable in results:
        mem_key = "device_mib" if a.device == "cuda" else "rss_mib"
        print("bench-result impl=torch model=%s policy=%s batch=%d iters=%d img_s=%.4f step_ms=%.2f fwd_ms=%.2f "
              "loss_ms=%.2f bwd_ms=%.2f opt_ms=%.2f peak_gflops=%.2f %s=%.1f trainable=%d"
              % (a.model, policy, a.batch, a.iters, a.batch / step, step * 1e3, ph["fwd"] * 1e3, ph["loss"] * 1e3,
                 ph["bwd"] * 1e3, ph["opt"] * 1e3, peak, mem_key, rss, trainable))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
