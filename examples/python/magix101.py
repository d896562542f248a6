"""Magix 101 in Python: the reference workflow, step by step (examples/magix101.cpp in C++).

    python3 examples/python/magix101.py MODEL_DIR [D M] [STEPS]
    mpirun -np 2 python3 examples/python/magix101.py tests/fixtures/models/llama_gqa 2 1 3

Prints, on rank 0, the loss and gradient norm of each step, as the C++ example does: the same
numbers, and on any mesh the same up to float rounding.
"""
import sys

import magix


def main(argv):
    if len(argv) < 2:
        print("usage: magix101.py MODEL_DIR [D M] [STEPS]", file=sys.stderr)
        return 2
    model_dir = argv[1]
    d, m = (int(argv[2]), int(argv[3])) if len(argv) > 3 else (-1, 1)
    steps = int(argv[4]) if len(argv) > 4 else 3

    # 1. The devices in a named grid: data parallel x model (tensor) parallel.
    mesh = magix.create_device_mesh((d, m), names=("data", "model"))

    # 2. The model, each rank holding its shards as the family's rules place them.
    model = magix.load_model_hub(model_dir, mesh=mesh, partition_rules=None)

    # 3. Optimizer state sharded like the parameters.
    opt = magix.initialize_opt_state(model, weight_decay=0.01)

    # 4. Train steps over the mesh.
    rows, length = 4, 16
    for step in range(steps):
        # This data rank's rows of a global batch of random tokens (a fresh one each step).
        batch = magix.random_batch(model.vocab_size, rows, length, 12345 + step, mesh)
        r = magix.train_step(model, opt, batch, lr=1e-2)
        if mesh.world_rank == 0:
            print(f"step {step} loss {r['loss']:.9g} grad_norm {r['grad_norm']:.9g} "
                  f"tokens {r['tokens']} mesh {mesh.shape[0]}x{mesh.shape[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
