#!/usr/bin/env python3
"""Independent reference implementation of key derivation v1.

Prints the test vectors published in the README and pinned by the unit
tests in src/client/key/derive.rs. It shares no code with the Rust
implementation on purpose: if both agree, the documented rule is what the
binary does.
"""
import hashlib
import struct
import urllib.parse
import uuid

# Names whose values are credentials (src/shared/secret_names.rs, restated).
SECRET_EXACT = {"authorization", "proxy-authorization", "cookie", "auth", "sig", "pwd"}
SECRET_WORDS = ["token", "secret", "key", "password", "passwd", "signature", "credential"]


def framed_sha256(*fields):
    """SHA-256 over fields, each as a 4-byte big-endian length and its bytes."""
    h = hashlib.sha256()
    for field in fields:
        data = field if isinstance(field, bytes) else field.encode()
        h.update(struct.pack(">I", len(data)))
        h.update(data)
    return h.digest()


def key(provider, identity, attempt, salt, fingerprint):
    raw = bytearray(
        framed_sha256("idempotent-request/v1", provider, *identity, attempt, salt, fingerprint)[:16]
    )
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def is_secret_name(name):
    decoded = urllib.parse.unquote(name, errors="replace").lower()
    return decoded in SECRET_EXACT or any(word in decoded for word in SECRET_WORDS)


