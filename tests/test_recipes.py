"""The platform recipes in examples/platforms, checked without a cluster.

Kubernetes objects are validated against the official schemas (kubernetes-validate); the
exit-code routing is checked against the executor's own table (nbjob.errors.EXIT_CODES); the
Kubeflow and FfDL manifests against their documented fields. The recipes that can run here
(docker/podman one-liners, the Kubeflow env reaching the kernel, the FfDL learner contract) are
run for real with podman in tests/test_images.py.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from nbjob import config, params, platforms
from nbjob.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ROOT / "examples" / "platforms"
K8S_VERSION = "1.33.0"  # podFailurePolicy is GA since 1.31
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
IMAGES = {"nbjob-torch", "nbjob-tf"}


def load(name: str) -> Any:
    return yaml.safe_load((PLATFORMS / name).read_text())


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def command_lines(name: str, prefix: str) -> list[list[str]]:
    """The one-line commands starting with ``prefix`` in a recipe script, split like a shell."""
    lines = [ln for ln in (PLATFORMS / name).read_text().splitlines() if ln.startswith(prefix)]
    assert lines, f"no '{prefix}' line in {name}"
    return [shlex.split(ln) for ln in lines]


def assert_no_literal_credentials(env: list[dict[str, Any]]) -> None:
    for var in env:
        if var["name"] in CREDENTIALS:
            assert "value" not in var, f"{var['name']} has a literal value"
            assert var["valueFrom"]["secretKeyRef"]["key"] == var["name"]


def assert_image(image: str) -> None:
    assert image.split(":")[0] in IMAGES, image
    framework = image.split(":")[0].removeprefix("nbjob-")
    assert "\nFROM ${BASE_IMAGE}\n" in (ROOT / f"Dockerfile.{framework}").read_text()


# -- Kubernetes Job ------------------------------------------------------------------------------


def job_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_job_manifest_is_valid_kubernetes():
    job = load("k8s-job.yaml")
    validate(job)
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1
    container = job_container(job)
    assert_image(container["image"])
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert_no_literal_credentials(container["env"])
    assert {v["name"] for v in container["env"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    security = spec["template"]["spec"]["securityContext"]
    assert security["runAsUser"] == 1000 and security["runAsNonRoot"] is True
    # nbjob must finish storing partial results before the kubelet's SIGKILL.
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert (
        float(env["NBJOB_STOP_GRACE"]) < spec["template"]["spec"]["terminationGracePeriodSeconds"]
    )


def test_job_validation_rejects_broken_manifests():
    """The validator really checks: the same Job with typical mistakes is refused."""
    job = load("k8s-job.yaml")
    broken = copy.deepcopy(job)
    broken["spec"]["backoffLimit"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    broken = copy.deepcopy(job)
    broken["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] = ["one"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    broken = copy.deepcopy(job)
    job_container(broken)["terminationMessagePolicy"] = 17
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_pod_failure_policy_maps_the_exit_code_table():
    job = load("k8s-job.yaml")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    name = job_container(job)["name"]
    by_action: dict[str, set[int]] = {}
    for rule in rules:
        if "onExitCodes" in rule:
            on = rule["onExitCodes"]
            assert on["containerName"] == name and on["operator"] == "In"
            by_action.setdefault(rule["action"], set()).update(on["values"])
    fail, ignore = by_action["FailJob"], by_action["Ignore"]
    # A bug in the notebook, bad usage, bad input or an unfit image: retrying cannot help.
    assert fail == {1, 2, 3, 7}
    # Stopped by the platform (eviction, preemption, drain): a disruption, not a failure; and
    # another attempt holding the destination (8): failing the Job would end the one running.
    assert ignore == {8, 143}
    assert {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    } in rules
    # Timeout, dead kernel (OOM), storage errors and a lost peer rank (a collective failed
    # because another rank died) are retried within backoffLimit, said so by a Count rule.
    retried = set(EXIT_CODES) - fail - ignore
    assert retried == by_action["Count"] == {4, 5, 6, 200}
    assert set(by_action) == {"FailJob", "Ignore", "Count"}
    # Every code the executor can return is routed on purpose (none forgotten, none invented).
    assert fail | ignore | retried == set(EXIT_CODES)
    for code in fail | ignore:
        assert code in EXIT_CODES


# -- Kubernetes Indexed Job: a sweep ------------------------------------------------------------


def test_indexed_job_sweep_manifest(tmp_path: Path) -> None:
    configmap, job = yaml.safe_load_all((PLATFORMS / "k8s-indexed-sweep.yaml").read_text())
    validate(configmap)
    validate(job)
    spec = job["spec"]
    assert (
        spec["completionMode"] == "Indexed" and spec["template"]["spec"]["restartPolicy"] == "Never"
    )
    # Retries per index: a failed shard is retried alone (no job-wide backoffLimit).
    assert spec["backoffLimitPerIndex"] >= 1 and "backoffLimit" not in spec
    container = job_container(job)
    assert_image(container["image"])
    assert_no_literal_credentials(container["env"])
    env = {v["name"]: v for v in container["env"]}
    assert "JOB_COMPLETION_INDEX" not in env  # Kubernetes sets it in each pod
    failures = env["NBJOB_RESTART_COUNT"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert failures == "metadata.annotations['batch.kubernetes.io/job-index-failure-count']"
    # The sweep file: mounted from the ConfigMap, one entry per completion, each a parameter set
    # of the example notebook's parameters cell.
    # (The other mounts are the restricted profile's emptyDirs at /tmp and /work.)
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert env["NBJOB_PARAMETERS_FILE"]["value"] == f"{mount['mountPath']}/sweep.yaml"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(configmap["data"]["sweep.yaml"])
    sweep = yaml.safe_load(sweep_file.read_text())
    assert isinstance(sweep, list) and spec["completions"] == len(sweep) == spec["parallelism"]
    declared = {"epochs", "hidden", "learning_rate", "seed"}  # examples/torch-digits
    for index, entry in enumerate(sweep):
        assert params.load_file(sweep_file, index) == entry and set(entry) <= declared
    # What nbjob makes of one pod's environment: shard 2 of the run, under shards/2/.
    pod = {"JOB_COMPLETION_INDEX": "2", "NBJOB_PARAMETERS_FILE": str(sweep_file),
           "NBJOB_SOURCE": env["NBJOB_SOURCE"]["value"],
           "NBJOB_OUTPUT": "s3://my-bucket/runs/nbjob-digits-sweep"}  # fmt: skip
    settings = config.resolve({}, pod)
    assert (settings.shard, settings.output) == (
        2,
        "s3://my-bucket/runs/nbjob-digits-sweep/shards/2",
    )
    assert params.merge(settings.parameters) == sweep[2]
    # Exit codes: a shard that cannot succeed fails its index only; the rest as in k8s-job.yaml.
    routes = exit_code_routes(job)
    assert routes == {"FailIndex": {1, 2, 3, 7}, "Ignore": {8, 143}, "Count": {4, 5, 6, 200}}
    assert set().union(*routes.values()) == set(EXIT_CODES)


def exit_code_routes(job: dict[str, Any]) -> dict[str, set[int]]:
    routes: dict[str, set[int]] = {}
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == job_container(job)["name"]
            routes.setdefault(rule["action"], set()).update(rule["onExitCodes"]["values"])
    return routes


# -- kubectl run ---------------------------------------------------------------------------------


def test_kubectl_run_quick_test_makes_a_valid_pod():
    (argv,) = command_lines("kubectl-run.sh", "kubectl run ")
    assert argv[:2] == ["kubectl", "run"]
    name = argv[2]
    flags = dict(a.split("=", 1) if "=" in a else (a, "") for a in argv[3:])
    assert flags["--restart"] == "Never"  # a bare Pod, not a Deployment: runs once
    assert "--rm" in flags and "-i" in flags  # attached, exit code returned, pod removed
    assert_image(flags["--image"])
    overrides = json.loads(flags["--overrides"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, **overrides}
    pod["spec"]["restartPolicy"] = "Never"  # what --restart=Never adds
    validate(pod)
    (container,) = pod["spec"]["containers"]
    assert container["name"] == name and container["image"] == flags["--image"]
    assert container["envFrom"] == [{"secretRef": {"name": "nbjob-s3"}}]
    assert container["args"][0].startswith("s3://")
    text = (PLATFORMS / "kubectl-run.sh").read_text()
    assert not re.search(r"AWS_SECRET_ACCESS_KEY=\w", text.split("kubectl run", 1)[1])


# -- docker / podman run -------------------------------------------------------------------------


def test_docker_one_liners_pass_credentials_by_name_only():
    commands = command_lines("docker-run.sh", "docker run ")
    assert len(commands) >= 3
    seen_credentials = False
    for argv in commands:
        assert argv[:3] == ["docker", "run", "--rm"]
        images = [a for a in argv if a.split(":")[0] in IMAGES]
        assert len(images) == 1, argv
        assert_image(images[0])
        for i, arg in enumerate(argv):
            if arg == "-e" and argv[i + 1].split("=")[0] in CREDENTIALS:
                assert "=" not in argv[i + 1], "credentials must be passed by name only"
                seen_credentials = True
    assert seen_credentials


# -- Kubeflow PyTorchJob -------------------------------------------------------------------------

# Fields of kubeflow.org/v1 PyTorchJob (training-operator CRD, kubeflow.org_pytorchjobs.yaml).
RUN_POLICY = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "cleanPodPolicy",
    "managedBy",
    "schedulingPolicy",
    "suspend",
    "ttlSecondsAfterFinished",
}
REPLICA_SPEC = {"replicas", "restartPolicy", "template"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}


def test_kubeflow_pytorchjob_manifest():
    job = load("kubeflow-pytorchjob.yaml")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert set(job["spec"]) <= {"runPolicy", "pytorchReplicaSpecs", "elasticPolicy", "nprocPerNode"}
    assert set(job["spec"]["runPolicy"]) <= RUN_POLICY
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] in {"All", "Running", "None"}
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1
    for role, spec in replicas.items():
        assert set(spec) <= REPLICA_SPEC, role
        assert isinstance(spec["replicas"], int)
        # ExitCode: the operator restarts on 128-255 (nbjob's 143 preemption, 200 peer lost)
        # and stops on nbjob's other codes.
        assert spec["restartPolicy"] == "ExitCode"
        # The pod template is a real Kubernetes PodTemplateSpec: validate it as one.
        validate(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": role.lower()},
                "template": spec["template"],
            }
        )
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator injects its env into this name
        assert_image(container["image"])
        assert container["envFrom"] == [{"secretRef": {"name": "nbjob-s3"}}]
        assert_no_literal_credentials(container.get("env", []))
        # The operator's variables must not be overridden by the manifest.
        assert not {v["name"] for v in container.get("env", [])} & {
            "MASTER_ADDR",
            "MASTER_PORT",
            "RANK",
            "WORLD_SIZE",
        }
    # One canonical result: every replica writes to the same destination (rank r > 0 under
    # ranks/<r>/ in it), so the replicas' arguments are the same.
    args = {
        role: spec["template"]["spec"]["containers"][0]["args"] for role, spec in replicas.items()
    }
    assert args["Master"] == args["Worker"] and "--output" in args["Master"]
    # What ExitCode retries (128-255) among nbjob's codes: a stop and a lost peer, nothing else.
    assert {code for code in EXIT_CODES if 128 <= code <= 255} == {143, 200}


# -- Kubeflow TFJob ------------------------------------------------------------------------------


def test_kubeflow_tfjob_manifest():
    job = load("kubeflow-tfjob.yaml")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    assert set(job["spec"]) <= {"runPolicy", "tfReplicaSpecs", "successPolicy"}
    assert set(job["spec"]["runPolicy"]) <= RUN_POLICY
    replicas = job["spec"]["tfReplicaSpecs"]
    assert set(replicas) == {"Chief", "Worker"} and replicas["Chief"]["replicas"] == 1
    args = []
    for role, spec in replicas.items():
        assert set(spec) <= REPLICA_SPEC and spec["restartPolicy"] == "ExitCode", role
        validate({"apiVersion": "v1", "kind": "PodTemplate",
                  "metadata": {"name": role.lower()}, "template": spec["template"]})  # fmt: skip
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "tensorflow"  # the operator injects TF_CONFIG into this name
        assert container["image"].startswith("nbjob-tf:")
        assert_image(container["image"])
        assert_no_literal_credentials(container.get("env", []))
        assert "TF_CONFIG" not in {v["name"] for v in container.get("env", [])}
        args.append(container["args"])
    assert args[0] == args[1] and "--output" in args[0]  # one destination for every replica
    # The TF_CONFIG the operator gives each replica, and the rank nbjob takes from it: the chief
    # is rank 0 (the canonical result), worker i is rank i + 1.
    cluster = {role.lower(): [f"{role.lower()}-{i}:2222" for i in range(spec["replicas"])]
               for role, spec in replicas.items()}  # fmt: skip
    seen = {}
    for kind, hosts in cluster.items():
        for index in range(len(hosts)):
            env = {"TF_CONFIG": json.dumps({"cluster": cluster,
                                            "task": {"type": kind, "index": index}})}  # fmt: skip
            me = platforms.resolve(env).identity
            assert me.world_size == 3 and me.source == "TF_CONFIG"
            seen[(kind, index)] = me.rank
    assert seen == {("chief", 0): 0, ("worker", 0): 1, ("worker", 1): 2}


# -- restricted Pod Security ---------------------------------------------------------------------

# Pod Security Standards, "restricted" profile (kubernetes.io/docs/concepts/security/
# pod-security-standards): the volume types it allows, and the capability a container may add.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
K8S_RECIPES = ("k8s-job.yaml", "k8s-indexed-sweep.yaml", "kubeflow-pytorchjob.yaml",
               "kubeflow-tfjob.yaml", "kubectl-run.sh")  # fmt: skip


def pod_specs(name: str) -> list[dict[str, Any]]:
    """Every pod spec of a Kubernetes recipe: a Job's template, each Kubeflow replica's, the
    pod `kubectl run --overrides` makes."""
    if name.endswith(".sh"):
        (argv,) = command_lines(name, "kubectl run ")
        (overrides,) = [a.split("=", 1)[1] for a in argv if a.startswith("--overrides=")]
        return [json.loads(overrides)["spec"]]
    specs = []
    for obj in yaml.safe_load_all((PLATFORMS / name).read_text()):
        if obj["kind"] == "Job":
            specs.append(obj["spec"]["template"]["spec"])
        for key in ("pytorchReplicaSpecs", "tfReplicaSpecs"):
            specs += [r["template"]["spec"] for r in obj.get("spec", {}).get(key, {}).values()]
    return specs


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec the restricted Pod Security profile refuses (an admission controller
    at ``enforce: restricted`` would reject the pod), plus nbjob's own read-only-root rule: a
    read-only root with emptyDir volumes at /tmp and the image's work folder /work."""
    found = []
    pod_sc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(flag)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for name, volume in volumes.items():
        if not set(volume) - {"name"} <= RESTRICTED_VOLUMES:
            found.append(f"volume {name}: {sorted(set(volume) - {'name'})}")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = {**pod_sc, **c.get("securityContext", {})}  # the container's own settings win
        where = f"container {c['name']}"
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") == 0:
            found.append(f"{where}: may run as root")
        if sc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: no seccompProfile RuntimeDefault")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{where}: capabilities not dropped (drop: [ALL])")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{where}: hostPort")
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: root filesystem writable")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for path in ("/tmp", "/work"):
            if "emptyDir" not in volumes.get(mounts.get(path, ""), {}):
                found.append(f"{where}: no emptyDir at {path}")
    return found


