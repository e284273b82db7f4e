#!/usr/bin/env bash
# One prediction with curl (and jq): a local reference image is sent as a data URI, a URL as it is; retries
# while the server is busy (HTTP 409: one Cog container runs one prediction at a time); saves the PNG.
#
#   examples/predict.sh REFERENCE "PROMPT" [OUTPUT.png]
#   SERVER=http://gpu-box:5000 EXTRA='{"rendering_speed": "Turbo", "seed": 42}' examples/predict.sh me.jpg "a knight"
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 REFERENCE PROMPT [OUTPUT.png]   (env: SERVER, EXTRA as a JSON object of other inputs)" >&2
    exit 2
fi
server=${SERVER:-http://localhost:5000}
reference=$1
prompt=$2
out=${3:-output.png}
extra=${EXTRA:-"{}"}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The body goes through files, not arguments: a photo's data URI is larger than one argument may be.
if [[ $reference == http://* || $reference == https://* ]]; then
    printf '%s' "$reference" > "$work/reference"
else
    case ${reference,,} in
        *.png) mime=image/png ;;
        *.jpg | *.jpeg) mime=image/jpeg ;;
        *.webp) mime=image/webp ;;
        *) mime=application/octet-stream ;;
    esac
    { printf 'data:%s;base64,' "$mime"; base64 -w0 "$reference"; } > "$work/reference"
fi
jq -n --arg prompt "$prompt" --rawfile reference "$work/reference" --argjson extra "$extra" \
    '{input: ({prompt: $prompt, character_reference_image: $reference} + $extra)}' > "$work/request.json"

delay=1
for attempt in $(seq 1 60); do
    status=$(curl -sS -o "$work/response.json" -w '%{http_code}' -X POST "$server/predictions" \
        -H 'Content-Type: application/json' --data-binary @"$work/request.json")
    [[ $status != 409 ]] && break
    echo "server busy (409), retry $attempt in ${delay}s" >&2
    sleep "$delay"
    delay=$((delay < 8 ? delay * 2 : 8))
done

if [[ $status == 200 ]] && [[ $(jq -r .status "$work/response.json") == failed ]]; then
    # The error sentence alone: Cog's server (coglet 0.23) wraps it as "Prediction failed: Prediction
    # failed: InputError: <sentence>" (docs/CONTRACT.md, errors).
    jq -r .error "$work/response.json" |
        sed -E 's/^(Prediction failed: )+([A-Z][A-Za-z0-9_]*(Error|Exception|Refused): )?//' >&2
    exit 1
fi
if [[ $status != 200 ]] || [[ $(jq -r .status "$work/response.json") != succeeded ]]; then
    echo "prediction failed (HTTP $status): $(jq -c '.error // .detail // .' "$work/response.json")" >&2
    exit 1
fi
output=$(jq -r .output "$work/response.json")
if [[ $output == data:* ]]; then
    printf '%s' "${output#*,}" | base64 -d > "$out"
else
    curl -sSf -o "$out" "$output"
fi
echo "saved $out"
