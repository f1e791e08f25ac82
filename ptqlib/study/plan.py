"""`plan_study(cfg)`: the one place that turns a config into the study's jobs.

Each job gets exactly the config values its result depends on, canonicalised (a value a job
does not read is left at its neutral default), so two configs that differ only in keys a
job does not use give that job the same key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ptqlib.runtime.executor import ExecutorOptions
from ptqlib.study.config import StudyConfig, split_sizes
from ptqlib.study.jobs import (AttackJob, BNRetune, ControlJob, DataSpec, DPTrainJob, GroupAttackJob, PruneJob,
                               QuantizeJob, QueryJob, TrainJob)

# The config keys each PTQ method reads, under the option names `ptq.quantize_model` takes.
METHOD_KEYS = {
    "rtn": (),
    "adaround": ("adaround_iters", "adaround_lr", "adaround_lambda"),
    "brecq": ("adaround_iters", "adaround_lr", "brecq_lambda", "brecq_loss"),
    "obc": ("obc_damp", "obc_hessian"),
    "gptq": ("obc_damp", "obc_hessian"),
}
# Protocol keys (the authors' steps): passed to the methods that read them only when set away from
# their default, so the default study's job keys stay those of before they existed.
PROTOCOL_KEYS = {"grid_search": tuple(METHOD_KEYS), "obc_cholesky": ("obc", "gptq"),
                 "batch_sampling": ("adaround", "brecq")}
_DEFAULT = StudyConfig()


@dataclass(frozen=True)
class ExtrasPlan:
    """The extra jobs (controls, DP-SGD, pruning), in the order they must run."""
    trains: tuple = ()  # fewer-epochs targets, DP-SGD targets and shadows
    models: tuple = ()  # weight-noise controls, pruned targets and shadows
    queries: tuple = ()
    attacks: tuple[GroupAttackJob, ...] = ()

    @property
    def jobs(self) -> list:
        return [*self.trains, *self.models, *self.queries, *self.attacks]


@dataclass(frozen=True)
class StudyPlan:
    """Every job of a preset, by role; `stages` groups them by the stage that runs them."""
    targets: tuple[TrainJob, ...]
    shadows: tuple[TrainJob, ...]
    quantized_targets: tuple[QuantizeJob, ...]
    quantized_shadows: tuple[QuantizeJob, ...]  # only for the adaptive threat models
    queries: tuple[QueryJob, ...]  # shadows first, then targets
    attack: AttackJob
    extras: ExtrasPlan = ExtrasPlan()  # run by the analysis stage

    @property
    def stages(self) -> dict[str, list]:
        return {"train": list(self.targets), "shadows": list(self.shadows),
                "quantize": list(self.quantized_targets + self.quantized_shadows),
                "attack": [*self.queries, self.attack], "analysis": [], "extras": self.extras.jobs}


def data_spec(cfg: StudyConfig) -> DataSpec:
    canaries = {"canaries": cfg.canaries, "canary_kind": cfg.canary_kind, "canary_seed": cfg.seed} \
        if cfg.canaries else {}  # without canaries the spec keeps its neutral defaults
    return DataSpec(dataset=cfg.dataset, data_root=str(cfg.data_path), test_fraction=cfg.test_fraction,
                    image_size=cfg.image_size, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                    download=cfg.download, normalization=cfg.normalization, **canaries)


def train_job(cfg: StudyConfig, role: str, index: int) -> TrainJob:
    masks = "target" if role == "target" else cfg.shadow_masks
    return TrainJob(data=data_spec(cfg), arch=cfg.arch, role=role, index=index, seed=cfg.seed, masks=masks,
                    num_models=cfg.num_shadows if masks == "argsort" else 0, epochs=cfg.epochs,
                    batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    augment=cfg.augment, precision=cfg.train_precision, torch_compile=cfg.torch_compile,
                    device=cfg.device, stem_init=cfg.stem_init, lr_schedule=cfg.lr_schedule,
                    width=float(cfg.width))


def quantize_job(cfg: StudyConfig, source: TrainJob, recipe: dict, act_bits: int | None = None) -> QuantizeJob:
    method = recipe["method"]
    is_obc = method in ("obc", "gptq")
    calib = 0 if method == "rtn" else (cfg.obc_calib_samples or cfg.calib_samples) if is_obc else cfg.calib_samples
    if act_bits is not None and not calib:  # activation ranges need calibration images, even after RTN
        calib = cfg.calib_samples
    retune = None
    if method in cfg.bn_retune:
        retune = BNRetune(source=cfg.bn_retune_source, samples=cfg.bn_retune_samples, steps=cfg.bn_retune_steps,
                          batch_size=cfg.batch_size, augment=cfg.bn_retune_augment,
                          momentum=cfg.bn_retune_momentum, sampling=cfg.batch_sampling)
    protocol = tuple((k, getattr(cfg, k)) for k, users in PROTOCOL_KEYS.items()
                     if method in users and getattr(cfg, k) != getattr(_DEFAULT, k))
    return QuantizeJob(source=source, **recipe, layer_bits=tuple(sorted(cfg.layer_bits.items())),
                       options=tuple((k, getattr(cfg, k)) for k in METHOD_KEYS[method]) + protocol,
                       calib_draw=cfg.calib_draw if calib else "training_order",
                       calib_samples=calib, calib_source=cfg.calib_source if calib else "members",
                       calib_rounds=cfg.obc_calib_rounds if is_obc else 1, bn_retune=retune,
                       act_bits=None if act_bits is None else int(act_bits),
                       act_range=cfg.act_range if act_bits is not None else "")


def query_job(cfg: StudyConfig, model) -> QueryJob:
    shift = cfg.query_shift if cfg.queries in ("shift", "mirror_shift") else 0
    count = cfg.query_count if cfg.queries == "random_per_model" else 0
    return QueryJob(model=model, queries=cfg.queries, shift=shift, count=count)


def rmia_population(cfg: StudyConfig) -> int:
    """The attack jobs' rmia_population: 0 (the whole test split) unless RMIA runs on fewer points."""
    sizes = split_sizes(cfg.as_dict())
    whole = sizes is not None and cfg.rmia_population == sizes[1]
    return 0 if "rmia" not in cfg.attacks or whole else cfg.rmia_population


