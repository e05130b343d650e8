"""infra/ checked by parsing: the Dockerfile, the KubeRay manifests and the cluster-launcher YAML.

No docker, kubectl or network: the KubeRay manifests are checked against the CRD's field rules
(`tests/kuberay_schema.py`), the launcher YAML against Ray's own launcher schema, and the
Dockerfile against the README's install command and pyproject's package list.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kuberay_schema import BY_KIND, RAY_JOB, violations

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
LAUNCHER = ROOT / "infra" / "cluster" / "aws.yaml"
MANIFESTS = {p.stem: p for p in sorted((ROOT / "infra" / "kuberay").glob("*.yaml"))}
GPU = "nvidia.com/gpu"
# pip options that change how packages are fetched, not which packages and extras are installed,
# with the number of values each takes (the CPU image takes torch from PyTorch's CPU index).
SAME_INSTALL_OPTIONS = {"--no-cache-dir": 0, "-q": 0, "--quiet": 0, "--extra-index-url": 1}


def load(path: Path) -> Any:
    """A YAML file's content, anchors resolved."""
    return yaml.safe_load(path.read_text())


def cluster_spec(manifest: dict) -> dict:
    """The RayCluster spec of a RayCluster, or the one a RayJob starts."""
    return manifest["spec"] if manifest["kind"] == "RayCluster" else manifest["spec"]["rayClusterSpec"]


def ray_container(group: dict) -> dict:
    """The Ray container of a head or worker group: KubeRay starts Ray in the first one."""
    return group["template"]["spec"]["containers"][0]


def gpus(group: dict) -> int:
    """The GPUs a group's Ray container asks Kubernetes for."""
    return int(ray_container(group).get("resources", {}).get("limits", {}).get(GPU, 0))


def token_source(env: list[dict]) -> tuple[str, str] | None:
    """The (Secret, key) that RAY_AUTH_TOKEN comes from when RAY_AUTH_MODE is token, else None."""
    by_name = {e["name"]: e for e in env}
    ref = by_name.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    if by_name.get("RAY_AUTH_MODE", {}).get("value") != "token" or ref is None:
        return None
    return ref.get("name"), ref["key"]


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage's instructions (name, arguments), continuation lines joined, comments dropped."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current, pending = None, ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or not (line or pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        name, _, args = (pending + line).partition(" ")
        pending = ""
        if name.upper() == "FROM":
            parts = args.split()
            current = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else parts[0]
            stages[current] = [("FROM", parts[0])]
        elif current is not None:  # an ARG before the first FROM belongs to no stage
            stages[current].append((name.upper(), args.strip()))
    return stages


