"""``python -m studio estimate ...``: GPU memory of a fine-tuning run, from config.json alone.

    python -m studio estimate model qwen2.5-7b --method lora --batch 1 --seq 2048 --gpu 4090
    python -m studio estimate model ./my-model --method qlora --gradient-checkpointing --json
    python -m studio estimate model qwen2.5-vl-7b --images 1 --max-pixels 1003520 --gpu "A100 80"
    python -m studio estimate model qwen2.5-7b --seq 4096 --dataset 3      # for the data of dataset #3
    python -m studio estimate model llama-3.2-3b --targets q_proj,v_proj --rank 32 --batch 4 --seq 768
    python -m studio estimate model llama-3.1-8b --inference --seq 8192
    python -m studio estimate published     # estimator vs published, measured peaks
    python -m studio estimate models | cards
"""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.estimate import EstimateRequest


def register(subparsers) -> None:
    parser = subparsers.add_parser("estimate", help="GPU memory needed by a fine-tuning run (from config.json)")
    sub = parser.add_subparsers(dest="estimate_command", required=True)
    model = sub.add_parser("model", help="peak memory of a training run, part by part")
    _add_model_arguments(model)
    model.set_defaults(func=cmd_model)
    sub.add_parser("published", help="estimates vs published measured peaks").set_defaults(func=cmd_published)
    sub.add_parser("models", help="bundled model configs").set_defaults(func=cmd_models)
    sub.add_parser("cards", help="GPU cards the verdict knows").set_defaults(func=cmd_cards)
    sub.add_parser("report", help="estimated vs measured peak memory of the studio's runs").set_defaults(
        func=cmd_report)


def cmd_report(args) -> int:
    from storage.db import Database
    from studio.planning import estimate_report

    checks = estimate_report(Database.open())
    if not checks:
        print("No finished run has both an estimate and a measured peak yet.")
        return 0
    print(f"{'run':>5}  {'model':<34} {'method':<8} {'estimated':>10} {'measured':>10} {'error':>7}")
    for c in checks:
        print(f"{c.run_id:>5}  {c.model[:34]:<34} {c.method:<8} {c.estimated_bytes / 2**30:>8.2f} G "
              f"{c.measured_bytes / 2**30:>8.2f} G {100 * c.error:>+6.1f}%")
    within = sum(abs(c.error) <= 0.2 for c in checks)
    print(f"{within} of {len(checks)} runs within 20%")
    return 0


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="hub id or alias of a bundled config, or a model folder / config.json path")
    p.add_argument("--method", default="lora", choices=["lora", "qlora", "adalora", "dora", "full"])
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (AdaLoRA: target rank)")
    p.add_argument("--targets", default="all-linear", type=_targets,
                   help='"attention" (q/k/v/o), "all-linear", or module names separated by commas, e.g. q_proj,v_proj')
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--bits", type=int, default=4, choices=[4, 8], help="qlora quantization bits")
    p.add_argument("--no-double-quant", action="store_true")
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit"],
                   help="adamw: torch's default (foreach, one state-sized temporary in step); adamw_fused: fused kernel")
    p.add_argument("--batch", type=int, default=1, help="per-device batch size")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--seq", type=int, default=2048, help="cut-off length in tokens (inference: context length)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "eager", "flash"])
    p.add_argument("--max-pixels", type=int, default=1003520)
    p.add_argument("--images", type=int, default=0, help="images per sample (vision-language models)")
    p.add_argument("--tune-vision", action="store_true", help="train the vision tower too")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    p.add_argument("--master-weights", action="store_true",
                   help="full FT: model loaded in fp32, trained with bf16 autocast (fp32 weights, gradients, Adam states)")
    p.add_argument("--kbit-upcast", action=argparse.BooleanOptionalAction, default=None,
                   help="qlora: embeddings/LM head in fp32 (peft's prepare_model_for_kbit_training alone); "
                        "default: as the trainer does it")
    p.add_argument("--trainer", default="hf", choices=["hf", "trl-sft"],
                   help="hf: the model's logits + cross-entropy (peers' recipes); trl-sft: the studio's TRL recipe")
    p.add_argument("--dataset", type=int, help="estimate for this studio dataset's longest batch (its token "
                                               "statistics must have been computed)")
    p.add_argument("--stats", help="estimate for the data described by this token-statistics JSON file")
    p.add_argument("--padding-free", action="store_true", help="rows of a batch concatenated without padding")
    p.add_argument("--packing", action="store_true", help="rows packed up to the cut-off (implies padding-free)")
    p.add_argument("--gpu", help='a card for the verdict, e.g. "4090", "A100 80", "h200"; or a size like 24GB')
    p.add_argument("--inference", action="store_true", help="chat/generation memory instead of training")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _targets(text: str):
    """"attention" / "all-linear" as they are, anything else as a tuple of module names."""
    if text in ("attention", "all-linear"):
        return text
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("targets: give attention, all-linear or module names like q_proj,v_proj")
    return names