@pytest.mark.parametrize("name", K8S_RECIPES)
def test_kubernetes_recipes_meet_the_restricted_pod_security_profile(name: str) -> None:
    """Every Kubernetes recipe runs in a namespace at ``pod-security.kubernetes.io/enforce:
    restricted`` (and under OpenShift's restricted SCC), with a read-only root filesystem."""
    specs = pod_specs(name)
    assert specs
    for spec in specs:
        assert restricted_violations(spec) == [], name
        # Still a valid pod (the Job manifests are validated whole by the tests above).
        validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "nbjob"},
                  "template": {"spec": spec}})  # fmt: skip


def test_restricted_check_refuses_what_the_profile_refuses() -> None:
    """The check above can fail: each setting the profile needs, taken away, is reported."""
    (spec,) = pod_specs("k8s-job.yaml")
    assert restricted_violations(spec) == []
    breaks = {
        "allowPrivilegeEscalation": lambda s: s["containers"][0]["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
        "may run as root": lambda s: s["securityContext"].update(runAsNonRoot=False),
        "seccompProfile": lambda s: s["securityContext"].pop("seccompProfile"),
        "capabilities": lambda s: s["containers"][0]["securityContext"].pop("capabilities"),
        "root filesystem writable": lambda s: s["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        "no emptyDir at /tmp": lambda s: s["containers"][0]["volumeMounts"].pop(
            [m["mountPath"] for m in s["containers"][0]["volumeMounts"]].index("/tmp")
        ),
        "volume host": lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "hostNetwork": lambda s: s.update(hostNetwork=True),
    }
    for needle, mutate in breaks.items():
        broken = copy.deepcopy(spec)
        mutate(broken)
        assert any(needle in v for v in restricted_violations(broken)), needle


# -- FfDL ----------------------------------------------------------------------------------------


def test_ffdl_manifest_uses_the_image_as_custom_learner():
    manifest = load("ffdl-manifest.yml")
    assert {
        "name",
        "version",
        "gpus",
        "cpus",
        "memory",
        "learners",
        "data_stores",
        "framework",
    } <= set(manifest)
    assert isinstance(manifest["learners"], int) and manifest["learners"] >= 1
    assert re.fullmatch(r"\d+(Mb|Gb|MiB|GiB)", manifest["memory"])
    framework = manifest["framework"]
    assert framework["name"] == "custom"
    assert_image(framework["version"])  # custom learner: `version` is the image
    # The command is the image's entrypoint, which reads the FfDL variables itself.
    assert framework["command"] == "/usr/local/bin/entrypoint.sh"
    base = (ROOT / "Dockerfile.base").read_text()  # the framework images inherit it
    assert "COPY entrypoint.sh /usr/local/bin/entrypoint.sh" in base
    (store,) = manifest["data_stores"]
    assert {"id", "type", "training_data", "training_results", "connection"} <= set(store)
