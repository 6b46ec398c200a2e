"""A Kubeflow Pipelines v2 pipeline that runs a notebook bundle with nbjob, as a container component.

nbjob reads KFP's executor input (the ``{{$}}`` placeholder) and at the end writes
``executor_output.json`` itself: the scrapbook metrics as a Metrics artifact, the HTML report,
a Markdown summary and the output parameters below, which later steps can use. Compile it with
``python kfp-pipeline.py`` (writes nbjob-pipeline.yaml; the kfp SDK works offline) and upload
the YAML in the KFP UI, or submit it with ``kfp.Client().create_run_from_pipeline_package``.

The bundle and results URLs are the pipeline's parameters; the store's credentials come from a
Kubernetes secret (``kfp-kubernetes``' ``use_secret_as_env``), never from a parameter.
"""

from kfp import compiler, dsl

IMAGE = "nbjob-torch:latest"  # built from Dockerfile.torch (see docs/images.md)


@dsl.container_component
def nbjob_notebook(
    source: str,
    output: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.HTML],
    summary: dsl.Output[dsl.Markdown],
    status: dsl.OutputPath(str),
    exit_code: dsl.OutputPath(int),
    results_url: dsl.OutputPath(str),
):
    """Runs the notebook bundle at ``source``; results (notebook, run.json, log) to ``output``."""
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["nbjob", "run"],
        args=[source, "--output", output, "--kfp-executor-input", "{{$}}"],
    )


@dsl.pipeline(name="nbjob-notebook", description="A notebook bundle run by nbjob")
def pipeline(
    source: str = "s3://bundles/train.zip",
    output: str = "s3://results/train",
) -> None:
    # a notebook run is not a pure function of its inputs: never served from KFP's cache
    nbjob_notebook(source=source, output=output).set_caching_options(False)


if __name__ == "__main__":
    compiler.Compiler().compile(pipeline, "nbjob-pipeline.yaml")