def request_from_args(args, data=None) -> EstimateRequest:
    from studio.estimate import EstimateRequest, load_config

    return EstimateRequest(
        config=load_config(args.name), method=args.method, lora_rank=args.rank, targets=args.targets,
        dtype=args.dtype, quant_bits=args.bits, double_quant=not args.no_double_quant, optimizer=args.optimizer,
        batch_size=args.batch, grad_accum=args.accum, seq_len=args.seq,
        gradient_checkpointing=args.gradient_checkpointing, attention=args.attention, max_pixels=args.max_pixels,
        images_per_sample=args.images, tune_vision=args.tune_vision, num_gpus=args.gpus, strategy=args.strategy,
        master_weights=args.master_weights, kbit_fp32_upcast=args.kbit_upcast, trainer=args.trainer, data=data,
        padding_free=args.padding_free or args.packing, packing=args.packing)


def data_from_args(args):
    """The token lengths named by ``--stats FILE`` or ``--dataset ID`` (None when neither)."""
    from studio.estimate.data import TokenLengths

    if args.stats:
        try:
            with open(args.stats, encoding="utf-8") as fh:
                return TokenLengths.from_stats(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--stats {args.stats}: {exc}") from exc
    if args.dataset is None:
        return None
    from storage.db import Database
    from studio.estimate.data import stored_statistics

    return TokenLengths.from_stats(stored_statistics(Database.open(), args.dataset))


def _capacity(gpu: str) -> tuple[str, int]:
    from studio.estimate import GIB, find_card

    text = gpu.strip().lower()
    for unit, scale in (("gib", GIB), ("gb", 10 ** 9)):
        number = text[: -len(unit)].strip() if text.endswith(unit) else ""
        if number.replace(".", "", 1).isdigit():
            return gpu, int(float(number) * scale)
    card = find_card(gpu)
    return card.name, card.capacity_bytes


def cmd_model(args) -> int:
    from studio.estimate import EstimateError, UnknownModel, estimate, estimate_inference, load_config

    try:
        if args.inference:
            est = estimate_inference(load_config(args.name), context_len=args.seq, batch_size=args.batch,
                                     dtype=args.dtype, quant_bits=args.bits if args.method == "qlora" else None,
                                     attention=args.attention, images=args.images, max_pixels=args.max_pixels)
            req = None
        else:
            req = request_from_args(args, data_from_args(args))
            est = estimate(req)
    except (EstimateError, UnknownModel, KeyError, ValueError, LookupError) as exc:
        print(f"error: {exc}")
        return 2
    capacity = _capacity(args.gpu) if args.gpu else None
    if args.json:
        print(json.dumps(_json(est, req, capacity), indent=1))
    else:
        print(_text(args, est, req, capacity))
    return 0


def _json(est, req, capacity) -> dict:
    from studio.estimate import suggestions, verdict

    out = est.as_dict()
    if capacity:
        name, cap = capacity
        out["gpu"] = {"name": name, "capacity_bytes": cap, "verdict": verdict(est.total_bytes, cap, est.band)}
        if est.worst_case_bytes is not None and est.worst_case_bytes != est.total_bytes:
            out["gpu"]["worst_case_verdict"] = verdict(est.worst_case_bytes, cap, est.band)
        if req is not None:
            out["suggestions"] = [{"change": s.change, "total_bytes": s.estimate.total_bytes, "verdict": s.verdict}
                                  for s in suggestions(req, cap)]
    return out


def _text(args, est, req, capacity) -> str:
    from studio.estimate import describe, smallest_card, verdict

    what = "inference" if req is None else f"{args.method}, batch {args.batch} x {args.seq} tokens"
    if req is not None and req.data is not None:
        what += ", for the dataset's longest batch"
    lines = [f"{args.name} ({what}); parameters: {est.params.get('total', 0) / 1e9:.2f} B"
             + (f", trainable {est.params['trainable'] / 1e6:.1f} M" if "trainable" in est.params else ""),
             est.table()]
    lines += [f"note: {n}" for n in est.notes]
    card = smallest_card(est)
    lines.append(f"smallest listed card that fits: {card.name if card else 'none (needs more than one GPU)'}")
    if capacity:
        name, cap = capacity
        lines.append(f"on {name}: " + (describe(req, cap) if req is not None else verdict(est.total_bytes, cap, est.band)))
    return "\n".join(lines)


def cmd_published(args) -> int:
    from studio.estimate.published import MIN_AGREEING, agreement, compare_published, format_table

    comparisons = compare_published()
    print(format_table(comparisons))
    good, total = agreement(comparisons)
    return 0 if total and good / total >= MIN_AGREEING else 1


def cmd_models(args) -> int:
    from studio.estimate import list_models, lookup_config
    from studio.estimate.arch import ModelArch

    for name in list_models():
        arch = ModelArch.from_config(lookup_config(name))
        kind = "vision-language" if arch.vision else "text"
        print(f"{name:40} {arch.total_params / 1e9:7.2f} B  {kind}")
    return 0


def cmd_cards(args) -> int:
    from studio.estimate import GIB, GPU_CARDS

    for card in GPU_CARDS:
        print(f"{card.name:20} {card.capacity_bytes / GIB:7.1f} GiB")
    return 0
