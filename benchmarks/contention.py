"""Training speed when another training process shares the machine, under OpenMP wait policies.

    .venv/bin/python -m benchmarks.contention                 # about 5 minutes on 2 cores
    .venv/bin/python -m benchmarks.contention --variants default,GOMP_SPINCOUNT=100000

torch's CPU wheels run their intra-op threads on GNU OpenMP (libgomp), whose threads spin-wait at
every barrier (up to GOMP_SPINCOUNT=300,000 iterations when OMP_WAIT_POLICY is unset). With one
core per thread that is fastest; with a second busy process on the same cores (a background study,
`mnistlab plan` calibrating while a study trains, the test suite) a spinning thread holds a core the
thread it waits for needs, and every small parallel region costs a scheduler time slice.

For each variant (environment settings given to *both* processes, read when libgomp loads) this
times training steps of two shapes, alone and beside a neighbour process that trains the same MLP
in a loop under ``nice -n 19`` in a session of its own, and counts the neighbour's steps per second:
what the machine gets done in all. The variant ``background`` leaves the measured process at the
defaults (the user's other work) and starts the neighbour as ``mnistlab run --background`` starts
its training: nice 19, its autogroup's nice 19, ``OMP_WAIT_POLICY=PASSIVE``. Every number comes
from fresh processes of this one run, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

MEASURE = r'''
import sys, time
from mnistlab.spec import load_study, expand
from mnistlab.engine import cost
study, label, steps, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
specs = [s for s in expand(load_study(study)) if s.label.startswith(label)][:1]
if repeats == 0:  # the neighbour: train until killed, one line per timed block of steps
    while True:
        cost.calibrate(specs, steps=steps)  # two epochs of `steps` steps
        print(2 * steps, time.time(), flush=True)
print(min(cost.calibrate(specs, steps=steps) for _ in range(repeats)))
'''

SHAPES = {  # name: (study, model label prefix, timed steps)
    "mlp (seed 000 drop 5)": ("studies/seed000_mlp_depth_bn_dropout.toml", "drop 5", 20),
    "cnn (seed 001)": ("studies/seed001_cnn_optimizers.toml", "", 4),
}


BACKGROUND = "background"
LOWEST = ["sh", "-c", 'echo 19 > /proc/self/autogroup 2>/dev/null; exec nice -n 19 "$@"', "sh"]


def environment(variant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if variant not in ("default", BACKGROUND):
        for setting in variant.split("+"):
            key, value = setting.split("=")
            env[key] = value
    return env


def step_seconds(variant: str, shape: str, repeats: int = 2) -> float:
    study, label, steps = SHAPES[shape]
    out = subprocess.run([sys.executable, "-c", MEASURE, study, label, str(steps), str(repeats)],
                         env=environment(variant), capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def beside_neighbour(variant: str, shape: str) -> tuple[float, float]:
    """This shape's seconds per step with a nice'd neighbour training, and the neighbour's steps/s."""
    study, label, steps = SHAPES["mlp (seed 000 drop 5)"]
    command = [sys.executable, "-c", MEASURE, study, label, str(steps), "0"]
    if variant == BACKGROUND:  # as `mnistlab run --background` (mnistlab.processes)
        command, env = LOWEST + command, environment("OMP_WAIT_POLICY=PASSIVE")
    else:
        command, env = ["nice", "-n", "19"] + command, environment(variant)
    neighbour = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True,
                                 start_new_session=True)  # as from another terminal or `nohup setsid`
    try:
        time.sleep(4)  # past its start-up
        start = time.time()
        seconds = step_seconds(variant, shape)
        end = time.time()
    finally:
        neighbour.kill()
        lines = neighbour.communicate()[0].split("\n")
    blocks = [line.split() for line in lines if line.strip()]
    done = sum(float(steps) for steps, at in blocks if start <= float(at) <= end)
    return seconds, done / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default,GOMP_SPINCOUNT=100000,GOMP_SPINCOUNT=10000,OMP_WAIT_POLICY=PASSIVE,"
                        + BACKGROUND)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; seconds per training step (best of 2), and the nice'd neighbour's MLP steps/s")
    print("| variant | shape | alone | beside a neighbour | slowdown | neighbour steps/s |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        for shape in SHAPES:
            alone = step_seconds(variant, shape)
            loaded, neighbour = beside_neighbour(variant, shape)
            print(f"| {variant} | {shape} | {alone:.4f} | {loaded:.4f} | {loaded / alone:.1f}x | {neighbour:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