def key_url(url):
    """The URL as it feeds the key: no user-info, secret query values left out."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        component.split("=", 1)[0] if is_secret_name(component.split("=", 1)[0]) else component
        for component in parts.query.split("&")
    ) if parts.query else parts.query
    rebuilt = parts.scheme + "://" + netloc + parts.path
    if "?" in url:
        rebuilt += "?" + query
    return rebuilt


GITHUB = ["https://github.com", "123456", "9876543210", "deploy", "", "create-deployment"]
ZERO = bytes(32)
REQUEST_FP = framed_sha256("POST", "https://api.example.com/deployments", "", b'{"ref":"v1.2.3"}')
TOKEN_URL = "https://ci:tok-1@api.example.com/deployments?access_token=tok-2&env=prod"
TOKEN_FP = framed_sha256("POST", key_url(TOKEN_URL), "", b'{"ref":"v1.2.3"}')

print("1 github, run scope, no salt, zero fingerprint:", key("github", GITHUB, "", "", ZERO))
print("2 github, run scope, salt eu-west, zero fingerprint:", key("github", GITHUB, "", "eu-west", ZERO))
print("3 local, salt nightly, zero fingerprint:", key("local", [], "", "nightly", ZERO))
print("4 fingerprint of POST https://api.example.com/deployments {\"ref\":\"v1.2.3\"}:", REQUEST_FP.hex())
print("5 github, run scope, no salt, that fingerprint:", key("github", GITHUB, "", "", REQUEST_FP))
print("6 github, attempt scope (attempt 2), that fingerprint:", key("github", GITHUB, "2", "", REQUEST_FP))
print("7 fingerprint of POST " + TOKEN_URL + " with that body:", TOKEN_FP.hex())
print("8 github, run scope, no salt, that fingerprint:", key("github", GITHUB, "", "", TOKEN_FP))
print("9 trace-id for the key of vector 5:", framed_sha256("idempotent-request/trace/v1", "ae6cb888-153b-8630-a265-6925d0ff6072")[:16].hex())

# Every CI system's identity, restated from src/client/key/provider.rs: the
# variables in derivation order ("a|b" is the first of a and b that is set
# and not 0) and a sample environment. Zero fingerprint, run scope, no salt.
PROVIDERS = [
    ("jenkins", ["JENKINS_URL", "JOB_NAME", "BUILD_NUMBER", "STAGE_NAME"],
     {"JENKINS_URL": "https://jenkins.example/", "JOB_NAME": "deploy/main", "BUILD_NUMBER": "41", "STAGE_NAME": "Deploy"}),
    ("azure", ["SYSTEM_COLLECTIONID", "BUILD_BUILDID", "SYSTEM_STAGENAME", "SYSTEM_PHASENAME", "SYSTEM_JOBNAME"],
     {"TF_BUILD": "True", "SYSTEM_COLLECTIONID": "5b1c7c2e-0d77-4d3a-a1c7-1f6a2f7b2e11", "BUILD_BUILDID": "1207",
      "SYSTEM_STAGENAME": "deploy", "SYSTEM_PHASENAME": "release", "SYSTEM_JOBNAME": "linux"}),
    ("buildkite", ["BUILDKITE_ORGANIZATION_SLUG", "BUILDKITE_PIPELINE_SLUG", "BUILDKITE_BUILD_ID",
                   "BUILDKITE_STEP_KEY|BUILDKITE_STEP_ID", "BUILDKITE_PARALLEL_JOB"],
     {"BUILDKITE": "true", "BUILDKITE_ORGANIZATION_SLUG": "acme", "BUILDKITE_PIPELINE_SLUG": "app",
      "BUILDKITE_BUILD_ID": "0190d1a2-7b3c-4d5e-8f90-a1b2c3d4e5f6", "BUILDKITE_STEP_KEY": "deploy"}),
    ("circleci", ["CIRCLE_WORKFLOW_WORKSPACE_ID", "CIRCLE_JOB", "CIRCLE_NODE_INDEX"],
     {"CIRCLECI": "true", "CIRCLE_WORKFLOW_WORKSPACE_ID": "6c1e3f0a-2b4d-4e6f-8a0b-1c2d3e4f5a6b", "CIRCLE_JOB": "deploy",
      "CIRCLE_NODE_INDEX": "0"}),
    ("bitbucket", ["BITBUCKET_REPO_UUID", "BITBUCKET_PIPELINE_UUID", "BITBUCKET_STEP_UUID", "BITBUCKET_PARALLEL_STEP"],
     {"BITBUCKET_BUILD_NUMBER": "77", "BITBUCKET_REPO_UUID": "{1a2b3c4d-0000-4000-8000-000000000001}",
      "BITBUCKET_PIPELINE_UUID": "{1a2b3c4d-0000-4000-8000-000000000002}",
      "BITBUCKET_STEP_UUID": "{1a2b3c4d-0000-4000-8000-000000000003}"}),
    ("travis", ["TRAVIS_REPO_SLUG", "TRAVIS_BUILD_ID", "TRAVIS_JOB_ID"],
     {"TRAVIS": "true", "TRAVIS_REPO_SLUG": "acme/app", "TRAVIS_BUILD_ID": "987654", "TRAVIS_JOB_ID": "987655"}),
    ("woodpecker", ["CI_SYSTEM_URL", "CI_REPO", "CI_PIPELINE_PARENT|CI_PIPELINE_NUMBER", "CI_WORKFLOW_NAME", "CI_STEP_NAME"],
     {"CI": "woodpecker", "CI_SYSTEM_URL": "https://ci.example", "CI_REPO": "acme/app", "CI_PIPELINE_NUMBER": "12",
      "CI_PIPELINE_PARENT": "0", "CI_WORKFLOW_NAME": "deploy", "CI_STEP_NAME": "create"}),
    ("drone", ["DRONE_SYSTEM_HOST", "DRONE_REPO", "DRONE_BUILD_NUMBER", "DRONE_STAGE_NAME", "DRONE_STEP_NAME"],
     {"DRONE": "true", "DRONE_SYSTEM_HOST": "drone.example", "DRONE_REPO": "acme/app", "DRONE_BUILD_NUMBER": "5",
      "DRONE_STAGE_NAME": "default", "DRONE_STEP_NAME": "deploy"}),
    ("teamcity", ["TEAMCITY_PROJECT_NAME", "TEAMCITY_BUILDCONF_NAME", "BUILD_NUMBER"],
     {"TEAMCITY_VERSION": "2025.07", "TEAMCITY_PROJECT_NAME": "App", "TEAMCITY_BUILDCONF_NAME": "Deploy", "BUILD_NUMBER": "3"}),
    ("codebuild", ["CODEBUILD_BUILD_ARN"],
     {"CODEBUILD_BUILD_ARN": "arn:aws:codebuild:eu-west-1:123456789012:build/app:8d2a"}),
    ("cloudbuild", ["PROJECT_ID", "BUILD_ID"],
     {"PROJECT_ID": "acme-prod", "BUILD_ID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}),
]


def field(env, spec):
    for name in spec.split("|"):
        value = env.get(name, "")
        if value and (value != "0" or "|" not in spec):
            return value
    return ""


for n, (provider, fields, env) in enumerate(PROVIDERS, start=10):
    print(f"{n} {provider}, run scope, no salt, zero fingerprint:",
          key(provider, [field(env, spec) for spec in fields], "", "", ZERO))
