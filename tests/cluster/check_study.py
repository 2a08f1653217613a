"""Wait for the jobs of one ``bsym submit --submit``; check what SLURM and bsym-app did (make test-cluster).

Checked, from ``scontrol`` (kept ``MinJobAge`` seconds after the end), the job logs and ``OUTPUT_DIR``:

1. the array has one task per line of ``participants.txt``, ids 0..N-1, each with the CPUs and memory asked;
2. task ``i``'s log says it ran participant line ``i + 1`` on this node;
3. a task that COMPLETED wrote ``sub-<label>/log/<uuid>/config.toml`` with its own label, ``nprocs`` equal
   to the CPUs asked for, its own work directory, and ``sub-<label>/**/model/*_desc-bsym_features.tsv``;
   a task that FAILED has the bsym-app error in its log (not a shell or scheduler failure);
4. the group job obeys ``afterok``: if every task COMPLETED it ran after the last one ended, COMPLETED and
   wrote ``group/desc-bsym_features.tsv`` with one row per participant; otherwise it never started
   (CANCELLED by ``kill_invalid_depend``, or pending with DependencyNeverSatisfied, then cancelled here).

``--expect success`` also requires every task to complete (the default ``--expect any`` accepts failed
participants while the pipeline is incomplete, and says so). Exit 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
from datetime import datetime
from pathlib import Path

FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def scontrol_jobs(job_id: str) -> list[dict[str, str]]:
    """``scontrol -o show job ID`` as one dict per job (array tasks are separate jobs)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True)
    jobs = []
    for line in out.stdout.splitlines():
        fields = {}
        for token in line.split(" "):
            key, eq, value = token.partition("=")
            if eq and key not in fields:
                fields[key] = value
        jobs.append(fields)
    return jobs


def wait_for(job_ids: list[str], timeout_s: float) -> None:
    """Return when no job of ``job_ids`` is pending or running (a never-satisfiable one counts as done)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [job for job_id in job_ids for job in scontrol_jobs(job_id)]
        active = [
            j
            for j in jobs
            if j["JobState"] not in FINISHED
            and not (j["JobState"] == "PENDING" and j.get("Reason") == "DependencyNeverSatisfied")
        ]
        if not active:
            return
        time.sleep(2)
    raise SystemExit(f"FAIL: jobs {job_ids} still active after {timeout_s:.0f} s; see `squeue` and the logs.")


def _time(value: str) -> datetime | None:
    return None if value in ("Unknown", "None", "") else datetime.fromisoformat(value)


class Checks:
    """Collects check results; prints one line per check."""

    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        self.failed += not ok
        return ok


def check(script_dir: Path, output_dir: Path, work_dir: Path, *, cpus: int, mem: str, expect: str) -> int:
    """Run every check; return the number that failed."""
    check = Checks()
    jobs = json.loads((script_dir / "jobs.json").read_text())
    labels = (script_dir / "participants.txt").read_text().split()
    tasks = sorted(
        (j for j in scontrol_jobs(jobs["participant"]) if "ArrayTaskId" in j), key=lambda j: int(j["ArrayTaskId"])
    )
    check(
        [int(t["ArrayTaskId"]) for t in tasks] == list(range(len(labels))),
        f"array {jobs['participant']} has tasks 0..{len(labels) - 1} for {len(labels)} participants",
    )
    completed = []
    for task in tasks:
        i = int(task["ArrayTaskId"])
        label = labels[i]
        tres = dict(item.split("=") for item in task.get("TRES", "").split(",") if "=" in item)
        check(
            tres.get("cpu") == str(cpus) and tres.get("mem") == mem,
            f"task {i}: TRES cpu={tres.get('cpu')} mem={tres.get('mem')} (asked {cpus}, {mem})",
        )
        log = script_dir / f"participant-{jobs['participant']}_{i}.out"
        text = log.read_text() if log.exists() else ""
        check(f"array task {i} -> sub-{label} on" in text, f"task {i}: log {log.name} names sub-{label}")
        state, code = task["JobState"], task["ExitCode"]
        print(f"     task {i} (sub-{label}): {state}, exit {code}")
        if state == "COMPLETED":
            completed.append(task)
            configs = sorted((output_dir / f"sub-{label}" / "log").glob("*/config.toml"))
            if check(bool(configs), f"task {i}: {output_dir.name}/sub-{label}/log/*/config.toml written"):
                config = tomllib.loads(configs[-1].read_text())
                check(
                    config["execution"]["participant_label"] == [label]
                    and config["resources"]["nprocs"] == cpus
                    and Path(config["execution"]["work_dir"]) == work_dir / f"sub-{label}",
                    f"task {i}: config has participant {label}, nprocs {cpus}, work dir sub-{label}",
                )
            features = list((output_dir / f"sub-{label}").glob("**/model/*_desc-bsym_features.tsv"))
            check(bool(features), f"task {i}: sub-{label}/**/model/*_desc-bsym_features.tsv written")
        else:
            check("bsym-app" in text, f"task {i}: failed inside bsym-app (its error is in {log.name})")
    all_ok = len(completed) == len(labels)
    if expect == "success":
        check(all_ok, f"every participant completed ({len(completed)}/{len(labels)})")
    elif not all_ok:
        print(
            f"NOTE {len(labels) - len(completed)} participant(s) failed inside bsym-app; accepted with "
            "--expect any (use --expect success once the whole pipeline is in)"
        )
    if "group" not in jobs:
        return check.failed
    (group,) = scontrol_jobs(jobs["group"])
    print(
        f"     group job {jobs['group']}: {group['JobState']} ({group.get('Reason')}), "
        f"dependency {group.get('Dependency')}"
    )
    if all_ok:
        last_end = max(_time(t["EndTime"]) for t in tasks)
        start = _time(group["StartTime"])
        check(
            group["JobState"] == "COMPLETED" and start is not None and start >= last_end,
            f"group job completed and started ({start}) after the last task ended ({last_end})",
        )
        table = output_dir / "group" / "desc-bsym_features.tsv"
        rows = table.read_text().splitlines()[1:] if table.exists() else []
        check(
            len(rows) == len(labels),
            f"group/desc-bsym_features.tsv has {len(rows)} rows for {len(labels)} participants",
        )
    else:
        never_ran = group["JobState"] == "CANCELLED" or group.get("Reason") == "DependencyNeverSatisfied"
        started = _time(group["StartTime"]) is not None and group["StartTime"] != group["EndTime"]
        check(never_ran and not started, "group job never started because a task failed (afterok)")
        check(not (output_dir / "group").exists(), "no group outputs were written")
        if group["JobState"] == "PENDING":
            subprocess.run(["scancel", jobs["group"]], check=False)
    return check.failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--script-dir", type=Path, help="default OUTPUT_DIR/logs/slurm")
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--mem", required=True, help="as SLURM reports it in TRES, e.g. 4G")
    parser.add_argument("--expect", choices=["any", "success"], default="any")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the jobs")
    args = parser.parse_args()
    script_dir = args.script_dir or args.output_dir / "logs" / "slurm"
    jobs = json.loads((script_dir / "jobs.json").read_text())
    start = time.monotonic()
    wait_for(list(jobs.values()), args.timeout)
    names = ", ".join(f"{kind} {job_id}" for kind, job_id in jobs.items())
    print(f"jobs {names} finished after {time.monotonic() - start:.0f} s")
    failed = check(
        script_dir,
        args.output_dir.absolute(),
        args.work_dir.absolute(),
        cpus=args.cpus,
        mem=args.mem,
        expect=args.expect,
    )
    print(f"{'FAILED' if failed else 'PASSED'}: {failed} check(s) failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
