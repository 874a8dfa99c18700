"""The DAG: validate -> convert -> train -> evaluate -> [blessed] push, with cleanup on exit.

```
exit handler (delete the run's PyTorchJob, whatever happened)
└── validate ──► validation-gate ──► convert ──► train ──► evaluate ──[blessed]──► push
                                                                    └─[else]───► not-blessed
    (report,      (fails the run on
     anomalies)    anomalies: nothing downstream runs, the report stays on validate)
```

Compile-time choices (`CompileOptions`): the default image registry and tag (pipeline.images),
how pods reach GCS: workload identity (default: nothing in the YAML) or a Secret mounted by name
through kfp-kubernetes, and optionally a ConfigMap whose STORAGE_EMULATOR_HOST every pod gets
(a kind cluster's in-cluster GCS emulator). Everything else is a pipeline parameter a person can
change in the UI, each image included: one whole-image parameter per image (`validate_image`,
..., `train_image`), because the KFP backend resolves a pod's image only from a parameter that
is the whole image string (pipeline/backend_resolve.py).
Caching is keyed on inputs; change `cache_key` (UI) or pass `--no-cache` (CLI) to recompute.
`kfp dsl compile --py pipeline/dag.py --function recap_pipeline --output recap_pipeline.yaml`
builds the default variant.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real types.
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl

# The step pods mount a GCS key Secret where the training pods do.
from components.launch.pytorchjob import GCS_KEY_MOUNT
from pipeline.images import IMAGE_PARAMETERS, ImageSettings
from pipeline.kfp_components import STEP_IMAGES, make_components

PIPELINE_NAME = "recap-heavy-ranker"
# The env var google-cloud-storage reads to talk to an emulator instead of GCS.
STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"

# step -> (cpu request, cpu limit, memory request, memory limit) of its KFP pod. The training
# pods' own resources are pipeline parameters (the launcher pod itself is small).
RESOURCES: dict[str, tuple[str, str, str, str]] = {
    "validate": ("2", "4", "4Gi", "8Gi"),
    "convert": ("4", "8", "8Gi", "16Gi"),
    "train": ("500m", "1", "512Mi", "1Gi"),
    "evaluate": ("4", "8", "16Gi", "32Gi"),
    "push": ("500m", "1", "1Gi", "2Gi"),
    "not_blessed": ("100m", "500m", "128Mi", "256Mi"),
    "validation_gate": ("100m", "500m", "128Mi", "256Mi"),
    "delete_training_job": ("100m", "500m", "256Mi", "512Mi"),
}
# KFP retries. KFP (and Argo beneath it) repeats every failure of a task alike, a data error as
# much as a lost pod, so the data steps (validate, convert, evaluate) get none: a data error fails
# the run at once, and their transient faults are retried inside the step process
# (storage's per-call retries, then pipeline.runtime.retry_transient). Steps that only call APIs
# keep KFP retries. docs/architecture.md, "Retries", says why.
RETRIES: dict[str, int] = {"push": 3, "delete_training_job": 3}
DATA_STEPS = ("validate", "convert", "evaluate")
# Steps that must run every time: they depend on the run id or have side effects.
NEVER_CACHED = frozenset({"train", "push", "not_blessed", "validation_gate", "delete_training_job"})


@dataclass(frozen=True)
class CompileOptions:
    images: ImageSettings = field(default_factory=ImageSettings)
    gcs_secret: str = ""  # a Secret with a GCP key as `key.json`; empty = workload identity
    # A ConfigMap with a STORAGE_EMULATOR_HOST key (the kind overlay's `recap-storage`); every
    # pod gets it as env, the train step forwards it to the PyTorchJob. Empty = real GCS.
    storage_config_map: str = ""


def _configure(task: Any, step: str, options: CompileOptions, images: dict[str, Any]) -> Any:
    """Resources, the step's whole-image parameter, retries, caching and storage access."""
    cpu_req, cpu_lim, mem_req, mem_lim = RESOURCES[step]
    task.set_cpu_request(cpu_req).set_cpu_limit(cpu_lim).set_memory_request(mem_req).set_memory_limit(mem_lim)
    task.set_container_image(images[STEP_IMAGES[step]])
    if step in RETRIES:
        task.set_retry(num_retries=RETRIES[step], backoff_duration="30s", backoff_factor=2.0,
                       backoff_max_duration="600s")
    if step in NEVER_CACHED:
        task.set_caching_options(False)
    if options.gcs_secret:
        from kfp import kubernetes

        kubernetes.use_secret_as_volume(task, secret_name=options.gcs_secret, mount_path=GCS_KEY_MOUNT)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{GCS_KEY_MOUNT}/key.json")
    if options.storage_config_map:
        from kfp import kubernetes

        kubernetes.use_config_map_as_env(task, config_map_name=options.storage_config_map,
                                         config_map_key_to_env={STORAGE_EMULATOR_ENV: STORAGE_EMULATOR_ENV})
    return task.set_display_name(step.replace("_", "-"))


