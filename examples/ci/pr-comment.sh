#!/usr/bin/env bash
# Build the pull-request comment for a change of the fleet spec (Atlantis-style):
#   1. `reconcile validate` of the head's spec (every problem, file:line:column),
#   2. `reconcile diff BASE HEAD --output markdown`: what changes in the desired state,
#   3. `reconcile --dry-run --output markdown`: the plan against the real fleet (counts, monthly
#      cost before/after, guard warnings), only when the head's spec is valid.
#
# Usage: pr-comment.sh BASE_SPEC HEAD_SPEC [COMMENT_FILE]
#   BASE_SPEC, HEAD_SPEC: spec files or folders of the base and the head (data only: nothing
#   from the pull request is executed); COMMENT_FILE defaults to comment.md.
# Environment: RECONCILE (the command, default `reconcile`), PLAN=0 to skip the dry-run (no
#   credentials: the untrusted half of the workflow), and for the dry-run the operator's
#   RECONCILER_DATABASE_URL, HOSTWINDS_API_URL and the API key variable.
# Exit status: 0 valid (the plan may have changes), 1 the spec is invalid or the plan failed.
# The comment is always written, and kept under GitHub's 65,536-character limit.
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BASE_SPEC HEAD_SPEC [COMMENT_FILE]" >&2
  exit 2
fi
base=$1
head=$2
out=${3:-comment.md}
reconcile=${RECONCILE:-reconcile}
limit=64000
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

fence() { printf '```\n'; head -c 20000 "$1"; printf '\n```\n'; }

{
  printf '## fleet-reconciler\n\n'
  if $reconcile validate "$head" > "$work/validate.out" 2> "$work/validate.err"; then
    printf '**validate**: OK: %s\n\n' "$(head -c 500 "$work/validate.out")"
    valid=1
  else
    printf '**validate**: the spec of this pull request does not load:\n\n'
    fence "$work/validate.err"
    printf '\n'
    valid=0
    status=1
  fi
  if [ "$valid" = 1 ]; then
    if $reconcile diff "$base" "$head" --output markdown > "$work/diff.md" 2> "$work/diff.err"; then
      cat "$work/diff.md"
    else
      printf '**diff** failed:\n\n'
      fence "$work/diff.err"
    fi
    printf '\n'
    if [ "${PLAN:-1}" != 0 ]; then
      if $reconcile --dry-run -f "$head" --output markdown > "$work/plan.md" 2> "$work/plan.err"; then
        cat "$work/plan.md"
      else
        printf '**plan** failed:\n\n'
        fence "$work/plan.err"
        status=1
      fi
    fi
  fi
} > "$work/comment.md"

if [ "$(wc -c < "$work/comment.md")" -gt "$limit" ]; then
  head -c "$limit" "$work/comment.md" > "$out"
  printf '\n\n... (cut at %s characters; run the commands locally for the rest)\n' "$limit" >> "$out"
else
  cp "$work/comment.md" "$out"
fi
exit "$status"
