#!/usr/bin/env bash
# Writes a manifest and the installer into the GitLab CI template's two
# heredocs (the template must carry both: a job sees only the YAML it was
# included from). Usage:
#
#   bash scripts/stamp-gitlab-template.sh TEMPLATE MANIFEST INSTALLER [OUT]
#
# The release workflow runs it with the release's manifest; after a change
# to scripts/install.sh or dist/manifest.json run
#   bash scripts/stamp-gitlab-template.sh templates/gitlab/idempotent-request.yml dist/manifest.json scripts/install.sh
# (tests/gitlab_template.rs fails until the copies match). OUT defaults to
# TEMPLATE, rewritten in place.
set -CeEuo pipefail

template="${1:?usage: stamp-gitlab-template.sh TEMPLATE MANIFEST INSTALLER [OUT]}"
manifest="${2:?usage: stamp-gitlab-template.sh TEMPLATE MANIFEST INSTALLER [OUT]}"
installer="${3:?usage: stamp-gitlab-template.sh TEMPLATE MANIFEST INSTALLER [OUT]}"
out="${4:-${template}}"
for file in "${template}" "${manifest}" "${installer}"; do
  [[ -f "${file}" ]] || { echo "error: ${file} is not a file" >&2; exit 2; }
done

stamped=$(
  awk -v manifest="${manifest}" -v installer="${installer}" '
    function copy(file,    line) {
      while ((getline line < file) > 0) {
        if (line == "") print ""; else print indent line
      }
      close(file)
    }
    skipping != "" {
      if ($0 ~ "^ *" skipping "$") { skipping = ""; print } 
      next
    }
    {
      print
      if (match($0, /<<.IDEMPOTENT_REQUEST_(MANIFEST|INSTALLER).$/)) {
        indent = $0; sub(/[^ ].*$/, "", indent)
        tag = substr($0, RSTART + 3, RLENGTH - 4)
        copy(tag == "IDEMPOTENT_REQUEST_MANIFEST" ? manifest : installer)
        skipping = tag
      }
    }
  ' "${template}"
)
printf '%s\n' "${stamped}" >|"${out}"