def build_pipeline(options: CompileOptions | None = None) -> Any:
    """The pipeline function (a KFP GraphComponent) for these compile-time options."""
    options = options or CompileOptions()
    ops = make_components(options.images)
    default_images = options.images.parameter_defaults()

    @dsl.pipeline(name=PIPELINE_NAME, description="Train Twitter's Heavy Ranker: validate, convert, train, evaluate, push.")
    def recap_pipeline(
        raw_data_uri: str,
        data_root: str = "",
        serving_uri: str = "",
        train_config: str = "configs/prod.yaml",
        schema: str = "prod",
        validate_config: str = "",
        convert_config: str = "",
        evaluate_config: str = "",
        reference_stats_uri: str = "",
        num_workers: int = 1,
        procs_per_worker: int = 0,
        gpus_per_worker: int = 0,
        data_service_workers: int = 0,
        cpu_per_worker: str = "",
        memory_per_worker: str = "",
        trainer_env: str = "",
        num_train_steps: int = 0,
        train_backend: str = "kubernetes",
        namespace: str = "kubeflow",
        train_timeout_s: int = 24 * 3600,
        validate_image: str = default_images["validate_image"],
        convert_image: str = default_images["convert_image"],
        train_image: str = default_images["train_image"],
        evaluate_image: str = default_images["evaluate_image"],
        launch_image: str = default_images["launch_image"],
        baseline_metrics_uri: str = "",
        cache_key: str = "",
        trainer_service_account: str = "recap-trainer",
    ) -> None:
        given = {"validate_image": validate_image, "convert_image": convert_image, "train_image": train_image,
                 "evaluate_image": evaluate_image, "launch_image": launch_image}
        images = {name: given[parameter] for name, parameter in IMAGE_PARAMETERS.items()}
        cleanup = _configure(
            ops.delete_training_job(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, namespace=namespace,
                                    backend=train_backend),
            "delete_training_job", options, images,
        )
        with dsl.ExitHandler(cleanup, name="recap"):
            validated = _configure(
                ops.validate(raw_data_uri=raw_data_uri, schema=schema, validate_config=validate_config,
                             reference_stats_uri=reference_stats_uri, data_root=data_root, cache_key=cache_key),
                "validate", options, images,
            )
            gate = _configure(
                ops.validation_gate(passed=validated.outputs["passed"], summary=validated.outputs["summary"]),
                "validation_gate", options, images,
            )
            converted = _configure(
                ops.convert(raw_data_uri=raw_data_uri, schema=schema, convert_config=convert_config,
                            validate_config=validate_config, data_root=data_root, cache_key=cache_key,
                            num_workers=num_workers, procs_per_worker=procs_per_worker,
                            gpus_per_worker=gpus_per_worker),
                "convert", options, images,
            ).after(gate)
            trained = _configure(
                ops.train(tfrecords=converted.outputs["tfrecords"], train_config=train_config,
                          data_root=data_root, backend=train_backend, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                          train_image=train_image, namespace=namespace,
                          num_workers=num_workers, procs_per_worker=procs_per_worker,
                          gpus_per_worker=gpus_per_worker, cpu_per_worker=cpu_per_worker,
                          memory_per_worker=memory_per_worker, trainer_env=trainer_env,
                          data_service_workers=data_service_workers,
                          num_train_steps=num_train_steps,
                          timeout_s=train_timeout_s, gcs_secret=options.gcs_secret,
                          service_account=trainer_service_account),
                "train", options, images,
            )
            evaluated = _configure(
                ops.evaluate(model=trained.outputs["model"], tfrecords=converted.outputs["tfrecords"],
                             evaluate_config=evaluate_config, baseline_metrics_uri=baseline_metrics_uri),
                "evaluate", options, images,
            )
            with dsl.If(evaluated.outputs["blessed"] == True, name="blessed"):  # noqa: E712
                _configure(
                    ops.push(model=trained.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                             serving_uri=serving_uri, data_root=data_root,
                             version=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
                    "push", options, images,
                )
            # The Else branch also works around kfp.local (2.17) skipping an If without Else
            # whose condition reads a task output.
            with dsl.Else(name="not-blessed"):
                _configure(ops.not_blessed(reason=evaluated.outputs["reason"]), "not_blessed", options, images)

    return recap_pipeline


def compile_pipeline(output: str, options: CompileOptions | None = None) -> str:
    """Write the pipeline YAML to `output`; returns the path."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(options), package_path=output)
    return output


# The default variant, for `kfp dsl compile --py pipeline/dag.py --function recap_pipeline`.
recap_pipeline = build_pipeline()

if __name__ == "__main__":
    compile_pipeline("recap_pipeline.yaml")
