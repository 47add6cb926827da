"""What quantized LoRA training costs: a small conditional diffusion model fine-tuned to a new concept.

The model is diffusers' ``UNet2DConditionModel`` from a small config (random init, 8x8 single-channel images),
conditioned through cross-attention on learned class-embedding "text" tokens. It is pre-trained on scikit-learn's
digits 0-8; digit 9 is never seen (its embedding row keeps its random init), so it is a new concept. LoRA then
fine-tunes it on a few 9s, Custom-Diffusion style (cross-attention ``attn2.to_k``/``attn2.to_v``, placement "kv")
or on every attention projection (``to_q``/``to_k``/``to_v``/``to_out.0`` of self- and cross-attention,
placement "all"), in fp32, int8 and int8-w4 (``cdmqta.sw.model.lora``), with the same seeds for every mode (paired
runs: same LoRA init, batches, noise and sampling noise).

Quality is a digits-FID: the Frechet distance between real 9s and generated 9s in the 32-d penultimate feature
space of a small CNN digit classifier trained here on all ten classes (same formula as FID). Samples come from the
model as trained (the
quantized modes generate with their quantized layers too), DDIM sampling. Reference rows: the FID of the
pre-trained model asked for a 9 before fine-tuning, and real-vs-real (two halves of the real 9s) as the floor.

Speed: seconds per fine-tuning step (median), measured after the quality runs with the modes interleaved step by
step (``time_steps``), since the machine may be shared; the training loops' own medians are kept as well.
"""

import dataclasses
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from sklearn.datasets import load_digits
from torch import nn

from cdmqta.errors import InputError
from cdmqta.sw.model.engine import TorchEngine
from cdmqta.sw.model.lora import add_lora

__all__ = ["StudyConfig", "QUICK", "FULL", "PLACEMENTS", "run_study", "format_table"]

PLACEMENTS = {
    "kv": ["attn2.to_k", "attn2.to_v"],
    "all": ["to_q", "to_k", "to_v", "to_out.0"],
}
MODES = ("fp32", "int8", "int8-w4", "int8-delayed", "int8-delayed-sr")
#: study mode -> (QuantLoRALinear quant, scaling, gradient rounding or None for the study's ``rounding``)
MODE_SETTINGS = {
    "fp32": ("fp32", "current", None), "int8": ("int8", "current", None), "int8-w4": ("int8-w4", "current", None),
    "int8-delayed": ("int8", "delayed", None), "int8-delayed-sr": ("int8", "delayed", "stochastic"),
}


@dataclass(frozen=True)
class StudyConfig:
    """Every knob of the study (defaults: the full study)."""

    seeds: tuple = (0, 1, 2, 3, 4)
    steps: int = 150                 # LoRA fine-tuning steps per (mode, seed)
    placements: tuple = ("kv", "all")
    modes: tuple = MODES[:3]         # the delayed-scaling modes run when asked for (--modes)
    rank: int = 4
    alpha: float = 4.0
    lr: float = 1e-2                 # Adam, LoRA parameters
    batch: int = 32
    rounding: str = "nearest"        # gradient rounding of the quantized modes
    holdout: int = 9                 # the concept never pre-trained on
    finetune_images: int = 64        # real 9s the fine-tuning sees
    pretrain_steps: int = 1200
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    classifier_steps: int = 400
    samples: int = 180               # generated 9s per (mode, seed)
    sample_steps: int = 20           # DDIM steps
    train_timesteps: int = 1000
    channels: tuple = (16, 32)
    tokens: int = 4
    cross_dim: int = 16
    threads: int = 1
    timing_rounds: int = 30          # interleaved timing rounds per placement (one step of every mode each)

    def __post_init__(self):
        def pos(name, lo=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"{name}={v!r} must be an integer >= {lo}")
        for name in ("steps", "rank", "batch", "finetune_images", "pretrain_batch", "classifier_steps",
                     "sample_steps", "train_timesteps", "tokens", "cross_dim", "threads", "timing_rounds"):
            pos(name)
        pos("pretrain_steps", 0)
        pos("samples", 8)
        if len(self.seeds) < 2:
            raise InputError(f"seeds={list(self.seeds)} must hold at least 2 seeds (fid_std needs two)")
        if len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds={list(self.seeds)} must be distinct")
        if not self.placements or any(p not in PLACEMENTS for p in self.placements):
            raise InputError(f"placements={list(self.placements)} must be a non-empty subset of {sorted(PLACEMENTS)}")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise InputError(f"modes={list(self.modes)} must be a non-empty subset of {list(MODES)}")
        if self.rounding not in ("nearest", "stochastic"):
            raise InputError(f"rounding={self.rounding!r} must be 'nearest' or 'stochastic'")
        if not self.lr > 0 or not self.alpha > 0:
            raise InputError("lr and alpha must be positive")
        if not 0 <= self.holdout <= 9:
            raise InputError(f"holdout={self.holdout} must be a digit 0..9")
        # rank must fit the smallest targeted projection: cross-attention keys/values read cross_dim features
        if self.rank > self.cross_dim:
            raise InputError(f"rank={self.rank} exceeds the smallest LoRA target side ({self.cross_dim})")


