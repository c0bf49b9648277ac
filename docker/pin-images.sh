#!/usr/bin/env bash
# Pin every image the deployment pulls to the digest its tag names now (`make pin-images`):
# image: NAME:TAG in the compose files and FROM NAME:TAG in docker/*.Dockerfile become
# NAME:TAG@sha256:..., so a tag moved upstream changes nothing here until this runs again.
# Needs `docker buildx` and the registry; run it again to move to a tag's newer build.
set -euo pipefail
cd "$(dirname "$0")/.."
files=(docker-compose.yml docker-compose.sentinel.yml docker/*.Dockerfile)
refs=$(grep -hoE '^\s*(image:|FROM)\s+[^ #]+' "${files[@]}" | awk '{print $2}' | sed 's/@sha256:.*//' | sort -u)
for ref in $refs; do
    digest=$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest}}' |
             python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')
    [[ $digest == sha256:* ]] || { echo "no digest for $ref" >&2; exit 1; }
    # NAME:TAG (with any old digest) -> NAME:TAG@digest, on image: and FROM lines only
    esc=$(printf '%s' "$ref" | sed 's/[.[\*^$|]/\\&/g')
    sed -i -E "s|^(\s*(image:\|FROM)\s+)${esc}(@sha256:[0-9a-f]{64})?(\s\|$)|\1${ref}@${digest}\4|" "${files[@]}"
    echo "$ref@$digest"
done
