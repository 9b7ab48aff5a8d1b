"""The main job on the embedded default: compile the bundled all-MiniLM-L6-v2 for this host and print
output fidelity against PyTorch and latency next to PyTorch's, measured in the same run."""
from __future__ import annotations

import time

import numpy as np
import torch

from sparsecc.bench import time_fn


INTEGER = "integer"
"""``compress`` default: this host's fastest integer scheme (``w8a8``, or ``w7a8`` on AVX2 without VNNI)."""


def run_demo(seq: int = 128, batch: int = 1, repeat: int = 30, compress: str | None = INTEGER) -> dict:
    import sparsecc
    from sparsecc.models.minilm import SAMPLE_SENTENCES, Tokenizer, load_minilm

    torch.set_num_threads(torch.get_num_threads())
    say = lambda msg: print(f"[sparsecc demo] {msg}", flush=True)  # noqa: E731
    model = load_minilm()
    ids, mask = Tokenizer(seq)(SAMPLE_SENTENCES)
    say(f"all-MiniLM-L6-v2 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), "
        f"{len(SAMPLE_SENTENCES)} sentences, seq {seq}")

    t0 = time.perf_counter()
    say("capturing with torch.export (dynamic batch) and compiling for x86 ...")
    batch_dim = torch.export.Dim("batch", max=1024)
    dyn = {"input_ids": {0: batch_dim}, "attention_mask": {0: batch_dim}}
    cm = sparsecc.compile(model, (ids[:2], mask[:2]), target="x86", dynamic_shapes=dyn)
    say(f"compiled in {time.perf_counter() - t0:.1f} s: {len(cm.graph.nodes)} ops, "
        f"target {cm.manifest['target'].get('mcpu', cm.target)}")

    with torch.no_grad():
        ref = model(ids, mask).numpy()
    out = cm(ids.numpy(), mask.numpy())
    rel = float(np.abs(out - ref).max() / np.abs(ref).max())
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    pair = float(out[0] @ out[1])
    say(f"fidelity vs PyTorch: max |diff|/max|ref| = {rel:.2e}, min cosine = {cos.min():.7f}")
    say(f"cos('{SAMPLE_SENTENCES[0]}', '{SAMPLE_SENTENCES[1]}') = {pair:.4f} (published 0.7553)")

    b_ids, b_mask = ids[:1].repeat(batch, 1), mask[:1].repeat(batch, 1)
    runner = cm.runner()
    arrays = [b_ids.numpy(), b_mask.numpy()]
    ours = time_fn(lambda: runner(*arrays), repeat=repeat, warmup=3)
    with torch.inference_mode():
        eager = time_fn(lambda: model(b_ids, b_mask), repeat=repeat, warmup=3)
    ratio = ours["median_ms"] / eager["median_ms"]
    say(f"latency batch {batch} seq {seq}: sparsecc {ours['median_ms']:.2f} ms, PyTorch eager "
        f"{eager['median_ms']:.2f} ms (median of {repeat}) -> sparsecc/PyTorch = {ratio:.2f}x "
        f"({'faster' if ratio < 1 else 'slower'})")
    result = {"rel_err": rel, "min_cos": float(cos.min()), "pair_cos": pair, "sparsecc_ms": ours["median_ms"],
              "torch_ms": eager["median_ms"]}
    if compress == INTEGER:
        from sparsecc.backends.tvm import resolve_target
        from sparsecc.backends.tvm.kernels.w8a8 import integer_scheme

        compress = integer_scheme(resolve_target("x86"))
        if compress == "w7a8":
            say("this CPU has AVX2 but no VNNI: W7A8 (int7 weights, which vpmaddubsw multiplies without saturating) "
                "runs its integer layers about 1.4x faster than W8A8")
    if compress:
        result["compressed"] = _compressed(model, dyn, compress, ids, mask, out, arrays, eager["median_ms"], repeat,
                                           say)
    return result


def _compressed(model, dyn, spec: str, ids, mask, dense_out, arrays, eager_ms: float, repeat: int, say) -> dict:
    """The same model compressed with ``spec``, calibrated on the built-in sentences: size, fidelity to the dense
    model on the sample sentences (not used for calibration), latency."""
    import sparsecc
    from sparsecc.fidelity import check_fidelity
    from sparsecc.models.minilm import CALIBRATION_SENTENCES, Tokenizer

    c_ids, c_mask = Tokenizer(ids.shape[1])(CALIBRATION_SENTENCES)
    calib = [(c_ids[i:i + 8].numpy(), c_mask[i:i + 8].numpy()) for i in range(0, len(CALIBRATION_SENTENCES), 8)]
    t0 = time.perf_counter()
    say(f"compressing with --compress {spec} (calibration: {len(CALIBRATION_SENTENCES)} built-in sentences) ...")
    cm = sparsecc.compile(model, (ids[:2], mask[:2]), target="x86", dynamic_shapes=dyn, compress=spec,
                          calibration=calib)
    plan = cm.manifest["plan"]
    dense_mb, mb = sum(p["dense_bytes"] for p in plan) / 1e6, sum(p["bytes"] for p in plan) / 1e6
    out = cm(ids.numpy(), mask.numpy())
    cos = (out * dense_out).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(dense_out, axis=1)
    runner = cm.runner()
    ms = time_fn(lambda: runner(*arrays), repeat=repeat, warmup=3)["median_ms"]
    say(f"{spec}: compiled in {time.perf_counter() - t0:.1f} s; linear weights {dense_mb:.1f} -> {mb:.1f} MB; "
        f"cosine to the dense embeddings: mean {cos.mean():.4f}, min {cos.min():.4f}")
    say(f"{spec}: latency {ms:.2f} ms -> {ms / eager_ms:.2f}x PyTorch eager fp32")
    fidelity = check_fidelity(cm, ids.numpy(), mask.numpy())
    say(f"{spec}: deployed vs interpreter: {fidelity.summary()}")
    return {"spec": spec, "mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "ms": ms, "mb": mb,
            "fidelity": {k: v for k, v in fidelity.as_dict().items() if k != "layers"}}
