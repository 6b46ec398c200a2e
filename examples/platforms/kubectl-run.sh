#!/bin/sh
# Quick test on a Kubernetes cluster: one pod, attached, removed afterwards, exit code passed
# through (kubectl run -i --rm returns the container's exit code). Credentials come from a
# Secret (never on the command line):
#   kubectl create secret generic nbjob-s3 \
#       --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...
# Restricted Pod Security settings (docs/images.md, "Restricted clusters"): read-only root with
# emptyDirs at /tmp and /work, no capabilities, no privilege escalation, seccomp RuntimeDefault.
# Checked by tests/test_recipes.py (the pod it makes is validated against the Kubernetes schema).
kubectl run nbjob-quick --image=nbjob-torch:latest --restart=Never --rm -i --pod-running-timeout=5m --overrides='{"apiVersion": "v1", "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100, "seccompProfile": {"type": "RuntimeDefault"}}, "containers": [{"name": "nbjob-quick", "image": "nbjob-torch:latest", "args": ["s3://my-bucket/bundles/digits.zip", "--output", "s3://my-bucket/runs/quick"], "envFrom": [{"secretRef": {"name": "nbjob-s3"}}], "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}}, "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}, "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "work", "mountPath": "/work"}]}], "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "work", "emptyDir": {}}]}}'