def needs_quantized_shadows(cfg: StudyConfig) -> bool:
    return any(t in cfg.threat_models for t in ("matched_shadows", "leave_one_out", "leave_one_out_fp",
                                                 "both_models"))


def needs_quantized_targets(cfg: StudyConfig) -> bool:
    """fp_shadows, matched_shadows and both_models attack the targets; the leave-one-out models attack the pool."""
    return any(t in cfg.threat_models for t in ("fp_shadows", "matched_shadows", "both_models"))


def model_recipes(cfg: StudyConfig, index: int) -> list[dict]:
    """The recipes model `index` (of its role) is quantized with: all of them below quantize_models, and
    OBC/GPTQ limited by obc_models and obc_bits."""
    if cfg.quantize_models and index >= cfg.quantize_models:
        return []

    def wanted(r: dict) -> bool:
        if r["method"] not in ("obc", "gptq"):
            return True
        return (not cfg.obc_models or index < cfg.obc_models) and (not cfg.obc_bits or r["bits"] in cfg.obc_bits)
    return [r for r in cfg.recipes() if wanted(r)]


def plan_study(cfg: StudyConfig) -> StudyPlan:
    """Every job of the study the config describes."""
    targets = tuple(train_job(cfg, "target", i) for i in range(cfg.num_targets))
    shadows = tuple(train_job(cfg, "shadow", i) for i in range(cfg.num_shadows))
    q_targets = tuple(quantize_job(cfg, t, r, a) for t in targets for r in model_recipes(cfg, t.index)
                      for a in cfg.act_bits) if needs_quantized_targets(cfg) else ()
    q_shadows = tuple(quantize_job(cfg, s, r, a) for s in shadows for r in model_recipes(cfg, s.index)
                      for a in cfg.act_bits) if needs_quantized_shadows(cfg) else ()
    if cfg.obc_models:  # the few long OBC/GPTQ jobs first, so the short ones fill the other workers
        q_shadows = tuple(sorted(q_shadows, key=lambda q: q.method not in ("obc", "gptq")))
    shadow_models = shadows + q_shadows
    target_models = targets + q_targets
    shadow_queries = tuple(query_job(cfg, m) for m in shadow_models)
    target_queries = tuple(query_job(cfg, m) for m in target_models)
    attack = AttackJob(targets=target_queries, shadows=shadow_queries, attacks=tuple(cfg.attacks),
                       threat_models=tuple(cfg.threat_models), rmia_population=rmia_population(cfg))
    extras = extras_plan(cfg, targets, shadows, q_targets, shadow_queries[:len(shadows)])
    return StudyPlan(targets, shadows, q_targets, q_shadows, shadow_queries + target_queries, attack, extras)