FULL = StudyConfig()
QUICK = dataclasses.replace(FULL, seeds=(0, 1, 2), steps=30, placements=("kv",), pretrain_steps=200,
                            pretrain_batch=48, classifier_steps=150, samples=100, sample_steps=10,
                            timing_rounds=8)


# --------------------------------------------------------------------------------------------------- data/models

def load_digits_tensors():
    """All 1797 sklearn digits as float32 [N, 1, 8, 8] in [-1, 1] and int64 labels."""

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return x, torch.tensor(d.target, dtype=torch.int64)


def build_model(cfg):
    """(unet, class_tokens): class c -> ``tokens`` learned cross-attention tokens of ``cross_dim`` features."""

    unet = UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=tuple(cfg.channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=cfg.cross_dim, attention_head_dim=8,
        norm_num_groups=8)
    tokens = torch.nn.Embedding(10, cfg.tokens * cfg.cross_dim)
    return unet, tokens


def _cond(tokens, labels, cfg):
    return tokens(labels).view(labels.shape[0], cfg.tokens, cfg.cross_dim)


def _scheduler(cfg):

    return DDPMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule="squaredcos_cap_v2")


def _diffusion_loss(unet, tokens, sched, x0, labels, gen, cfg):

    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, cfg.train_timesteps, (x0.shape[0],), generator=gen)
    xt = sched.add_noise(x0, noise, t)
    pred = unet(xt, t, encoder_hidden_states=_cond(tokens, labels, cfg)).sample
    return torch.nn.functional.mse_loss(pred, noise)


