"""The GPU check's judgement: ceilings from the measured stages, targets met or not, a summary."""

from __future__ import annotations

# Issue 30's targets on one H200: (d) end to end, (c) against the ceiling, bf16 forward alone.
TARGETS = {"d_system_images_per_s": 2500, "c_over_ceiling": 0.85,
           "model_only_bf16_images_per_s": 100_000}


def dig(value, *path):
    """value[path[0]][path[1]]..., or None where a step is missing or not a dict."""
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def number(value, *path) -> float | None:
    """dig's result where it is a figure (a number, not a bool), else None."""
    found = dig(value, *path)
    return found if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def ceilings(decode, forward, cuda: bool) -> dict | str:
    """The best rate each decode path allows with the engine's forward pass beside it."""
    cpu, fwd = number(decode, "cpu_images_per_s"), number(forward, "from_host")
    if cpu is None or fwd is None:
        return "not computed: the decode or forward stage has no figures"
    # On a GPU machine CPU decoding and the GPU's forward pass overlap (the engine decodes
    # batch k+1 while k runs); on the CPU they share the same cores, so their times add.
    out = {"cpu_decode": round(min(cpu, fwd) if cuda else 1 / (1 / cpu + 1 / fwd), 1)}
    gpu, on_device = number(decode, "gpu_images_per_s"), number(forward, "from_device")
    if gpu is not None and on_device is not None:  # nvJPEG and the forward pass share the GPU
        out["gpu_decode"] = round(1 / (1 / gpu + 1 / on_device), 1)
    out["best"] = max(out.values())
    return out


def judge(figures: dict) -> dict:
    """Each target with its figure and whether it is met (None: not measured, or a dry run)."""
    stages, real = figures["stages"], figures["cuda"] and not figures["dry_run"]
    engine = max((v for k in ("cpu", "gpu") if (v := number(stages, "engine", k)) is not None),
                 default=None)
    ceiling = number(stages, "ceiling", "best")
    model_only = max((v for k in ("bf16", "bf16-full")
                      if (v := number(stages, "model_only", k)) is not None), default=None)
    rows = {"d_system_images_per_s": number(stages, "system", "images_per_s"),
            "c_over_ceiling": round(engine / ceiling, 3) if engine and ceiling else None,
            "model_only_bf16_images_per_s": model_only}
    out = {k: {"target": TARGETS[k], "figure": v, "met": v >= TARGETS[k] if real and v else None}
           for k, v in rows.items()}
    cpu, gpu = number(stages, "decode", "cpu_images_per_s"), number(stages, "decode",
                                                                      "gpu_images_per_s")
    auto = dig(stages, "decode", "auto", "choice")
    faster = None if cpu is None or gpu is None else "gpu" if gpu > cpu else "cpu"
    out["auto_picks_nvjpeg_only_where_faster"] = {
        "auto_choice": auto, "measured_faster": faster,
        "met": None if faster is None or auto is None else (auto == "gpu") == (faster == "gpu")}
    return out


def stage_rows(figures: dict) -> list[tuple[str, str]]:
    """(stage, figure) for the table a missed target is explained by."""
    s = figures["stages"]
    rows = [("decode, CPU (Pillow, all cores)", number(s, "decode", "cpu_images_per_s")),
            ("decode, nvJPEG (engine batches)", number(s, "decode", "gpu_images_per_s")),
            ("forward at the engine's batch, from host", number(s, "forward", "from_host")),
            ("forward at the engine's batch, from device", number(s, "forward", "from_device")),
            ("ceiling, CPU decode path", number(s, "ceiling", "cpu_decode")),
            ("ceiling, nvJPEG path", number(s, "ceiling", "gpu_decode")),
            ("(c) engine, CPU decode", number(s, "engine", "cpu")),
            ("(c) engine, nvJPEG", number(s, "engine", "gpu")),
            ("(d) whole system", number(s, "system", "images_per_s")),
            ("model only, bf16 autocast", number(s, "model_only", "bf16")),
            ("model only, bf16 weights", number(s, "model_only", "bf16-full"))]
    return [(name, "-" if v is None else f"{v:,.1f}") for name, v in rows]


def summary(figures: dict) -> str:
    """Tests, stages and targets as Markdown, for the end of the run's output."""
    tests = figures["stages"].get("tests")
    lines = [f"GPU check on {figures['device']} ({'dry run' if figures['dry_run'] else 'CUDA'}): "
             f"{'ok' if figures.get('ok') else 'FAILED'}", ""]
    if isinstance(tests, dict) and "counts" in tests:
        lines.append("tests: " + ", ".join(f"{v} {k}" for k, v in tests["counts"].items() if v))
        lines += [f"  {t['outcome']}: {t['name']}" + (f" ({t['reason']})" if t["reason"] else "")
                  for t in tests["tests"] if t["outcome"] != "passed"]
    errors = [f"  {k}: {v['error']}" for k, v in figures["stages"].items()
              if isinstance(v, dict) and "error" in v]
    lines += (["stages that raised:", *errors] if errors else []) + ["",
              "| stage | images/s |", "|---|---|"]
    lines += [f"| {name} | {v} |" for name, v in stage_rows(figures)]
    lines += ["", "| target | figure | met |", "|---|---|---|"]
    for name, t in figures.get("targets", {}).items():
        figure = t.get("figure", f"auto {t.get('auto_choice')}, faster {t.get('measured_faster')}")
        goal = f" (>= {t['target']:,})" if "target" in t else ""
        lines.append(f"| {name}{goal} | {figure} | {t['met']} |")
    lines.append("seconds per stage: " + ", ".join(f"{k} {v}" for k, v in figures["seconds"].items()))
    return "\n".join(lines)