def dp_train_job(cfg: StudyConfig, base: TrainJob, noise: float):
    """`base` trained with DP-SGD (its shadows balanced over dp_shadows models)."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    if base.role == "shadow" and base.masks == "argsort":
        fields["num_models"] = cfg.dp_shadows or cfg.num_shadows
    fields["epochs"] = cfg.dp_epochs or cfg.epochs
    fields["lr_schedule"] = "per_step"  # train_private steps its cosine per batch whatever the key says
    return DPTrainJob(**fields, noise_multiplier=float(noise), max_grad_norm=cfg.dp_clip)


def extras_plan(cfg: StudyConfig, targets: tuple, shadows: tuple, q_targets: tuple,
                fp_shadow_queries: tuple) -> ExtrasPlan:
    """Controls (weight noise, fewer epochs) and defences (DP-SGD, pruning), each group attacked with LiRA.

    Controls face the FP shadows. DP-SGD targets face DP shadows trained with the same noise
    (matched_shadows) and the FP shadows; pruned targets face pruned shadows and the FP shadows.
    """
    trains, models, queries, attacks = [], [], {}, []
    planned = {q.key for q in fp_shadow_queries}  # the attack stage queries the FP shadows

    def group(label, family, setting, threat_model, target_models, shadow_queries):
        target_queries = tuple(query_job(cfg, m) for m in target_models)
        queries.update((q.key, q) for q in (*target_queries, *shadow_queries) if q.key not in planned)
        attacks.append(GroupAttackJob(label=label, family=family, setting=float(setting),
                                      threat_model=threat_model, targets=target_queries,
                                      shadows=tuple(shadow_queries), attacks=tuple(cfg.attacks),
                                      rmia_population=rmia_population(cfg)))

    if cfg.control_noise:
        for q_label in dict.fromkeys(q.label for q in q_targets if q.act_bits is None):
            controls = tuple(ControlJob(source=q.source, matched=q) for q in q_targets if q.label == q_label)
            models += controls
            group(controls[0].label, "noise", 0, "fp_shadows", controls, fp_shadow_queries)
    for epochs in cfg.control_epochs:
        fewer = tuple(dataclasses.replace(t, epochs=epochs) for t in targets)
        trains += fewer
        group(f"{epochs} epochs", "epochs", epochs, "fp_shadows", fewer, fp_shadow_queries)
    for noise in cfg.dp_noise:
        dp_targets = tuple(dp_train_job(cfg, t, noise) for t in targets)
        dp_shadows = tuple(dp_train_job(cfg, train_job(cfg, "shadow", i), noise)
                           for i in range(cfg.dp_shadows or cfg.num_shadows))
        trains += dp_targets + dp_shadows
        group(dp_targets[0].label, "dp", noise, "matched_shadows", dp_targets,
              tuple(query_job(cfg, s) for s in dp_shadows))
        group(dp_targets[0].label, "dp", noise, "fp_shadows", dp_targets, fp_shadow_queries)
    for sparsity in cfg.prune_sparsity:
        pruned_targets = tuple(PruneJob(source=t, sparsity=float(sparsity)) for t in targets)
        pruned_shadows = tuple(PruneJob(source=s, sparsity=float(sparsity)) for s in shadows)
        models += pruned_targets + pruned_shadows
        group(pruned_targets[0].label, "prune", sparsity, "matched_shadows", pruned_targets,
              tuple(query_job(cfg, s) for s in pruned_shadows))
        group(pruned_targets[0].label, "prune", sparsity, "fp_shadows", pruned_targets, fp_shadow_queries)
    return ExtrasPlan(tuple(trains), tuple(models), tuple(queries.values()), tuple(attacks))


def executor_options(cfg: StudyConfig) -> ExecutorOptions:
    return ExecutorOptions(backend=cfg.executor, workers=cfg.workers, worker_threads=cfg.worker_threads,
                           use_gpus=cfg.device != "cpu", gpus_per_job=cfg.gpus_per_job,
                           ray_address=cfg.ray_address)