def stage_chain(stages: dict[str, list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    """The instructions that build stage `name`: its base stages' first."""
    base = stages[name][0][1]
    return (stage_chain(stages, base) if base in stages else []) + stages[name]


def build_tags() -> dict[str, str]:
    """Build target -> image tag, from the `docker build` commands the Dockerfile's header gives."""
    tags = {}
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("#") and "docker build" in line:
            argv = shlex.split(line[1:], comments=True)
            tags[argv[argv.index("--target") + 1]] = argv[argv.index("-t") + 1]
    return tags


def pip_installs(command: str) -> list[list[str]]:
    """The arguments of every `pip install` in a shell command line."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words = [], []
    for token in [*lexer, ";"]:
        if token and set(token) <= set("&|;()"):
            if len(words) > 1 and words[0].endswith("pip") and words[1] == "install":
                found.append(words[2:])
            words = []
        elif words or "=" not in token:  # leading VAR=value assignments are not the command
            words.append(token)
    return found


def requirements(args: list[str]) -> tuple[list[tuple[str, frozenset[str]]], list[str]]:
    """What a `pip install` installs, as (path or name, extras) sorted, and the options it was given."""
    wanted, options, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("-e", "--editable"):  # editable or not, the same packages and extras get installed
            i += 1
            continue
        if arg.startswith("-"):
            takes = SAME_INSTALL_OPTIONS.get(arg.split("=")[0], 0)
            options.append(arg)
            i += 1 + (takes if "=" not in arg else 0)
            continue
        name, _, extras = arg.partition("[")
        extras_set = frozenset(e.strip() for e in extras.rstrip("]").split(",") if e.strip())
        wanted.append((name.rstrip("/") or ".", extras_set))
        i += 1
    return sorted(wanted, key=str), options


def source_roots(project: dict) -> set[str]:
    """The repository's top folders that pyproject installs packages from (its package-dir applied)."""
    package_dir = project["tool"]["setuptools"]["package-dir"]
    roots = set()
    for package in project["tool"]["setuptools"]["packages"]:
        mapped = [d for p, d in package_dir.items() if package == p or package.startswith(p + ".")]
        roots.add((mapped[0] if mapped else package.replace(".", "/")).split("/")[0])
    return roots


def readme_install() -> list[str]:
    """The `pip install` arguments of the README's first set-up command."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md has no ```bash block of set-up commands"
    for line in block.group(1).splitlines():
        if installs := pip_installs(line):
            return installs[0]
    raise AssertionError("README.md's first ```bash block has no `pip install`")


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifest_follows_the_crd(name):
    manifest = load(MANIFESTS[name])
    assert manifest.get("kind") in BY_KIND, f"{name}: kind {manifest.get('kind')!r} is not RayCluster or RayJob"
    assert violations(manifest, BY_KIND[manifest["kind"]]) == []


def test_crd_check_fails_unknown_missing_and_mistyped_fields():
    broken = copy.deepcopy(load(MANIFESTS["rayjob"]))
    spec = broken["spec"]["rayClusterSpec"]
    group = spec["workerGroupSpecs"][1]
    group["minReplica"] = group.pop("minReplicas")
    group["rayStartParams"]["num-gpus"] = 1
    ray_container(spec["headGroupSpec"])["resources"]["limits"]["cpu"] = 0.5
    del spec["headGroupSpec"]["rayStartParams"]
    broken["spec"]["shutdownAfterJobFinishes"] = "true"
    assert sorted(violations(broken, RAY_JOB)) == [
        ".spec.rayClusterSpec.headGroupSpec.rayStartParams: required field missing",
        ".spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].resources.limits.cpu: "
        "must be an integer or a string, got 0.5",
        ".spec.rayClusterSpec.workerGroupSpecs[1].minReplica: unknown field",
        ".spec.rayClusterSpec.workerGroupSpecs[1].minReplicas: required field missing",
        ".spec.rayClusterSpec.workerGroupSpecs[1].rayStartParams.num-gpus: must be string, got int 1",
        ".spec.shutdownAfterJobFinishes: must be boolean, got str 'true'",
    ]


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_ray_process_gets_the_token_from_one_secret(name):
    manifest = load(MANIFESTS[name])
    spec = cluster_spec(manifest)
    envs = {"head": ray_container(spec["headGroupSpec"]).get("env", []),
            "autoscaler": spec.get("autoscalerOptions", {}).get("env", [])}
    envs.update({g["groupName"]: ray_container(g).get("env", []) for g in spec["workerGroupSpecs"]})
    if manifest["kind"] == "RayJob":  # `ray job submit` runs in its own pod and must pass the Jobs API's check
        envs["submitter"] = manifest["spec"]["submitterPodTemplate"]["spec"]["containers"][0].get("env", [])
    sources = {where: token_source(env) for where, env in envs.items()}
    assert None not in sources.values(), f"without RAY_AUTH_MODE=token and a secretKeyRef token: {sources}"
    assert len(set(sources.values())) == 1, f"one cluster, one token: {sources}"
    assert not [e for env in envs.values() for e in env if e["name"] == "RAY_AUTH_TOKEN" and "value" in e]


@pytest.mark.parametrize("name", MANIFESTS)
def test_cpu_workers_and_an_autoscaling_gpu_group_from_the_two_images(name):
    spec, tags = cluster_spec(load(MANIFESTS[name])), build_tags()
    head, groups = spec["headGroupSpec"], spec["workerGroupSpecs"]
    gpu_groups, cpu_groups = [g for g in groups if gpus(g)], [g for g in groups if not gpus(g)]
    assert spec.get("enableInTreeAutoscaling") is True
    assert head["rayStartParams"].get("num-cpus") == "0", "stage work must not land on the head"
    assert ray_container(head)["image"] == tags["cpu"]
    assert cpu_groups and gpu_groups
    for group in cpu_groups:
        assert ray_container(group)["image"] == tags["cpu"], group["groupName"]
        assert group["rayStartParams"].get("num-gpus", "0") == "0", group["groupName"]
    for group in gpu_groups:
        assert ray_container(group)["image"] == tags["cuda"], group["groupName"]
        assert group["minReplicas"] == 0, f"{group['groupName']}: idle GPUs must scale to zero"
        assert group["rayStartParams"].get("num-gpus") == str(gpus(group)), group["groupName"]
        tolerated = {t.get("key") for t in group["template"]["spec"].get("tolerations", [])}
        assert GPU in tolerated, f"{group['groupName']}: GPU nodes are tainted {GPU}"


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_container_has_cpu_and_memory_limits_and_sane_replicas(name):
    manifest = load(MANIFESTS[name])
    spec = cluster_spec(manifest)
    groups = {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}
    containers = {where: ray_container(g) for where, g in groups.items()}
    if manifest["kind"] == "RayJob":
        containers["submitter"] = manifest["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    for where, container in containers.items():
        # KubeRay tells Ray the limits; without them Ray would count the whole node's cores and memory.
        limits = container.get("resources", {}).get("limits", {})
        assert {"cpu", "memory"} <= set(limits), f"{where}: limits {limits}"
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group["groupName"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_ray_version_is_the_one_pyproject_pins(name):
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(re.match(r"ray(\[.*\])?==(\S+)", d).group(2) for d in dependencies if re.match(r"ray[\[=]", d))
    assert cluster_spec(load(MANIFESTS[name]))["rayVersion"] == pinned


def test_rayjob_runs_what_dataprep_submit_sends_with_s3_paths(tmp_path, monkeypatch):
    from dataprep import submit

    job = load(MANIFESTS["rayjob"])
    argv = shlex.split(job["spec"]["entrypoint"])
    config, flags = argv[3], dict(zip(argv[4::2], argv[5::2]))
    sent = []

    class JobsApi:
        def submit_job(self, *, entrypoint: str, **_: Any) -> str:
            sent.append(shlex.split(entrypoint))
            return "raysubmit_1"

    monkeypatch.setattr(submit, "_client", lambda address: JobsApi())
    (tmp_path / Path(config).name).write_text("")
    submit.submit(str(tmp_path / Path(config).name), address="http://head:8265",
                  input=flags.get("--input"), output=flags.get("--output"))
    # The same command, with the config at a path on the head instead of in the job's working_dir.
    assert argv[:3] + argv[4:] == sent[0][:3] + sent[0][4:]
    assert flags["--input"].startswith("s3://") and flags["--output"].startswith("s3://"), "every node must reach them"
    # The driver runs on the head: the config must be there, from a ConfigMap the head mounts.
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"].rstrip("/") + "/": m["name"] for m in head["containers"][0].get("volumeMounts", [])}
    volume = next((mounts[p] for p in mounts if config.startswith(p)), None)
    assert volume, f"config {config} is under none of the head's mounts {sorted(mounts)}"
    assert "configMap" in {v["name"]: v for v in head.get("volumes", [])}[volume]
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"


def test_dockerfile_installs_what_the_readme_installs():
    want, _ = requirements(readme_install())
    stages = dockerfile_stages()
    for target in build_tags():
        installs = [a for name, line in stage_chain(stages, target) if name == "RUN" for a in pip_installs(line)]
        assert len(installs) == 1, f"target {target}: {len(installs)} pip installs, expected the README's one"
        got, options = requirements(installs[0])
        assert got == want, f"target {target} installs {got}, the README {want}"
        assert {o.split("=")[0] for o in options} <= set(SAME_INSTALL_OPTIONS), options


def test_dockerfile_builds_a_cpu_and_a_cuda_image_of_the_whole_project():
    from packaging.specifiers import SpecifierSet

    stages, tags = dockerfile_stages(), build_tags()
    assert set(tags) == {"cpu", "cuda"} and set(tags) <= set(stages), (sorted(tags), sorted(stages))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = source_roots(project) | {"pyproject.toml", project["project"]["readme"], "configs"}
    for target in tags:
        chain = stage_chain(stages, target)
        copied = {src.rstrip("/") for name, args in chain if name == "COPY" for src in args.split()[:-1]}
        assert needed <= copied, f"target {target} does not copy {sorted(needed - copied)}"
        image = chain[0][1]
        python = re.match(r"python:(\d+\.\d+)", image)
        assert python and python.group(1) + ".0" in SpecifierSet(project["project"]["requires-python"]), image
        # KubeRay's probes run wget in the Ray container.
        assert any(name == "RUN" and "wget" in args for name, args in chain), f"target {target} has no wget"
    assert any(args.startswith("NVIDIA_DRIVER_CAPABILITIES=") and "video" in args
               for name, args in stages["cuda"] if name == "ENV"), "NVENC needs the driver's video libraries"


def test_cluster_launcher_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(load(LAUNCHER)))  # what `ray up` checks before it starts anything


def test_cluster_launcher_token_images_and_node_types():
    config, tags = load(LAUNCHER), build_tags()
    docker = config["docker"]
    options = shlex.split(" ".join(docker.get("run_options", [])))
    env = dict(o.split("=", 1)[1].split("=", 1) for o in options if o.startswith("--env="))
    assert env.get("RAY_AUTH_MODE") == "token"
    assert "RAY_AUTH_TOKEN" not in env, "a token written in the YAML would be committed with it"
    assert env.get("RAY_AUTH_TOKEN_PATH") in config.get("file_mounts", {}), "every node needs the token file"
    assert docker["image"] == tags["cpu"]
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("CPU") == 0, "stage work must not land on the head"
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    gpu_types = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types and len(gpu_types) < len(workers), "a CPU and a GPU node type"
    for name, node in workers.items():
        image = node.get("docker", {}).get("worker_image", docker["image"])
        assert image == tags["cuda" if name in gpu_types else "cpu"], name
    assert all(t["min_workers"] == 0 for t in gpu_types.values()), "idle GPUs must scale to zero"
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert not [c for c in commands if "RAY_AUTH_TOKEN=" in c]
