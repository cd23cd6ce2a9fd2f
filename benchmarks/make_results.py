"""Render docs/results.md from a demo run (and optionally a pytest-benchmark JSON).

    modprune demo --out demo-output                                   # writes demo-output/demo.json
    make bench PYTEST_ARGS="--benchmark-json=bench.json"              # optional
    python benchmarks/make_results.py --demo demo-output/demo.json --bench bench.json -o docs/results.md

Every number in the output comes from those files; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any


def _row(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in result["rows"] if r["name"] == name)


def _lat(row: dict[str, Any], prefix: str) -> str:
    if f"{prefix}_median_ms" not in row:
        return "-"
    return f"{row[f'{prefix}_median_ms']:.1f} ms [{row[f'{prefix}_p10_ms']:.1f}-{row[f'{prefix}_p90_ms']:.1f}]"


def _change(row: dict[str, Any], prefix: str) -> str:
    if f"{prefix}_ratio_median" not in row:
        return "(base)"
    return (f"{row[f'{prefix}_verdict']} (ratio {row[f'{prefix}_ratio_median']:.3f}, "
            f"p10-p90 {row[f'{prefix}_ratio_p10']:.3f}-{row[f'{prefix}_ratio_p90']:.3f})")


def demo_section(demo: dict[str, Any]) -> list[str]:
    s = demo["settings"]
    acc = demo["accuracy"]["all"]
    base, seed, st = _row(demo, "base"), _row(demo, "seed-unstructured"), _row(demo, "structured-finetuned")
    seed_rep, st_rep = demo["prune_reports"]["seed-unstructured"], demo["prune_reports"]["structured"]
    o = demo["options"]
    out = [
        "## TokenC3-LSNet-n: the seed's scenario and the structured scenario",
        "",
        f"Data: **synthetic** (`modprune data synth`, seed {s['seed']}): {s['n_train']} training and {s['n_val']} "
        f"validation images at {s['imgsz']} px, single class, small objects on textured backgrounds. It stands in "
        "for the user's drone imagery; absolute mAP values say nothing about that data.",
        f"Training: TokenC3-LSNet-n from scratch, {s['train_epochs']} epochs at {s['imgsz']} px, batch {s['batch']}, "
        f"{s.get('nominal_batch') or 64} images per optimizer step (nominal batch), "
        f"seed {s['seed']} (ultralytics trainer, CPU). Structured fine-tune: {s['finetune_epochs']} epochs with "
        "output-level distillation from the unpruned model. Accuracy: ultralytics validator at "
        f"{s['imgsz']} px on the validation split.",
        f"Latency: batch {o['batch']}, {o['imgsz']} px input, {o['threads']} threads, {o['warmup']} warm-up calls, "
        f"{o['rounds']} interleaved rounds with rotating order; median [p10-p90]. torch {demo['torch_version']}, "
        f"{demo['cpu_count']} CPUs ({platform.processor() or platform.machine()}). MACs: {demo['mac_counter']}.",
        f"Total demo time: {demo.get('seconds', 0) / 60:.1f} min.",
        "",
        "### The seed's scenario (unstructured, `tokenc3-lsnet-seed`)",
        "",
        "| | base | seed (10% zeroed) |",
        "|---|---:|---:|",
        f"| nonzero params | {base['nonzero']:,} | {seed['nonzero']:,} ({100 * seed_rep['nonzero_reduction']:.2f}% fewer) |",
        f"| params | {base['params']:,} | {seed['params']:,} |",
        f"| GMACs at {o['imgsz']} | {base['macs'] / 1e9:.3f} | {seed['macs'] / 1e9:.3f} |",
        f"| mAP50 | {acc['base']['mAP50']:.4f} | {acc['seed-unstructured']['mAP50']:.4f} |",
        f"| mAP50-95 | {acc['base']['mAP50-95']:.4f} | {acc['seed-unstructured']['mAP50-95']:.4f} |",
        f"| PyTorch latency | {_lat(base, 'torch')} | {_lat(seed, 'torch')}: {_change(seed, 'torch')} |",
        f"| ONNX Runtime latency | {_lat(base, 'ort')} | {_lat(seed, 'ort')}: {_change(seed, 'ort')} |",
        f"| sparse fp16 file | {base['sparse_fp16_bytes'] / 1e6:.2f} MB | {seed['sparse_fp16_bytes'] / 1e6:.2f} MB |",
        "",
        "Zeroing weights leaves every dense multiply in place: the expected latency change is none, and a "
        "difference inside the measured spread is reported as such.",
        "",
        "### The structured scenario (`tokenc3-lsnet-structured`)",
        "",
        "| | base | structured, before fine-tune | structured, fine-tuned |",
        "|---|---:|---:|---:|",
        f"| params | {base['params']:,} | {st_rep['params_after']:,} | {st['params']:,} |",
        f"| GMACs at {o['imgsz']} | {base['macs'] / 1e9:.3f} | | {st['macs'] / 1e9:.3f} "
        f"({100 * (1 - st['macs'] / base['macs']):.1f}% fewer) |",
        f"| mAP50 | {acc['base']['mAP50']:.4f} | {acc['structured (no fine-tune)']['mAP50']:.4f} | "
        f"{acc['structured-finetuned']['mAP50']:.4f} |",
        f"| mAP50-95 | {acc['base']['mAP50-95']:.4f} | {acc['structured (no fine-tune)']['mAP50-95']:.4f} | "
        f"{acc['structured-finetuned']['mAP50-95']:.4f} |",
        f"| PyTorch latency | {_lat(base, 'torch')} | | {_lat(st, 'torch')}: {_change(st, 'torch')} |",
        f"| ONNX Runtime latency | {_lat(base, 'ort')} | | {_lat(st, 'ort')}: {_change(st, 'ort')} |",
        "",
    ]
    macs_red = 1 - st["macs"] / base["macs"]
    for prefix, label in (("torch", "PyTorch"), ("ort", "ONNX Runtime")):
        if f"{prefix}_ratio_median" in st and macs_red > 0:
            lat_red = 1 - st[f"{prefix}_ratio_median"]
            out.append(f"- {label}: latency reduction {100 * lat_red:.1f}% for a {100 * macs_red:.1f}% MACs reduction "
                       f"({lat_red / macs_red:.2f}x of it; goal 0.75x).")
    d_map = acc["structured-finetuned"]["mAP50"] - acc["base"]["mAP50"]
    out.append(f"- mAP50 after fine-tuning vs base: {100 * d_map:+.1f} points (goal: within 1.0 point).")
    return out


def bench_section(bench: dict[str, Any]) -> list[str]:
    out = ["## Benchmarks (pytest-benchmark)", "",
           "For latency benchmarks the timed call is one whole interleaved measurement of the dense and the "
           "pruned model; their medians, the per-round ratio and the share of the MACs reduction that shows up "
           "as latency are in the last column. Pruning-time benchmarks compare modprune with "
           "`torch.nn.utils.prune.global_unstructured` and raw torch-pruning on the same model and ratio.", "",
           "| benchmark | median of the timed call | measured (extra_info) |", "|---|---:|---|"]
    for b in bench.get("benchmarks", []):
        extra = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in b.get("extra_info", {}).items() if not isinstance(v, (list, dict)))
        out.append(f"| {b['name']} | {b['stats']['median'] * 1e3:.1f} ms | {extra} |")
    machine = bench.get("machine_info", {})
    out += ["", f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
                f"{machine.get('cpu', {}).get('count', '?')} CPUs; {bench.get('datetime', '')}"]
    return out


def deploy_section(table_md: Path) -> list[str]:
    """The four-row deployment table written by benchmarks/deploy_table.py (its JSON beside it gives the setup)."""
    meta = json.loads(table_md.with_suffix(".json").read_text())["args"]
    return ["## Deployment: dense / pruned, fp32 / INT8 (exported files)", "",
            f"`python benchmarks/deploy_table.py --base {meta['base']} --pruned {meta['pruned']} --data {meta['data']} "
            f"--imgsz {meta['imgsz']} --threads {meta['threads']} --rounds {meta['rounds']} "
            f"--calib-images {meta['calib_images']}{' --openvino' if meta['openvino'] else ''}"
            f"{' --val-imgsz ' + str(meta['val_imgsz']) if meta.get('val_imgsz') else ''}`. Files from "
            "ultralytics' exporter; INT8: ONNX Runtime static QDQ, per-channel weights (OpenVINO: NNCF). Latency: "
            f"batch 1, {meta['imgsz']} px, {meta['threads']} thread(s), interleaved rounds; mAP: `YOLO(file).val` at "
            f"{meta.get('val_imgsz') or meta['imgsz']} px.",
            "", table_md.read_text().strip()]
def distill_section(record: dict[str, Any]) -> list[str]:
    """Distillation modes and the thin baseline (``benchmarks/distill_compare.py``'s distill.json)."""
    s, thin, rows = record["settings"], record.get("thin"), record.get("rows", {})
    busy = any(c and c.get("busy") for c in (record.get("latency_machine") or {}).values())
    out = ["## Distillation modes and the thin baseline (`benchmarks/distill_compare.py`)", "",
           f"`python benchmarks/distill_compare.py --model {s.get('model', 'yolov8n.yaml')} --n-train {s['n_train']} "
           f"--n-val {s['n_val']} --imgsz {s['imgsz']} --base-epochs {s['base_epochs']} --ft-epochs {s['ft_epochs']} "
           f"--target {s['target']} --seed {s['seed']}`: {record['seconds'] / 60:.1f} min wall "
           f"({record.get('cpu_seconds', 0) / 60:.1f} min CPU) on the shared 2-core machine.", "",
           f"Data: **synthetic** (`modprune data synth`, one class, seed {s['seed']}), {s['n_train']} training / "
           f"{s['n_val']} validation images at {s['imgsz']} px. {s.get('model', 'yolov8n.yaml')} (nc=1) trained "
           f"{s['base_epochs']} epochs from scratch, pruned structurally ({100 * record['macs_removed']:.1f}% of the "
           f"MACs, L2), then fine-tuned {s['ft_epochs']} epochs from the same pruned weights per distillation mode "
           "(teacher: the unpruned base). Thin baseline: the same yaml at the width multiple whose MACs match the "
           f"pruned model's at {s['imgsz']} px, random init, trained {s['base_epochs'] + s['ft_epochs']} epochs "
           f"(base + fine-tune). One seed ({s['seed']}) for every run: differences of a point or two are within what "
           "another seed could give. Accuracy: ultralytics validator on the validation split. Latency: fused "
           f"PyTorch, batch 1, {s['latency_imgsz']} px, 1 thread, {s['latency_rounds']} interleaved rounds, median "
           "ratio to the base [95% bootstrap CI]; the busy-machine check "
           + ("**fired: the latency figures are unreliable**." if busy else "did not fire."), "",
           f"| model | mAP50 | mAP50-95 | params | MACs at {s['latency_imgsz']} px | latency ratio |",
           "|---|---:|---:|---:|---:|---:|"]
    for k, v in record["results"].items():
        r = rows.get(k, {})
        ratio = (f"{r['torch_ratio_median']:.3f} [{r['torch_ratio_ci_low']:.3f}-{r['torch_ratio_ci_high']:.3f}]"
                 if r.get("torch_ratio_median") is not None else ("1" if k == "base" else ""))
        cols = (f"{r['params']:,}" if "params" in r else "", f"{r['macs'] / 1e9:.3f} G" if "macs" in r else "")
        out.append(f"| {k} | {v['mAP50']:.4f} | {v['mAP50-95']:.4f} | {cols[0]} | {cols[1]} | {ratio} |")
    if thin:
        out += ["", f"Thin width multiple {thin['width']:.4f} (yaml {thin['base_width']:g}) found in {thin['steps']} "
                f"builds: {thin['macs']:,} MACs at {thin['imgsz']} px against the pruned model's "
                f"{thin['target_macs']:,} ({100 * thin['relative_error']:+.2f}%)."]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", required=True, help="demo.json written by `modprune demo`")
    parser.add_argument("--bench", help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--deploy", help="deploy_table.md written by benchmarks/deploy_table.py (JSON beside it)")
    parser.add_argument("--distill", help="distill.json written by benchmarks/distill_compare.py")
    parser.add_argument("--oneshot", help="oneshot.json written by benchmarks/oneshot_calibration.py")
    parser.add_argument("-o", "--output", default="docs/results.md")
    args = parser.parse_args()
    demo = json.loads(Path(args.demo).read_text())
    lines = ["# Results", "", "Generated by `benchmarks/make_results.py` from the files named below; "
             "re-run the commands to reproduce.", "",
             f"Commands: `modprune demo --out demo-output` then "
             f"`python benchmarks/make_results.py --demo {args.demo}"
             + (f" --oneshot {args.oneshot}" if args.oneshot else "")
             + (f" --bench {args.bench}" if args.bench else "") + "`.", ""]
    lines += demo_section(demo)
    if args.deploy:
        lines += [""] + deploy_section(Path(args.deploy))
    if args.oneshot:
        sys.path.insert(0, str(Path(__file__).parent))
        from oneshot_calibration import oneshot_section

        lines += [""] + oneshot_section(json.loads(Path(args.oneshot).read_text()))
    if args.bench:
        lines += [""] + bench_section(json.loads(Path(args.bench).read_text()))
    if args.distill:
        lines += [""] + distill_section(json.loads(Path(args.distill).read_text()))
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
