"""Training throughput of every script against the bare model compute, and image-file loading speed.

    python scripts/benchmark.py                          # CPU setting: fake 32x32, resnet56 -> resnet20, batch 128
    python scripts/benchmark.py --dataset digits         # the same on the real, in-memory digits
    python scripts/benchmark.py --dataset fake --image-size 224 --teacher resnet50 --model resnet18 \
        --num-classes 1000 --batch-size 256 --amp bf16 --channels-last [--compile] --loading

For each script (a row of the table):
  (a) images/s  the real script, `--max-steps WARMUP+STEPS`, read from its results.json; the
                script's own Throughput leaves out its first WARMUP steps (start-up, autotuning).
  (b) bare      the same teacher and student, optimizer and precision, on one batch that is
                already on the device, in a tight loop: the teacher's inference-mode forward,
                then the student's forward, cross-entropy, backward and optimizer step.
                kd_stagewise.py's row times its first phase, so its bare compute is that phase's:
                teacher and student up to their stems, the MSE between them, backward through the
                student's stem, and Adam over it (phase 1 regresses the stem, as in seed 004).
  (c) student   the student's own training step (forward, CE, backward, step), no teacher.
                train_teacher.py's bare compute is (c), and so is that of the `--teacher-cache`
                rows: a logit method replaying cache_teacher.py's logits (written before the
                row, not timed) should cost what training the student alone does.
The ratio (a)/(b) says how much of the physical limit the script reaches; (c)/(b), the "KD
overhead", is what the teacher costs on top of training the student alone (below 1 for the
stage-wise phase 1, which is cheaper than a whole training step). The bare numbers are
measured just before and just after each script's run and averaged, so that slow drifts of a
shared machine cancel in the ratio; `--repeats R` measures each row R times and keeps the run of
median ratio, for machines whose speed jumps from one second to the next.

--loading also times image-file loading alone (no model): NVIDIA DALI (CPU decoding, and "mixed"
GPU decoding when a GPU is present) against the torchvision DataLoader, on a generated folder of
JPEGs, in images/s; `--loading-only` skips the script table. `--files-row kd_st.py` runs that
script on the JPEG folder (DALI, or the DataLoader without DALI) and on fake data of the same
size: their ratio is what the data path costs the real script. `--json PATH` writes every figure.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.feature_extraction import create_feature_extractor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN = {"fake": 2048, "digits": 1437}  # training images of the in-memory data sets the table runs on
sys.path.insert(0, ROOT)
from common.data import build_loaders  # noqa: E402
from common.models import STAGE_NODES, create_model, stage_modules, stage_shapes  # noqa: E402
from common.utils import autocast_context, grad_scaler, keep_freed_memory  # noqa: E402

# script -> (extra arguments, optimizer it trains with by default, its bare step: the student alone,
# teacher + student, or teacher and student up to their stems (the stage-wise phase the run stays in));
# CACHE stands for a teacher cache of the benchmark's data and teacher
CACHE = "{cache}"
SCRIPTS = {
    "train_teacher.py": ([], "sgd", "student"),
    "kd_logit.py": ([], "sgd", "kd"),
    "kd_st.py": ([], "sgd", "kd"),
    "kd_dkd.py": ([], "sgd", "kd"),
    "kd_fitnet.py": ([], "sgd", "kd"),
    "kd_crd.py": ([], "sgd", "kd"),
    "kd_reviewkd.py": ([], "sgd", "kd"),
    "kd_st.py --teacher-cache": (["--teacher-cache", CACHE], "sgd", "student"),
    "kd_logit.py --teacher-cache": (["--teacher-cache", CACHE], "sgd", "student"),
    "kd_dkd.py --teacher-cache": (["--teacher-cache", CACHE], "sgd", "student"),
    "kd_at.py": ([], "sgd", "kd"),
    "kd_at.py --kd-weight 0.9": (["--kd-weight", "0.9"], "sgd", "kd"),
    "kd_fsp.py": ([], "sgd", "kd"),
    "kd_stagewise.py": ([], "adam", "phase1"),
    "kd_stagewise.py --simultaneous": (["--simultaneous", "--epochs", "1000"], "adam", "kd"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scripts", nargs="*", default=list(SCRIPTS), help=f"rows of the table: {list(SCRIPTS)}")
    parser.add_argument("--dataset", default="fake", choices=["fake", "digits"], help="in-memory data for the scripts")
    parser.add_argument("--image-size", type=int, default=32, help="fake data: image size")
    parser.add_argument("--num-classes", type=int, default=10, help="fake data: class count")
    parser.add_argument("--teacher", default="resnet56", help="teacher model (random weights)")
    parser.add_argument("--model", default="resnet20", help="student model")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=1, help="measure each row this many times; keep the median ratio")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps (the scripts drop min(5, steps/4))")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast precision")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="NHWC memory format; default: each script's own default")
    parser.add_argument("--compile", action="store_true", help="torch.compile student and teacher (scripts and bare loop)")
    parser.add_argument("--glibc-malloc", action="store_true",
                        help="CPU: bare loop with glibc's default malloc, which the scripts tune (keep_freed_memory)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    parser.add_argument("--loading", action="store_true", help="also time image-file loading: DALI vs DataLoader")
    parser.add_argument("--loading-only", action="store_true", help="only time image-file loading")
    parser.add_argument("--jpegs", type=int, default=2048, help="loading: JPEGs to generate")
    parser.add_argument("--jpeg-size", type=int, default=224, help="loading: JPEG side and crop size")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="loading: DALI threads / DataLoader workers")
    parser.add_argument("--loading-batch-size", type=int, default=64, help="loading: batch size")
    parser.add_argument("--files-row", default=None,
                        help="also run this row on the generated JPEG folder and on fake data, and compare")
    parser.add_argument("--work-dir", default=None, help="where runs and JPEGs go (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write all figures to this JSON file")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scripts + [args.files_row] if s is not None and s not in SCRIPTS]
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be at least 1")
    if unknown:
        parser.error(f"unknown script row {unknown[0]!r}; choose from {list(SCRIPTS)}")
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- (a) the real script
def run_script(row, args, teacher_path, out_dir, data_args=None):
    extra, _, bare_step = SCRIPTS[row]
    script = row.split()[0]
    data_args = data_args or ["--dataset", args.dataset, "--image-size", str(args.image_size),
                              "--num-classes", str(args.num_classes)]
    cmd = [sys.executable, os.path.join(ROOT, script), *data_args, "--model", args.model, "--batch-size", str(args.batch_size),
           "--max-steps", str(args.warmup + args.steps), "--amp", args.amp, "--device", args.device,
           "--out-dir", out_dir, "--log-interval", "10"]
    if CACHE in extra:  # enough epochs for the steps, cached once per work folder (not timed)
        epochs = -(-(args.warmup + args.steps) * args.batch_size // NUM_TRAIN.get(args.dataset, 1437))
        cache = os.path.join(os.path.dirname(out_dir), f"cache_{args.teacher}_{epochs}")
        if not os.path.exists(os.path.join(cache, "manifest.json")):
            subprocess.run([sys.executable, os.path.join(ROOT, "cache_teacher.py"), *data_args, "--teacher", teacher_path,
                            "--epochs", str(epochs), "--amp", args.amp, "--device", args.device, "--out", cache],
                           cwd=ROOT, capture_output=True, text=True, check=True)
        extra = [cache if value == CACHE else value for value in extra] + ["--epochs", str(epochs)]
    if "--epochs" not in extra:
        cmd += ["--stage-epochs", "1000"] if script == "kd_stagewise.py" else ["--epochs", "1000"]
    if script != "train_teacher.py":  # a cached row still evaluates its teacher and checks the cache was its own
        cmd += ["--teacher", teacher_path]
    if args.channels_last is not None:
        cmd += ["--channels-last" if args.channels_last else "--no-channels-last"]
    if args.compile:
        cmd += ["--compile"]
    started = time.time()
    result = subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {row} failed:\n{result.stderr[-3000:]}")
    run_dir = max((os.path.join(out_dir, d) for d in os.listdir(out_dir)), key=os.path.getmtime)
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "args.json")) as f:
        channels_last = json.load(f).get("channels_last", False)
    return results["images_per_sec"], results.get("data_wait_fraction"), channels_last, time.time() - started


# ---------------------------------------------------------------- (b), (c) the bare compute
def bare_rate(args, device, image_shape, num_classes, optimizer_name, bare_step, channels_last):
    """images/s of the bare training step (`bare_step`: see SCRIPTS) on one batch already on the device."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    student = create_model(args.model, num_classes).to(device, memory_format=memory_format).train()
    teacher = create_model(args.teacher, num_classes).to(device, memory_format=memory_format).eval() \
        if bare_step != "student" else None
    params = list(student.parameters())
    if bare_step == "phase1":  # the stem against the teacher's, and a 1x1 adapter where the widths differ
        student_node, teacher_node = STAGE_NODES[args.model][0], STAGE_NODES[args.teacher][0]
        width, teacher_width = (stage_shapes(model, name, image_shape)[0][0]
                                for model, name in ((student, args.model), (teacher, args.teacher)))
        adapter = (torch.nn.Conv2d(width, teacher_width, 1, bias=False) if width != teacher_width
                   else torch.nn.Identity()).to(device, memory_format=memory_format)
        params = [p for modules in stage_modules(student, args.model)[:1] for module in modules
                  for p in module.parameters(recurse=False)] + list(adapter.parameters())
        body = create_feature_extractor(student, [student_node])
        student = lambda images: adapter(body(images)[student_node])  # noqa: E731
        teacher = create_feature_extractor(teacher, [teacher_node]).eval()
    forward = torch.compile(student) if args.compile else student
    teacher = torch.compile(teacher) if args.compile and teacher is not None else teacher  # as the scripts do
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4) if optimizer_name == "sgd" \
        else torch.optim.Adam(params, lr=1e-4, weight_decay=5e-4)
    autocast, scaler = autocast_context(args.amp, device), grad_scaler(args.amp, device)
    images = torch.randn(args.batch_size, *image_shape, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, num_classes, (args.batch_size,), device=device)

    def step():
        if bare_step == "phase1":  # no_grad, not inference_mode: the MSE saves its target for backward
            with torch.no_grad(), autocast:
                target = teacher(images)[teacher_node]
            with autocast:
                loss = F.mse_loss(forward(images).float(), target.float())
        else:
            if teacher is not None:
                with torch.inference_mode(), autocast:
                    teacher(images)
            with autocast:
                loss = F.cross_entropy(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


# ---------------------------------------------------------------- image-file loading
def write_jpegs(root, count, size, classes=8):
    """Smooth random pictures (upsampled noise), closer to photographs in JPEG size than pure noise."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", max(classes, count // 8))):
        for i in range(n):
            folder = os.path.join(root, split, f"class{i % classes}")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{i:06d}.jpg")
            if not os.path.exists(path):
                small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
                noise = rng.integers(-12, 13, (size, size, 3))
                pixels = np.clip(np.asarray(small.resize((size, size), Image.BICUBIC), dtype=np.int16) + noise, 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


def loading_rate(loader_name, device, data_dir, args):
    """images/s of one pass over the train split, after the first batch (start-up)."""
    loader_args = SimpleNamespace(dataset="imagefolder", data_dir=data_dir, batch_size=args.loading_batch_size,
                                  image_size=args.jpeg_size, val_resize=args.jpeg_size, train_fraction=1.0,
                                  loader=loader_name, workers=args.workers, seed=0, download=False)
    train, _, _, _ = build_loaders(loader_args, device)
    batches = iter(train)
    next(batches)
    sync(device)
    started, images = time.perf_counter(), 0
    for batch, _ in batches:
        images += len(batch)
    sync(device)
    return images / (time.perf_counter() - started)


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def main(args):
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.set_flush_denormal(True)  # as the scripts do (common.utils.setup_distributed)
    if not use_cuda and not args.glibc_malloc:
        keep_freed_memory()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="kd_benchmark_")
    os.makedirs(os.path.join(work_dir, "runs"), exist_ok=True)
    hardware = torch.cuda.get_device_name(device) if use_cuda else f"{platform.processor() or platform.machine()} CPU, " \
        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    report = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": hardware,
              "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]), "rows": [], "loading": []}
    print(f"{report['date']}  torch {report['torch']}  {hardware}")

    if not args.loading_only:
        probe = SimpleNamespace(dataset=args.dataset, data_dir="data", download=False, train_fraction=1.0,
                                image_size=args.image_size, val_resize=args.image_size, num_classes=args.num_classes,
                                loader="auto", workers=1, batch_size=args.batch_size, seed=0)
        _, _, num_classes, image_shape = build_loaders(probe, torch.device("cpu"))
        teacher_path = os.path.join(work_dir, f"{args.teacher}_{num_classes}.pt")
        # identity-initialised blocks: random weights otherwise give logits of 1e4, on which logit regression diverges
        teacher = create_model(args.teacher, num_classes, zero_init_residual=True)
        torch.save({"model": teacher.state_dict(), "model_name": args.teacher,
                    "num_classes": num_classes, "top1": 0.0}, teacher_path)
        print(f"{args.dataset} {image_shape}, {args.teacher} -> {args.model}, batch {args.batch_size}, amp {args.amp}, "
              f"{args.warmup} warm-up + {args.steps} timed steps, median of {args.repeats} run(s)\n")
        student_rates = {}  # (c) per optimizer
        for row in args.scripts:
            _, optimizer_name, bare_step = SCRIPTS[row]
            channels_last = args.channels_last is not False  # the scripts' default is on

            def measure():
                before = bare_rate(args, device, image_shape, num_classes, optimizer_name, bare_step, channels_last)
                run = run_script(row, args, teacher_path, os.path.join(work_dir, "runs"))
                after = bare_rate(args, device, image_shape, num_classes, optimizer_name, bare_step, channels_last)
                return run, (before + after) / 2  # around the script's run: slow drifts of the machine cancel
            runs = sorted((measure() for _ in range(args.repeats)), key=lambda run: run[0][0] / run[1])
            ratios = [script_run[0] / bare for script_run, bare in runs]
            (rate, wait, channels_last, wall), bare_mean = runs[len(runs) // 2]
            if optimizer_name not in student_rates:
                student_rates[optimizer_name] = bare_rate(args, device, image_shape, num_classes, optimizer_name,
                                                          "student", channels_last)
            student_rate = bare_mean if bare_step == "student" else student_rates[optimizer_name]
            report["rows"].append({"script": row, "bare_step": bare_step, "images_per_sec": rate, "bare_images_per_sec": bare_mean,
                                   "student_bare_images_per_sec": student_rate, "ratio": rate / bare_mean,
                                   "kd_overhead": student_rate / bare_mean, "data_wait_fraction": wait,
                                   "channels_last": channels_last, "wall_s": wall,
                                   "ratios": ratios})
            spread = f"  (runs: {', '.join(f'{ratio:.2f}' for ratio in ratios)})" if len(runs) > 1 else ""
            print(f"  {row:32s} {rate:9.0f} img/s  bare {bare_mean:9.0f}  ratio {rate / bare_mean:.2f}  ({wall:.0f} s)"
                  f"{spread}", flush=True)
        print()
        repeated = args.repeats > 1
        print(markdown(["script", "images/s", "bare images/s", "ratio (a)/(b)", "KD overhead (c)/(b)", "data wait"]
                       + (["ratios of the runs"] if repeated else []),
                       [[r["script"], f"{r['images_per_sec']:.0f}", f"{r['bare_images_per_sec']:.0f}",
                         f"{r['ratio']:.2f}", f"{r['kd_overhead']:.2f}",
                         "-" if r["data_wait_fraction"] is None else f"{r['data_wait_fraction']:.3f}"]
                        + ([", ".join(f"{ratio:.2f}" for ratio in r["ratios"])] if repeated else [])
                        for r in report["rows"]]))

    if args.loading or args.loading_only:
        from common.data import dali_available
        jpeg_dir = os.path.join(work_dir, f"jpegs{args.jpeg_size}")
        write_jpegs(jpeg_dir, args.jpegs, args.jpeg_size)
        cases = [("torch", device)]
        if dali_available():
            cases += [("dali", torch.device("cpu"))] + ([("dali", device)] if use_cuda else [])
        for loader_name, loader_device in cases:
            label = f"{loader_name} ({'mixed' if loader_device.type == 'cuda' and loader_name == 'dali' else 'cpu'} " \
                    f"decoding, {args.workers} {'threads' if loader_name == 'dali' else 'workers'})"
            rate = loading_rate(loader_name, loader_device, jpeg_dir, args)
            report["loading"].append({"loader": label, "images_per_sec": rate})
        print(f"\n{args.jpegs} JPEGs of {args.jpeg_size} px, random-resized crop + flip + normalise, "
              f"batch {args.loading_batch_size}\n")
        print(markdown(["loader", "images/s"], [[r["loader"], f"{r['images_per_sec']:.0f}"] for r in report["loading"]]))

    if args.files_row:  # the same script on the JPEG folder (--loader auto) and on fake data of the same size
        jpeg_dir = os.path.join(work_dir, f"jpegs{args.jpeg_size}")
        write_jpegs(jpeg_dir, args.jpegs, args.jpeg_size)
        teacher_path = os.path.join(work_dir, f"{args.teacher}_8.pt")
        torch.save({"model": create_model(args.teacher, 8).state_dict(), "model_name": args.teacher,
                    "num_classes": 8, "top1": 0.0}, teacher_path)
        size = str(args.image_size)
        runs = {name: run_script(args.files_row, args, teacher_path, os.path.join(work_dir, "runs"), data_args)
                for name, data_args in [
                    ("JPEG folder", ["--dataset", "imagefolder", "--data-dir", jpeg_dir, "--image-size", size,
                                     "--val-resize", size, "--workers", str(args.workers)]),
                    ("fake data", ["--dataset", "fake", "--image-size", size, "--num-classes", "8"])]}
        report["files"] = {name: {"images_per_sec": run[0], "data_wait_fraction": run[1]} for name, run in runs.items()}
        ratio = runs["JPEG folder"][0] / runs["fake data"][0]
        report["files"]["ratio"] = ratio
        print(f"\n{args.files_row} on {args.jpegs} JPEGs of {args.jpeg_size} px (--loader auto) against fake data, "
              f"crop {size}\n")
        print(markdown(["data", "images/s", "data wait"],
                       [[name, f"{run[0]:.0f}", f"{run[1]:.3f}"] for name, run in runs.items()]
                       + [["JPEG folder / fake data", f"{ratio:.2f}", ""]]))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main(parse_args())
