"""Read and write CIFAR-10 in its two published layouts (used by the demo, train.py and the tests).

binary version:  data_batch_1.bin .. data_batch_5.bin, test_batch.bin;
                 each record = 1 label byte + 3072 pixel bytes (R plane, G plane, B plane, row-major).
python version:  cifar-10-batches-py/data_batch_1 .. 5, test_batch, batches.meta: pickled dicts with
                 b'data' (uint8 [N, 3072]), b'labels' (list of int), b'batch_label', b'filenames'.
"""
import os
import pickle

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]


def split_files(split):
    return TRAIN_FILES if split == "train" else TEST_FILES


def random_images(n, seed=0):
    """n uniformly random uint8 CIFAR-shaped images [n, 3, 32, 32] and labels [n] (uint8), seeded:
    the benchmarks' synthetic data."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def write_binary(out_dir, split, images, labels):
    """images uint8 [N, 3, 32, 32], labels [N]; the N records are spread evenly over the split's files."""
    os.makedirs(out_dir, exist_ok=True)
    files = split_files(split)
    for name, idx in zip(files, np.array_split(np.arange(len(labels)), len(files))):
        rec = np.empty((len(idx), 3073), dtype=np.uint8)
        rec[:, 0] = labels[idx]
        rec[:, 1:] = images[idx].reshape(len(idx), 3072)
        with open(os.path.join(out_dir, name + ".bin"), "wb") as f:
            f.write(rec.tobytes())


def write_python(out_dir, split, images, labels):
    """Same layout as the pickles torchvision downloads (protocol 2, bytes keys)."""
    os.makedirs(out_dir, exist_ok=True)
    files = split_files(split)
    for name, idx in zip(files, np.array_split(np.arange(len(labels)), len(files))):
        d = {
            b"batch_label": f"{name} of synthetic CIFAR-10".encode(),
            b"labels": [int(v) for v in labels[idx]],
            b"data": np.ascontiguousarray(images[idx].reshape(len(idx), 3072)),
            b"filenames": [f"img_{i}.png".encode() for i in idx],
        }
        with open(os.path.join(out_dir, name), "wb") as f:
            pickle.dump(d, f, protocol=2)
    with open(os.path.join(out_dir, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072,
                     b"num_cases_per_batch": 10000}, f, protocol=2)


def read_binary(data_dir, split):
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) from the binary version."""
    recs = []
    for name in split_files(split):
        raw = np.fromfile(os.path.join(data_dir, name + ".bin"), dtype=np.uint8)
        if raw.size % 3073:
            raise ValueError(f"{name}.bin: {raw.size} bytes is not a whole number of 3073-byte records")
        recs.append(raw.reshape(-1, 3073))
    rec = np.concatenate(recs)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def find_binary_dir(root):
    """CIFAR-10 binary dir under root (the tarball unpacks to cifar-10-batches-bin/)."""
    for d in (root, os.path.join(root, "cifar-10-batches-bin")):
        if os.path.exists(os.path.join(d, "data_batch_1.bin")):
            return d
    raise FileNotFoundError(f"{root}: no data_batch_1.bin (CIFAR-10 binary version) here")


# Mean/std of the Li et al. experiments (over 255), the losscape default for CIFAR.
MEAN = np.array([125.3, 123.0, 113.9], dtype=np.float32) / 255.0
STD = np.array([63.0, 62.1, 66.7], dtype=np.float32) / 255.0


def normalize(images_u8):
    """uint8 NCHW -> float32 normalized exactly as losscape does for CIFAR."""
    x = images_u8.astype(np.float32) / 255.0
    return (x - MEAN[None, :, None, None]) / STD[None, :, None, None]
