"""The KubeRay CRD's rules for RayCluster and RayJob (ray.io/v1), and a check of a manifest against them.

The rules are written in the CRD's own dialect (its `openAPIV3Schema`: `type`, `properties`,
`required`, `additionalProperties`, `items`, `enum`, `x-kubernetes-int-or-string`), copied from
ray-project/kuberay: `ray-operator/apis/ray/v1/raycluster_types.go` (3275ee09) and `rayjob_types.go`
(f6ef3f7b), whose json tags make the CRD, and `config/crd/bases/ray.io_rayclusters.yaml` for the
required lists (a worker group needs groupName, minReplicas, maxReplicas, rayStartParams, template).

Pod templates embed Kubernetes' PodSpec, which the CRD copies whole (700 kB). Only the part of it
this project's manifests use is written here: a PodSpec field outside it fails this check although
KubeRay would take it. Add it from the CRD when a manifest needs one. Unknown fields fail as
`kubectl apply` fails them (strict field validation, its default since Kubernetes 1.27).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number"}
QUANTITY: Schema = {"x-kubernetes-int-or-string": True}  # "16", 64Gi, 2: never a float such as 0.5
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}


def obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    """An object with exactly these fields, `required` among them."""
    return {"type": "object", "properties": properties, "required": list(required)}


def array(items: Schema) -> Schema:
    """A list of `items`."""
    return {"type": "array", "items": items}


# core/v1, the subset used here.
OBJECT_META = obj(name=STRING, namespace=STRING, labels=STRING_MAP, annotations=STRING_MAP)
KEY_REF = obj(("key",), name=STRING, key=STRING, optional=BOOL)
ENV_VAR = obj(("name",), name=STRING, value=STRING, valueFrom=obj(
    secretKeyRef=KEY_REF, configMapKeyRef=KEY_REF, fieldRef=obj(("fieldPath",), apiVersion=STRING, fieldPath=STRING)))
NAME_REF = obj(name=STRING, optional=BOOL)
ENV_FROM = obj(prefix=STRING, secretRef=NAME_REF, configMapRef=NAME_REF)
RESOURCES = obj(limits={"type": "object", "additionalProperties": QUANTITY},
                requests={"type": "object", "additionalProperties": QUANTITY})
VOLUME_MOUNT = obj(("mountPath", "name"), name=STRING, mountPath=STRING, readOnly=BOOL, subPath=STRING)
CONTAINER = obj(
    ("name",), name=STRING, image=STRING, imagePullPolicy=STRING, command=array(STRING), args=array(STRING),
    workingDir=STRING, env=array(ENV_VAR), envFrom=array(ENV_FROM), resources=RESOURCES,
    ports=array(obj(("containerPort",), containerPort=INT, name=STRING, protocol=STRING)),
    volumeMounts=array(VOLUME_MOUNT),
)
KEY_PATH = obj(("key", "path"), key=STRING, path=STRING, mode=INT)
VOLUME = obj(
    ("name",), name=STRING,
    configMap=obj(name=STRING, items=array(KEY_PATH), defaultMode=INT, optional=BOOL),
    secret=obj(secretName=STRING, items=array(KEY_PATH), defaultMode=INT, optional=BOOL),
    emptyDir=obj(medium=STRING, sizeLimit=QUANTITY),
    persistentVolumeClaim=obj(("claimName",), claimName=STRING, readOnly=BOOL),
)
TOLERATION = obj(key=STRING, operator=STRING, value=STRING, effect=STRING, tolerationSeconds=INT)
POD_TEMPLATE = obj(metadata=OBJECT_META, spec=obj(
    ("containers",), containers=array(CONTAINER), initContainers=array(CONTAINER), volumes=array(VOLUME),
    nodeSelector=STRING_MAP, tolerations=array(TOLERATION), serviceAccountName=STRING, restartPolicy=STRING,
    imagePullSecrets=array(obj(name=STRING)), priorityClassName=STRING, terminationGracePeriodSeconds=INT,
))

# ray.io/v1
AUTOSCALER_OPTIONS = obj(
    resources=RESOURCES, image=STRING, imagePullPolicy=STRING, idleTimeoutSeconds=INT,
    upscalingMode={"type": "string", "enum": ["Default", "Aggressive", "Conservative"]},
    env=array(ENV_VAR), envFrom=array(ENV_FROM), volumeMounts=array(VOLUME_MOUNT),
)
HEAD_GROUP = obj(("rayStartParams", "template"), rayStartParams=STRING_MAP, template=POD_TEMPLATE,
                 serviceType=STRING, enableIngress=BOOL)
WORKER_GROUP = obj(
    ("groupName", "maxReplicas", "minReplicas", "rayStartParams", "template"),
    groupName=STRING, replicas=INT, minReplicas=INT, maxReplicas=INT, numOfHosts=INT, idleTimeoutSeconds=INT,
    suspend=BOOL, rayStartParams=STRING_MAP, template=POD_TEMPLATE, scaleStrategy=obj(workersToDelete=array(STRING)),
)
RAY_CLUSTER_SPEC = obj(
    ("headGroupSpec",), headGroupSpec=HEAD_GROUP, workerGroupSpecs=array(WORKER_GROUP), rayVersion=STRING,
    enableInTreeAutoscaling=BOOL, autoscalerOptions=AUTOSCALER_OPTIONS, headServiceAnnotations=STRING_MAP,
    suspend=BOOL, managedBy=STRING,
)
RAY_JOB_SPEC = obj(
    entrypoint=STRING, rayClusterSpec=RAY_CLUSTER_SPEC, clusterSelector=STRING_MAP, submitterPodTemplate=POD_TEMPLATE,
    submitterConfig=obj(backoffLimit=INT), runtimeEnvYAML=STRING, jobId=STRING, metadata=STRING_MAP,
    submissionMode={"type": "string", "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
    shutdownAfterJobFinishes=BOOL, ttlSecondsAfterFinished=INT, activeDeadlineSeconds=INT, backoffLimit=INT,
    entrypointNumCpus=NUMBER, entrypointNumGpus=NUMBER, entrypointResources=STRING, suspend=BOOL, managedBy=STRING,
)


def resource(kind: str, spec: Schema) -> Schema:
    """A whole manifest of `kind` in ray.io/v1."""
    return obj(("apiVersion", "kind", "metadata", "spec"),
               apiVersion={"type": "string", "enum": ["ray.io/v1"]}, kind={"type": "string", "enum": [kind]},
               metadata=obj(("name",), name=STRING, namespace=STRING, labels=STRING_MAP, annotations=STRING_MAP),
               spec=spec)


RAY_CLUSTER = resource("RayCluster", RAY_CLUSTER_SPEC)
RAY_JOB = resource("RayJob", RAY_JOB_SPEC)
BY_KIND = {"RayCluster": RAY_CLUSTER, "RayJob": RAY_JOB}

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def violations(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Every place where `value` breaks `schema`: an unknown field, a missing required one, a wrong type."""
    if schema.get("x-kubernetes-int-or-string"):
        if _TYPES["string"](value) or _TYPES["integer"](value):
            return []
        return [f"{path}: must be an integer or a string, got {value!r}"]
    kind = schema["type"]
    if not _TYPES[kind](value):
        return [f"{path}: must be {kind}, got {type(value).__name__} {value!r}"]
    if value not in schema.get("enum", [value]):
        return [f"{path}: must be one of {schema['enum']}, got {value!r}"]
    if kind == "array":
        return [v for i, item in enumerate(value) for v in violations(item, schema["items"], f"{path}[{i}]")]
    if kind != "object":
        return []
    found = [f"{path}.{name}: required field missing" for name in schema.get("required", ()) if name not in value]
    fields, other = schema.get("properties", {}), schema.get("additionalProperties")
    for name, item in value.items():
        if name in fields:
            found += violations(item, fields[name], f"{path}.{name}")
        elif other is not None:
            found += violations(item, other, f"{path}.{name}")
        else:
            found.append(f"{path}.{name}: unknown field")
    return found