def pretrain(cfg, x, y, log=None):
    """Pre-train U-Net and class tokens on every digit except the held-out one (fixed seed 1234)."""

    torch.manual_seed(1234)
    unet, tokens = build_model(cfg)
    keep = y != cfg.holdout
    xs, ys = x[keep], y[keep]
    sched = _scheduler(cfg)
    opt = torch.optim.Adam(list(unet.parameters()) + list(tokens.parameters()), lr=cfg.pretrain_lr)
    gen = torch.Generator().manual_seed(1234)
    for step in range(cfg.pretrain_steps):
        idx = torch.randint(0, xs.shape[0], (cfg.pretrain_batch,), generator=gen)
        loss = _diffusion_loss(unet, tokens, sched, xs[idx], ys[idx], gen, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log and (step + 1) % max(1, cfg.pretrain_steps // 4) == 0:
            log(f"  pretrain step {step + 1}/{cfg.pretrain_steps}: loss {loss.item():.4f}")
    return unet, tokens


class _Classifier:
    """Small CNN digit classifier; ``features`` is its 32-d penultimate layer before the ReLU (the digits-FID space:
    pre-activation features have no dead dimensions, so the covariances are not singular)."""

    def __init__(self, cfg, x, y):

        torch.manual_seed(99)
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 16, 32))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(32, 10))
        gen = torch.Generator().manual_seed(99)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_test = x.shape[0] // 5
        test, train = perm[:n_test], perm[n_test:]
        opt = torch.optim.Adam(list(self.body.parameters()) + list(self.head.parameters()), lr=3e-3)
        for _ in range(cfg.classifier_steps):
            idx = train[torch.randint(0, train.shape[0], (128,), generator=gen)]
            xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=gen)
            loss = nn.functional.cross_entropy(self.head(self.body(xb)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            self.test_accuracy = float((self.head(self.body(x[test])).argmax(1) == y[test]).float().mean())

    def features(self, x):

        with torch.no_grad():
            return self.body(x.clamp(-1, 1)).double().numpy()

    def predict(self, x):

        with torch.no_grad():
            return self.head(self.body(x.clamp(-1, 1))).argmax(1)


def frechet_distance(f1, f2):
    """FID formula on two feature sets [n, d]: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2) (similar to S1 S2): symmetric eigensolvers only, no complex round-off.
    """
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def sample(unet, tokens, cfg, label, n, seed):
    """``n`` DDIM samples of class ``label`` (batched once), clipped to [-1, 1]."""

    sched = DDIMScheduler(num_train_timesteps=cfg.train_timesteps, beta_schedule="squaredcos_cap_v2")
    sched.set_timesteps(cfg.sample_steps)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn((n, 1, 8, 8), generator=gen)
    with torch.no_grad():
        cond = _cond(tokens, torch.full((n,), label, dtype=torch.int64), cfg)
        for t in sched.timesteps:
            eps = unet(x, t.expand(n), encoder_hidden_states=cond).sample
            x = sched.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


class _Trainer:
    """A copy of the pre-trained model with LoRA in one mode, and its fine-tuning step."""

    def __init__(self, cfg, base_state, concept, mode, placement, seed):


        self.cfg, self.concept = cfg, concept
        self.unet, self.tokens = build_model(cfg)
        self.unet.load_state_dict(base_state[0])
        self.tokens.load_state_dict(base_state[1])
        self.tokens.requires_grad_(False)
        torch.manual_seed(seed)  # LoRA init: equal across modes for one seed
        self.engine = TorchEngine()
        quant, scaling, rounding = MODE_SETTINGS[mode]
        params = add_lora(self.unet, PLACEMENTS[placement], rank=cfg.rank, alpha=cfg.alpha, quant=quant,
                          engine=self.engine, rounding=rounding or cfg.rounding, seed=seed * 1000, scaling=scaling)
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.sched = _scheduler(cfg)
        self.gen = torch.Generator().manual_seed(seed)
        self.labels = torch.full((cfg.batch,), cfg.holdout, dtype=torch.int64)

    def step(self):
        """One fine-tuning step; returns (loss, seconds)."""

        t0 = time.perf_counter()
        idx = torch.randint(0, self.concept.shape[0], (self.cfg.batch,), generator=self.gen)
        loss = _diffusion_loss(self.unet, self.tokens, self.sched, self.concept[idx], self.labels, self.gen, self.cfg)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.engine.reset()
        return loss.item(), time.perf_counter() - t0


def finetune(cfg, base_state, concept, mode, placement, seed):
    """LoRA fine-tuning of a copy of the pre-trained model; returns (unet, tokens, step_seconds list, losses)."""
    tr = _Trainer(cfg, base_state, concept, mode, placement, seed)
    times, losses = [], []
    for _ in range(cfg.steps):
        loss, dt = tr.step()
        times.append(dt)
        losses.append(loss)
    return tr.unet, tr.tokens, times, losses


def time_steps(cfg, base_state, concept, placement):
    """Median seconds per fine-tuning step of each mode, measured interleaved (one step of every mode per
    round, ``cfg.timing_rounds`` rounds after one warm-up round), so load drift on a shared machine hits all
    modes alike."""
    trainers = {m: _Trainer(cfg, base_state, concept, m, placement, 0) for m in cfg.modes}
    times = {m: [] for m in cfg.modes}
    for r in range(cfg.timing_rounds + 1):
        for m, tr in trainers.items():
            dt = tr.step()[1]
            if r:
                times[m].append(dt)
    return {m: statistics.median(v) for m, v in times.items()}


def _mean_std(v):
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def run_study(cfg, log=print):
    """Run the study; returns the result dict (JSON-ready). See the module doc for what is measured."""

    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    try:
        x, y = load_digits_tensors()
        log(f"digits: {x.shape[0]} images; held-out concept: digit {cfg.holdout}")
        clf = _Classifier(cfg, x, y)
        log(f"feature classifier: test accuracy {clf.test_accuracy:.3f}")
        real = x[y == cfg.holdout]
        real_feat = clf.features(real)
        gen = torch.Generator().manual_seed(7)
        perm = torch.randperm(real.shape[0], generator=gen)
        concept = real[perm[:cfg.finetune_images]]
        half = real.shape[0] // 2
        fid_real = frechet_distance(real_feat[perm[:half].numpy()], real_feat[perm[half:].numpy()])
        t0 = time.perf_counter()
        unet, tokens = pretrain(cfg, x, y, log)
        pretrain_s = time.perf_counter() - t0
        base_state = ({k: v.clone() for k, v in unet.state_dict().items()},
                      {k: v.clone() for k, v in tokens.state_dict().items()})
        before = []
        for seed in cfg.seeds:
            s = sample(unet, tokens, cfg, cfg.holdout, cfg.samples, seed)
            before.append(frechet_distance(real_feat, clf.features(s)))
        log(f"pre-trained model ({pretrain_s:.1f} s): digits-FID of '{cfg.holdout}' before fine-tuning "
            f"{_mean_std(before)[0]:.2f}; real-vs-real floor {fid_real:.2f}")
        placements = {}
        for placement in cfg.placements:
            runs = {m: {"fids": [], "steps_s": [], "accs": [], "losses": []} for m in cfg.modes}
            # seed-major, modes interleaved: machine-load drift hits every mode alike in the timings
            for seed in cfg.seeds:
                for mode in cfg.modes:
                    run = runs[mode]
                    u, tk, times, losses = finetune(cfg, base_state, concept, mode, placement, seed)
                    s = sample(u, tk, cfg, cfg.holdout, cfg.samples, seed)
                    run["fids"].append(frechet_distance(real_feat, clf.features(s)))
                    run["accs"].append(float((clf.predict(s) == cfg.holdout).float().mean()))
                    run["steps_s"] += times[1:] if len(times) > 1 else times  # first step warms up allocators
                    run["losses"].append(statistics.fmean(losses[-max(1, len(losses) // 5):]))
                    log(f"  {placement:3s} {mode:7s} seed {seed}: digits-FID {run['fids'][-1]:7.2f}  "
                        f"classified-as-{cfg.holdout} {run['accs'][-1]:.2f}  loss {run['losses'][-1]:.4f}  "
                        f"{statistics.median(times):.3f} s/step")
            timing = time_steps(cfg, base_state, concept, placement)
            log(f"  {placement:3s} interleaved timing: " + ", ".join(f"{m} {t:.3f} s/step" for m, t in timing.items()))
            modes = {}
            for mode, run in runs.items():
                fm, fs = _mean_std(run["fids"])
                modes[mode] = {
                    "fid_mean": fm, "fid_std": fs, "fids": run["fids"],
                    "seconds_per_step": timing[mode],
                    "seconds_per_step_training_median": statistics.median(run["steps_s"]),
                    "class_accuracy_mean": statistics.fmean(run["accs"]),
                    "final_loss_mean": statistics.fmean(run["losses"]),
                }
            if "fp32" in modes:
                ref = modes["fp32"]
                for r in modes.values():
                    r["dfid_vs_fp32"] = r["fid_mean"] - ref["fid_mean"]
                    r["dfid_in_fp32_std"] = (r["dfid_vs_fp32"] / ref["fid_std"]) if ref["fid_std"] > 0 else None
                    r["step_overhead_vs_fp32"] = r["seconds_per_step"] / ref["seconds_per_step"]
            placements[placement] = {"targets": PLACEMENTS[placement], "modes": modes}
        first = placements[cfg.placements[0]]
        goals = {}
        for placement, pr in placements.items():
            m = pr["modes"]
            if "fp32" not in m:
                continue
            g = {}
            for mode, n_std in (("int8", 1), ("int8-w4", 2), ("int8-delayed", 1), ("int8-delayed-sr", 1)):
                if mode in m:
                    g[f"{mode}_dfid_within_{n_std}_std"] = abs(m[mode]["dfid_vs_fp32"]) <= n_std * m["fp32"]["fid_std"]
                    g[f"{mode}_step_overhead_le_3x"] = m[mode]["step_overhead_vs_fp32"] <= 3.0
            goals[placement] = g
        return {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()},
            "placement": cfg.placements[0],
            "modes": first["modes"],
            "placements": placements,
            "goals": goals,
            "reference": {
                "fid_before_finetune_mean": _mean_std(before)[0], "fid_before_finetune_std": _mean_std(before)[1],
                "fid_real_vs_real": fid_real, "classifier_test_accuracy": clf.test_accuracy,
                "pretrain_seconds": pretrain_s,
            },
            "total_seconds": time.perf_counter() - t_start,
            "torch_threads": cfg.threads,
        }
    finally:
        torch.set_num_threads(old_threads)


def format_table(result):
    """Markdown table of a study result."""
    ref = result["reference"]
    lines = [
        "| placement | mode | digits-FID (mean ± std) | ΔFID vs fp32 (in fp32 std) | classified as concept | s/step "
        "| overhead vs fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for placement, pr in result["placements"].items():
        for mode, r in pr["modes"].items():
            d = r.get("dfid_vs_fp32")
            k = r.get("dfid_in_fp32_std")
            dtxt = "—" if d is None or mode == "fp32" else f"{d:+.2f} ({'n/a' if k is None else f'{k:+.2f}'})"
            ov = r.get("step_overhead_vs_fp32")
            lines.append(f"| {placement} | {mode} | {r['fid_mean']:.2f} ± {r['fid_std']:.2f} | {dtxt} | "
                         f"{r['class_accuracy_mean']:.2f} | {r['seconds_per_step']:.3f} | "
                         f"{'—' if ov is None else f'{ov:.2f}x'} |")
    lines.append("")
    for placement, g in result.get("goals", {}).items():
        lines.append(f"Goals ({placement}): " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in g.items()) + ".")
    lines.append(f"Before fine-tuning: digits-FID {ref['fid_before_finetune_mean']:.2f} ± "
                 f"{ref['fid_before_finetune_std']:.2f}; real-vs-real floor {ref['fid_real_vs_real']:.2f}; "
                 f"feature classifier test accuracy {ref['classifier_test_accuracy']:.3f}; seeds "
                 f"{result['config']['seeds']}; {result['config']['steps']} fine-tuning steps, rank "
                 f"{result['config']['rank']}, {result['torch_threads']} torch thread(s).")
    return "\n".join(lines)
